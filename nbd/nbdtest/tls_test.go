package nbdtest_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
)

// TestNetrootTLS runs the whole suite over TLS against netroot's server in FORCEDTLS mode with
// client certificates verified.
func TestNetrootTLS(t *testing.T) {
	p := nbdtest.NewPKI(t)
	set, err := nbd.NewExportSet(
		&nbd.Export{Name: "rw", Device: backend.NewMemory(imageSize), Writable: true},
		&nbd.Export{Name: "ro", Device: backend.NewMemoryFrom(make([]byte, imageSize), true)},
	)
	require.NoError(t, err)
	addr := serve(t, &nbd.Server{
		Exports:   set,
		TLSMode:   nbd.TLSRequired,
		TLSConfig: p.ServerConfig(true),
	})
	nbdtest.Run(t, addr, &nbdtest.Options{Export: "rw", Size: imageSize, ReadOnlyExport: "ro",
		TLS: p.ClientConfig(), TLSRequired: true})
}

// TestNBDKitTLS runs the suite over TLS against nbdkit --tls=require.
func TestNBDKitTLS(t *testing.T) {
	p := nbdtest.NewPKI(t)
	img := image(t, t.TempDir())
	addr := startNBDKit(t, img, false, "--tls=require", "--tls-certificates="+p.Dir, "--tls-verify-peer")
	nbdtest.Run(t, addr, &nbdtest.Options{Export: "", Size: imageSize,
		TLS: p.ClientConfig(), TLSRequired: true,
		Expect: nbdtest.Expect{UnknownExport: nbd.RepAck, WritePastEndNoReplyTLS: true}})
}

// TestNBDServerTLS runs the suite over TLS against nbd-server with force_tls.
func TestNBDServerTLS(t *testing.T) {
	p := nbdtest.NewPKI(t)
	addr := startNBDServer(t, fmt.Sprintf("certfile = %s\nkeyfile = %s\ncacertfile = %s\nforce_tls = true\n",
		p.Path("server-cert.pem"), p.Path("server-key.pem"), p.Path("ca-cert.pem")))
	nbdtest.Run(t, addr, &nbdtest.Options{Export: "rw", Size: imageSize, ReadOnlyExport: "ro",
		TLS: p.ClientConfig(), TLSRequired: true, Expect: nbdServerTLSExpect})
}

// nbdServerTLSExpect adds what differs over TLS.
var nbdServerTLSExpect = func() nbdtest.Expect {
	e := nbdServerExpect
	e.StartTLSWithDataNoReply = true
	return e
}()
