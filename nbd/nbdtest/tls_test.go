package nbdtest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
)

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a client certificate,
// written to dir in the file names nbdkit's --tls-certificates and libnbd expect.
type pki struct {
	dir    string
	server tls.Certificate
	client tls.Certificate
	pool   *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), pool: x509.NewCertPool()}
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	write := func(name, typ string, der []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(p.dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nbdtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	p.pool.AddCert(ca)
	write("ca-cert.pem", "CERTIFICATE", caDER)
	issue := func(serial int64, prefix string, usage x509.ExtKeyUsage) tls.Certificate {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: prefix},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		require.NoError(t, err)
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		write(prefix+"-cert.pem", "CERTIFICATE", der)
		write(prefix+"-key.pem", "PRIVATE KEY", kder)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	p.server = issue(2, "server", x509.ExtKeyUsageServerAuth)
	p.client = issue(3, "client", x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// clientConfig is the suite's side: it verifies the server and shows its own certificate.
func (p *pki) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS12}
}

// TestNetrootTLS runs the whole suite over TLS against netroot's server in FORCEDTLS mode with
// client certificates verified.
func TestNetrootTLS(t *testing.T) {
	p := newPKI(t)
	set, err := nbd.NewExportSet(
		&nbd.Export{Name: "rw", Device: backend.NewMemory(imageSize), Writable: true},
		&nbd.Export{Name: "ro", Device: backend.NewMemoryFrom(make([]byte, imageSize), true)},
	)
	require.NoError(t, err)
	addr := serve(t, &nbd.Server{
		Exports: set,
		TLSMode: nbd.TLSRequired,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	})
	nbdtest.Run(t, addr, &nbdtest.Options{Export: "rw", Size: imageSize, ReadOnlyExport: "ro",
		TLS: p.clientConfig(), TLSRequired: true})
}

// TestNBDKitTLS runs the suite over TLS against nbdkit --tls=require.
func TestNBDKitTLS(t *testing.T) {
	p := newPKI(t)
	img := image(t, t.TempDir())
	addr := startNBDKit(t, img, false, "--tls=require", "--tls-certificates="+p.dir, "--tls-verify-peer")
	nbdtest.Run(t, addr, &nbdtest.Options{Export: "", Size: imageSize,
		TLS: p.clientConfig(), TLSRequired: true,
		Expect: nbdtest.Expect{UnknownExport: nbd.RepAck, WritePastEndNoReplyTLS: true}})
}

// TestNBDServerTLS runs the suite over TLS against nbd-server with force_tls.
func TestNBDServerTLS(t *testing.T) {
	p := newPKI(t)
	addr := startNBDServer(t, fmt.Sprintf("certfile = %s\nkeyfile = %s\ncacertfile = %s\nforce_tls = true\n",
		p.path("server-cert.pem"), p.path("server-key.pem"), p.path("ca-cert.pem")))
	nbdtest.Run(t, addr, &nbdtest.Options{Export: "rw", Size: imageSize, ReadOnlyExport: "ro",
		TLS: p.clientConfig(), TLSRequired: true, Expect: nbdServerTLSExpect})
}

// nbdServerTLSExpect adds what differs over TLS.
var nbdServerTLSExpect = func() nbdtest.Expect {
	e := nbdServerExpect
	e.StartTLSWithDataNoReply = true
	return e
}()
