package nbd_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTLS(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	serverCert, clientCert := pki.Server, pki.Client
	strangerCert := nbdtest.NewPKI(t).Client // signed by another CA
	exports := func() *nbd.ExportSet {
		return coreExports(t,
			&nbd.Export{Name: "open", Device: patterned(4096)},
			&nbd.Export{Name: "secret", Device: patterned(8192), TLS: nbd.TLSRequired})
	}
	clientTLS := func(cert *tls.Certificate) *tls.Config {
		c := &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		return c
	}
	tests := []struct {
		name      string
		mode      nbd.TLSMode
		verify    bool
		clientTLS *tls.Config
		export    string
		wantErr   nbd.ReplyType // 0: success; -1 (as 1<<31-1): dial fails
		dialFails bool
	}{
		{"optional plain open", nbd.TLSOptional, false, nil, "open", 0, false},
		{"optional plain secret", nbd.TLSOptional, false, nil, "secret", nbd.RepErrTLSReqd, false},
		{"optional TLS secret", nbd.TLSOptional, false, clientTLS(nil), "secret", 0, false},
		{"default mode is optional", nbd.TLSDefault, false, clientTLS(nil), "open", 0, false},
		{"required plain", nbd.TLSRequired, false, nil, "open", nbd.RepErrTLSReqd, false},
		{"required TLS", nbd.TLSRequired, false, clientTLS(nil), "open", 0, false},
		{"off refuses STARTTLS", nbd.TLSOff, false, clientTLS(nil), "open", 0, true},
		{"client cert verified", nbd.TLSRequired, true, clientTLS(&clientCert), "secret", 0, false},
		{"client cert missing", nbd.TLSRequired, true, clientTLS(nil), "secret", 0, true},
		{"client cert from other CA", nbd.TLSRequired, true, clientTLS(&strangerCert), "secret", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{Certificates: []tls.Certificate{serverCert}}
			if tt.verify {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
				cfg.ClientCAs = pki.Pool
			}
			addr := coreServe(t, &nbd.Server{Exports: exports(), TLSConfig: cfg, TLSMode: tt.mode})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := nbd.Dial(ctx, "tcp", addr, &nbd.DialOptions{TLSConfig: tt.clientTLS})
			if err == nil && tt.dialFails && tt.verify {
				// With TLS 1.3 the server checks the client certificate after the client
				// finished its side; the failure shows on the first exchange.
				_, err = c.List(ctx)
			}
			if tt.dialFails {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tt.clientTLS != nil, c.TLS())
			_, err = c.Go(ctx, tt.export)
			if tt.wantErr != 0 {
				var oe *nbd.OptionError
				require.ErrorAs(t, err, &oe)
				assert.Equal(t, tt.wantErr, oe.Reply)
				return
			}
			require.NoError(t, err)
			buf := make([]byte, 4096)
			_, err = c.ReadAt(buf, 0)
			require.NoError(t, err)
			assert.Equal(t, patterned(4096).Bytes(), buf)
			ext, err := c.BlockStatus(ctx, 0, 4096, 0)
			require.NoError(t, err)
			assert.Equal(t, []nbd.Extent{{Offset: 0, Length: 4096}}, ext)
		})
	}
}

func TestTLSListHidesSecretExports(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	srv := &nbd.Server{
		Exports: coreExports(t, &nbd.Export{Name: "open", Device: backend.NewMemory(512)},
			&nbd.Export{Name: "secret", Device: backend.NewMemory(512), TLS: nbd.TLSRequired}),
		TLSConfig: pki.ServerConfig(false),
	}
	addr := coreServe(t, srv)
	ctx := context.Background()
	for _, withTLS := range []bool{false, true} {
		var cfg *tls.Config
		want := []string{"open"}
		if withTLS {
			cfg = &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"}
			want = []string{"open", "secret"}
		}
		c, err := nbd.Dial(ctx, "tcp", addr, &nbd.DialOptions{TLSConfig: cfg})
		require.NoError(t, err)
		list, err := c.List(ctx)
		require.NoError(t, err)
		var names []string
		for _, e := range list {
			names = append(names, e.Name)
		}
		assert.Equal(t, want, names)
		require.NoError(t, c.Close())
	}
}
