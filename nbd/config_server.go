//go:build linux

package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/netroot/netroot/backend"
)

// This file turns a parsed nbd-server configuration into a Server, so that a program that reads
// an operator's /etc/nbd-server/config serves what nbd-server would.

// OpenConfigExport opens the file of an export section the way nbd-server uses it: read-only
// for readonly and copyonwrite exports (copy-on-write never modifies the file), with O_SYNC for
// sync, and limited to filesize bytes when that is set.
func OpenConfigExport(x *ConfigExport) (backend.Device, error) {
	dev, err := backend.OpenFile(x.Path, &backend.FileOptions{
		ReadOnly: x.ReadOnly || x.CopyOnWrite, Sync: x.Sync, Length: x.Size,
	})
	if err != nil {
		return nil, fmt.Errorf("nbd: config %s:%d: export %q: %w", x.File, x.Line, x.Name, err)
	}
	return dev, nil
}

// NewServer returns a Server with the exports and settings of c: each export's file opened by
// open (nil means OpenConfigExport), copyonwrite exports with a private overlay per connection
// (a temporary file in cowdir, or next to the image, as nbd-server keeps them), readonly,
// maxconnections, timeout, authfile, force_tls and tlsonly; and from [generic] allowlist, the TLS
// certificate files and force_tls.
//
// The caller sets Logger and the like, serves the Server on the listeners of c.Generic.Addrs(),
// and calls closeDevices after Shutdown. On error, whatever was opened is closed already.
//
// A missing authfile is an error, not an open door: nbd-server lets every client in when the
// file it names is absent, which hides a typo.
func (c *ConfigFile) NewServer(open func(*ConfigExport) (backend.Device, error)) (srv *Server, closeDevices func() error, err error) {
	if open == nil {
		open = OpenConfigExport
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

	srv = &Server{DisableList: !c.Generic.AllowList}
	g := &c.Generic
	if g.CertFile != "" || g.KeyFile != "" {
		if srv.TLSConfig, err = loadTLSFiles(g.CertFile, g.KeyFile, g.CACertFile); err != nil {
			return nil, nil, err
		}
		srv.TLSMode = TLSOptional
	}
	if g.ForceTLS {
		if srv.TLSConfig == nil {
			return nil, nil, errors.New("nbd: config: force_tls needs certfile and keyfile in [generic]")
		}
		srv.TLSMode = TLSRequired
	}

	set := &ExportSet{}
	for i := range c.Exports {
		x := &c.Exports[i]
		dev, err := open(x)
		if err != nil {
			return nil, nil, err
		}
		devices = append(devices, dev)
		ex := &Export{Name: x.Name, Device: dev, Writable: !x.ReadOnly, MaxConnections: x.MaxConnections,
			IdleTimeout: x.IdleTimeout}
		if x.CopyOnWrite {
			ex.CopyOnWrite = CopyOnWritePerConnection
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
				return nil, nil, fmt.Errorf("nbd: config %s:%d: export %q: force_tls needs certfile and keyfile in [generic]", x.File, x.Line, x.Name)
			}
			ex.TLS = TLSRequired
		}
		if x.AuthFile != "" {
			if ex.Allow, err = ReadAuthFile(x.AuthFile); err != nil {
				return nil, nil, fmt.Errorf("nbd: config %s:%d: export %q: %w", x.File, x.Line, x.Name, err)
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
		return nil, fmt.Errorf("nbd: config: certfile %q, keyfile %q: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("nbd: config: cacertfile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nbd: config: cacertfile %q: no PEM certificates", caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
