package bootserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHTTPAddr is the address HTTPServer listens on when Addr is empty.
const DefaultHTTPAddr = ":80"

// HTTPServer serves the boot files of a TFTP root read-only over HTTP, for iPXE, GRUB's http
// module and UEFI HTTP boot: GET and HEAD only, Range requests (http.ServeContent), no
// folder listings, no hidden files (a temporary file of an atomic write is never served), and
// every path resolved inside the root through os.Root, so neither ".." nor a symbolic link
// leads out of it. It is a Service for Server.Services.
type HTTPServer struct {
	// Root is the folder to serve: the TFTP root. Required.
	Root string
	// Addr is the TCP address to listen on; "" means DefaultHTTPAddr. Ignored when Listener
	// is set.
	Addr string
	// Listener, when set, is served instead of listening on Addr.
	Listener net.Listener
	// Logger receives one line per request; nil means silent.
	Logger *slog.Logger
	// OnRequest, when set, is called after each request (for events and status pages). It
	// runs on the request's goroutine.
	OnRequest func(HTTPRequestInfo)

	// emit, set by a Server that runs this one among its Services, reports each request as
	// an HTTPRequest event (status page timelines).
	emit func(Event)

	mu     sync.Mutex
	srv    *http.Server
	closed bool // Shutdown or Close came before Serve

	requests, notFound, failed, bytes atomic.Uint64
}

// HTTPRequestInfo is what happened in one request.
type HTTPRequestInfo struct {
	Remote   string // client address (host:port)
	Method   string
	Path     string // path in the root, without the leading '/'
	Status   int
	Bytes    int64 // body bytes sent
	Duration time.Duration
}

// HTTPStats is a snapshot of an HTTPServer's counters.
type HTTPStats struct {
	Requests  uint64 // requests answered
	NotFound  uint64 // answered 404
	Failed    uint64 // answered with another error status
	BytesSent uint64 // file bytes sent (bodies of successful answers)
}

// Stats returns the server's counters.
func (h *HTTPServer) Stats() HTTPStats {
	return HTTPStats{Requests: h.requests.Load(), NotFound: h.notFound.Load(), Failed: h.failed.Load(), BytesSent: h.bytes.Load()}
}

// Name returns "http".
func (h *HTTPServer) Name() string { return "http" }

// Handler returns the handler serving root (an open os.Root of the TFTP root).
func (h *HTTPServer) Handler(root *os.Root) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		h.serveFile(cw, r, root, name)
		h.requests.Add(1)
		switch {
		case cw.status < 400:
			h.bytes.Add(uint64(cw.n))
		case cw.status == http.StatusNotFound:
			h.notFound.Add(1)
		case cw.status >= 400:
			h.failed.Add(1)
		}
		info := HTTPRequestInfo{Remote: r.RemoteAddr, Method: r.Method, Path: name, Status: cw.status, Bytes: cw.n, Duration: time.Since(start)}
		if h.Logger != nil {
			lvl := slog.LevelInfo
			if cw.status >= 400 {
				lvl = slog.LevelWarn
			}
			h.Logger.Log(r.Context(), lvl, "http: request", "client", info.Remote, "method", info.Method, "file", info.Path,
				"status", info.Status, "bytes", info.Bytes, "range", r.Header.Get("Range"), "duration", info.Duration)
		}
		if h.OnRequest != nil {
			h.OnRequest(info)
		}
		if h.emit != nil {
			h.emit(info.event())
		}
	})
}

// event returns the request as an HTTPRequest event: Client is the IP address without the
// port, as TFTPTransfer's, so the status page files it under the machine's MAC address.
func (i HTTPRequestInfo) event() Event {
	e := Event{Kind: HTTPRequest, Client: i.Remote, File: i.Path, Bytes: i.Bytes}
	if ap, err := netip.ParseAddrPort(i.Remote); err == nil {
		e.Client = ap.Addr().Unmap().String()
	}
	if i.Status >= 400 {
		e.Err = fmt.Errorf("http: %s %s: %d %s", i.Method, i.Path, i.Status, http.StatusText(i.Status))
	}
	return e
}

func (h *HTTPServer) serveFile(w http.ResponseWriter, r *http.Request, root *os.Root, name string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if name == "" || name == "." {
		http.NotFound(w, r)
		return
	}
	for _, el := range strings.Split(name, "/") {
		if strings.HasPrefix(el, ".") {
			http.NotFound(w, r)
			return
		}
	}
	f, err := root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "escapes") {
			http.NotFound(w, r)
			return
		}
		http.Error(w, "cannot open file", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// countingWriter records the status and the body bytes of a response.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// Serve opens Root and serves it until Shutdown or Close, then returns nil.
func (h *HTTPServer) Serve(ctx context.Context) error {
	root, err := os.OpenRoot(h.Root)
	if err != nil {
		return fmt.Errorf("bootserver: http root: %w", err)
	}
	defer root.Close()
	ln := h.Listener
	if ln == nil {
		addr := h.Addr
		if addr == "" {
			addr = DefaultHTTPAddr
		}
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("bootserver: http: listen on %q: %w", addr, err)
		}
	}
	srv := &http.Server{
		Handler:           h.Handler(root),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		ln.Close()
		return nil
	case h.srv != nil:
		h.mu.Unlock()
		ln.Close()
		return errors.New("bootserver: http: Serve called twice")
	}
	h.srv = srv
	h.mu.Unlock()
	if h.Logger != nil {
		h.Logger.Info("http: serving boot files", "addr", ln.Addr().String(), "root", h.Root)
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bootserver: http: %w", err)
	}
	return nil
}

// Shutdown stops accepting requests and waits for running ones, or until ctx ends.
func (h *HTTPServer) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	srv := h.srv
	h.closed = true
	h.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// Close stops the server now.
func (h *HTTPServer) Close() error {
	h.mu.Lock()
	srv := h.srv
	h.closed = true
	h.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}
