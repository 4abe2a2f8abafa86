//go:build !linux

package nbd

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// Elsewhere than on Linux replies are written from memory and payloads read into it.

func sendfileConn(io.Writer) syscall.RawConn { return nil }

func (m *msgWriter) sendFile(hdr []byte, f *os.File, off int64, n int) error { return errNoSendfile }

const spliceMin = 64 << 10

type spliceWriter struct{}

func (*spliceWriter) close() {}

func (c *conn) spliceFits(int) bool { return false }

func (c *conn) writeSpliced(r Request) error {
	return errors.New("nbd: splice is not available on this system")
}
