package nbd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCA is a throw-away certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "netroot test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert, key, pool}
}

// issue returns a leaf certificate for 127.0.0.1, usable by servers and clients.
func (ca *testCA) issue(t testing.TB, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func testTLSConfig(t testing.TB) *tls.Config {
	ca := newTestCA(t)
	return &tls.Config{Certificates: []tls.Certificate{ca.issue(t, 2)}}
}

func TestTLS(t *testing.T) {
	ca := newTestCA(t)
	serverCert := ca.issue(t, 2)
	clientCert := ca.issue(t, 3)
	otherCA := newTestCA(t)
	strangerCert := otherCA.issue(t, 4)
	exports := func() *nbd.ExportSet {
		return coreExports(t,
			&nbd.Export{Name: "open", Device: patterned(4096)},
			&nbd.Export{Name: "secret", Device: patterned(8192), TLS: nbd.TLSRequired})
	}
	clientTLS := func(cert *tls.Certificate) *tls.Config {
		c := &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"}
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
				cfg.ClientCAs = ca.pool
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
	ca := newTestCA(t)
	srv := &nbd.Server{
		Exports: coreExports(t, &nbd.Export{Name: "open", Device: backend.NewMemory(512)},
			&nbd.Export{Name: "secret", Device: backend.NewMemory(512), TLS: nbd.TLSRequired}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.issue(t, 2)}},
	}
	addr := coreServe(t, srv)
	ctx := context.Background()
	for _, withTLS := range []bool{false, true} {
		var cfg *tls.Config
		want := []string{"open"}
		if withTLS {
			cfg = &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"}
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
