package tftp

import (
	"context"
	"io"
	"net/netip"
	"time"
)

// A Handler answers one TFTP request through a ResponseWriter: with content for a read request
// (ResponseWriter.ServeContent), by accepting an upload for a write request
// (ResponseWriter.Receive), or with an error (ResponseWriter.Error). A handler that returns
// without doing any of these answers "file not found".
type Handler interface {
	ServeTFTP(w ResponseWriter, r *Request)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(w ResponseWriter, r *Request)

// ServeTFTP calls f(w, r).
func (f HandlerFunc) ServeTFTP(w ResponseWriter, r *Request) { f(w, r) }

var _ Handler = HandlerFunc(nil)

// ResponseWriter answers one request. Only the first of its methods called has an effect,
// except Error after a successful Receive.
type ResponseWriter interface {
	// ServeContent answers a read request with content, size bytes long (size < 0 means unknown:
	// the content ends at io.EOF and tsize is not offered). It negotiates the options, runs the
	// whole transfer on a new port and returns when it has ended, with nil when the client
	// acknowledged the last block. content is only read with ReadAt, so several transfers may
	// share it.
	ServeContent(content io.ReaderAt, size int64) error
	// Receive answers a write request: it negotiates, accepts the upload and writes it to dst in
	// order. It returns the number of bytes written and nil when the whole file arrived. The
	// last block is acknowledged only when the handler returns, so that it can commit the file
	// first, or call Error to tell the client that it could not. An error from dst aborts the
	// transfer; when it is (or wraps) an ErrorCode, that code is sent to the client, otherwise
	// ErrDiskFull.
	Receive(dst io.Writer) (int64, error)
	// Error answers with an error packet.
	Error(code ErrorCode, message string)
}

// Request is a read or write request as the server received it.
type Request struct {
	Op       Opcode // OpRRQ or OpWRQ
	Filename string // as sent by the client, unmodified
	Mode     string // ModeOctet or ModeNetascii
	// Options are the options the client sent, in its order.
	Options []Option
	// RemoteAddr is the client's address and port (its transfer ID).
	RemoteAddr netip.AddrPort
	// LocalAddr is the address the request was sent to (the listener's address, or on Linux
	// the request's own destination when the listener is bound to a wildcard address).
	LocalAddr netip.AddrPort
	// Size is the upload size the client announced with tsize on a write request, or -1.
	Size int64

	ctx context.Context
}

// Context is cancelled when the server closes or the transfer ends.
func (r *Request) Context() context.Context {
	if r.ctx == nil {
		return context.Background()
	}
	return r.ctx
}

// Option returns the value of the named option (case-insensitive) and whether the client sent it.
func (r *Request) Option(name string) (string, bool) { return findOption(r.Options, name) }

// TransferInfo describes a finished transfer, for Server.OnTransferDone and as what Client
// returns.
type TransferInfo struct {
	Op       Opcode // OpRRQ: content went to the client; OpWRQ: an upload
	Remote   netip.AddrPort
	Filename string
	Mode     string
	// BlockSize and WindowSize are the negotiated values (512 and 1 without options).
	BlockSize, WindowSize int
	// Size is the transfer size announced with tsize, or -1.
	Size int64
	// Bytes is the number of DATA payload bytes moved (the netascii form in netascii mode).
	Bytes       int64
	Retransmits int
	Start       time.Time
	Duration    time.Duration
	// Err is nil when the transfer completed.
	Err error
}
