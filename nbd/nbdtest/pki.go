package nbdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throw-away certificate authority with a server certificate for 127.0.0.1 and
// localhost and a client certificate, for TLS tests. NewPKI writes them to Dir under the names
// that libnbd's tls-certificates=DIR, nbdkit's --tls-certificates=DIR and nbd-server's
// certfile/keyfile/cacertfile settings can use: ca-cert.pem, server-cert.pem, server-key.pem,
// client-cert.pem and client-key.pem.
type PKI struct {
	Dir            string
	Server, Client tls.Certificate
	// Pool holds the CA certificate: RootCAs for clients, ClientCAs for servers.
	Pool *x509.CertPool
}

// NewPKI creates a PKI in a temporary directory of t.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("nbdtest: PKI: %v", err)
		}
	}
	p := &PKI{Dir: t.TempDir(), Pool: x509.NewCertPool()}
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		check(err)
		return k
	}
	write := func(name, typ string, der []byte) {
		check(os.WriteFile(p.Path(name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nbdtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	check(err)
	ca, err := x509.ParseCertificate(caDER)
	check(err)
	p.Pool.AddCert(ca)
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
		check(err)
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		check(err)
		write(prefix+"-cert.pem", "CERTIFICATE", der)
		write(prefix+"-key.pem", "PRIVATE KEY", kder)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	p.Server = issue(2, "server", x509.ExtKeyUsageServerAuth)
	p.Client = issue(3, "client", x509.ExtKeyUsageClientAuth)
	return p
}

// Path returns the path of one of the PKI's files, such as "ca-cert.pem".
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// ClientConfig is a client's side: it verifies the server and shows the client certificate.
func (p *PKI) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.Pool, Certificates: []tls.Certificate{p.Client}, ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS12}
}

// ServerConfig is a server's side: it shows the server certificate and, with verifyClients,
// requires client certificates signed by the CA.
func (p *PKI) ServerConfig(verifyClients bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{p.Server}, MinVersion: tls.VersionTLS12}
	if verifyClients {
		c.ClientCAs, c.ClientAuth = p.Pool, tls.RequireAndVerifyClientCert
	}
	return c
}
