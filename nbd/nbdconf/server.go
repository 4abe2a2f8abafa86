package nbdconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
)

// This file turns a parsed nbd-server configuration into an nbd.Server, so that a program that reads
// an operator's /etc/nbd-server/config serves what nbd-server would.

// NewServer returns an nbd.Server with the exports and settings of c: each export's file opened by
// open (nil means OpenConfigExport, which exists on Linux only; elsewhere open must be given), copyonwrite exports with a private overlay per connection
// (a temporary file in cowdir, or next to the image, as nbd-server keeps them), readonly,
// maxconnections, timeout, authfile, force_tls and tlsonly; and from [generic] allowlist, the TLS
// certificate files and force_tls.
//
// The caller sets Logger and the like, serves the nbd.Server on the listeners of c.Generic.Addrs(),
// and calls closeDevices after Shutdown. On error, whatever was opened is closed already.
//
// A missing authfile is an error, not an open door: nbd-server lets every client in when the
// file it names is absent, which hides a typo.
func (c *ConfigFile) NewServer(open func(*ConfigExport) (backend.Device, error)) (srv *nbd.Server, closeDevices func() error, err error) {
	if open == nil {
		if defaultOpen == nil {
			return nil, nil, errors.New("nbdconf: NewServer: no default opener on this system; pass open")
		}
		open = defaultOpen
	}
	var devices []backend.Device
	closeAll := func() error {
		var errs []error
		for _, d := range devices {
			if cl, ok := d.(io.Closer); ok {
				errs = append(errs, cl.Close())
			}
		}
		devices = nil
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()

	srv = &nbd.Server{DisableList: !c.Generic.AllowList}
	g := &c.Generic
	if g.CertFile != "" || g.KeyFile != "" {
		if srv.TLSConfig, err = loadTLSFiles(g.CertFile, g.KeyFile, g.CACertFile); err != nil {
			return nil, nil, err
		}
		srv.TLSMode = nbd.TLSOptional
	}
	if g.ForceTLS {
		if srv.TLSConfig == nil {
			return nil, nil, errors.New("nbdconf: config: force_tls needs certfile and keyfile in [generic]")
		}
		srv.TLSMode = nbd.TLSRequired
	}

	set := &nbd.ExportSet{}
	for i := range c.Exports {
		x := &c.Exports[i]
		dev, err := open(x)
		if err != nil {
			return nil, nil, err
		}
		devices = append(devices, dev)
		ex := &nbd.Export{Name: x.Name, Device: dev, Writable: !x.ReadOnly, MaxConnections: x.MaxConnections,
			IdleTimeout: x.IdleTimeout}
		if x.CopyOnWrite {
			ex.CopyOnWrite = nbd.CopyOnWritePerConnection
			dir := x.CowDir
			if dir == "" {
				dir = filepath.Dir(x.Path)
			}
			ex.NewOverlay = func(base backend.Device) (backend.Device, error) {
				return backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{TempDir: dir})
			}
		}
		if x.ForceTLS {
			if srv.TLSConfig == nil {
				return nil, nil, fmt.Errorf("nbdconf: config %s:%d: export %q: force_tls needs certfile and keyfile in [generic]", x.File, x.Line, x.Name)
			}
			ex.TLS = nbd.TLSRequired
		}
		if x.AuthFile != "" {
			if ex.Allow, err = ReadAuthFile(x.AuthFile); err != nil {
				return nil, nil, fmt.Errorf("nbdconf: config %s:%d: export %q: %w", x.File, x.Line, x.Name, err)
			}
		}
		if err := set.Add(ex); err != nil {
			return nil, nil, err
		}
	}
	srv.Exports = set
	return srv, closeAll, nil
}

func loadTLSFiles(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" {
		certFile = keyFile
	}
	if keyFile == "" {
		keyFile = certFile
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("nbdconf: config: certfile %q, keyfile %q: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("nbdconf: config: cacertfile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nbdconf: config: cacertfile %q: no PEM certificates", caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
