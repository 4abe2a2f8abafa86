package bootserver

import (
	"context"
	"errors"
)

// Service is one more protocol server run in a Server's group, beside TFTP, NBD and AoE: a
// proxyDHCP server, an HTTP server for boot files and status. The group starts every service's
// Serve once the built-in servers listen and the first builds are staged, and stops them all
// together: Shutdown on graceful stop, Close when that times out or Run fails. A service that
// needs the server's state keeps the *Server it was built with and calls its methods
// (State, TFTPRoot) from Serve.
type Service interface {
	// Name names the service in logs and errors ("dhcp", "http").
	Name() string
	// Serve serves until Shutdown or Close is called, then returns nil (or an error that
	// wraps the protocol package's ErrServerClosed, which is treated as nil).
	Serve(ctx context.Context) error
	Shutdown(ctx context.Context) error
	Close() error
}

// ServiceFuncs adapts a protocol server with the usual Serve, Shutdown and Close methods to
// Service:
//
//	bootserver.ServiceFuncs{
//		ServiceName: "http",
//		ServeFunc:   func(context.Context) error { return hs.Serve(ln) },
//		ShutdownFunc: hs.Shutdown, CloseFunc: hs.Close, Closed: http.ErrServerClosed,
//	}
type ServiceFuncs struct {
	ServiceName  string
	ServeFunc    func(ctx context.Context) error
	ShutdownFunc func(ctx context.Context) error
	CloseFunc    func() error
	// Closed is what ServeFunc returns after ShutdownFunc or CloseFunc; it is reported as nil.
	Closed error
}

var _ Service = ServiceFuncs{}

func (f ServiceFuncs) Name() string { return f.ServiceName }

func (f ServiceFuncs) Serve(ctx context.Context) error {
	err := f.ServeFunc(ctx)
	if f.Closed != nil && errors.Is(err, f.Closed) {
		return nil
	}
	return err
}

func (f ServiceFuncs) Shutdown(ctx context.Context) error {
	if f.ShutdownFunc == nil {
		return f.Close()
	}
	return f.ShutdownFunc(ctx)
}

func (f ServiceFuncs) Close() error {
	if f.CloseFunc == nil {
		return nil
	}
	return f.CloseFunc()
}
