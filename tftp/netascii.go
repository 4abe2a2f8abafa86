package tftp

import (
	"io"
)

// netascii (RFC 1350, after RFC 764): a line ends in CR LF and a bare CR is sent as CR NUL. On
// this side a line ends in LF.

// netasciiReader encodes the bytes of r as netascii.
type netasciiReader struct {
	r       io.Reader
	pending byte // second byte of an expanded pair that did not fit in the last Read
	hasPend bool
	buf     []byte
	err     error
}

func newNetasciiReader(r io.Reader) *netasciiReader {
	return &netasciiReader{r: r, buf: make([]byte, netasciiBuf)}
}

func (n *netasciiReader) Read(p []byte) (int, error) {
	i := 0
	if n.hasPend && len(p) > 0 {
		p[0] = n.pending
		n.hasPend = false
		i = 1
	}
	for i < len(p) {
		if n.err != nil {
			if i > 0 {
				return i, nil
			}
			return 0, n.err
		}
		// Each input byte may become two, so read at most what fits when doubled, but at least one.
		want := (len(p) - i) / 2
		if want == 0 {
			want = 1
		}
		want = min(want, len(n.buf))
		m, err := n.r.Read(n.buf[:want])
		if err != nil {
			n.err = err
		}
		for _, c := range n.buf[:m] {
			var second byte
			switch c {
			case '\n':
				c, second = '\r', '\n'
			case '\r':
				second = 0
			default:
				p[i] = c
				i++
				continue
			}
			p[i] = c
			i++
			if i < len(p) {
				p[i] = second
				i++
			} else {
				n.pending, n.hasPend = second, true
			}
		}
		if m > 0 {
			return i, nil
		}
	}
	return i, nil
}

// netasciiSize returns the encoded size of r's content.
func netasciiSize(r io.Reader) (int64, error) {
	buf := make([]byte, 32*1024)
	var n int64
	for {
		m, err := r.Read(buf)
		n += int64(m)
		for _, c := range buf[:m] {
			if c == '\n' || c == '\r' {
				n++
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// netasciiWriter decodes netascii written to it and passes the result to w. A CR followed by a
// byte other than LF or NUL is kept as it is (lenient, as most servers are).
type netasciiWriter struct {
	w   io.Writer
	cr  bool // the last byte written was a CR whose meaning depends on the next byte
	out []byte
}

func newNetasciiWriter(w io.Writer) *netasciiWriter { return &netasciiWriter{w: w} }

func (n *netasciiWriter) Write(p []byte) (int, error) {
	out := n.out[:0]
	for _, c := range p {
		if n.cr {
			n.cr = false
			switch c {
			case '\n':
				out = append(out, '\n')
				continue
			case 0:
				out = append(out, '\r')
				continue
			default:
				out = append(out, '\r')
			}
		}
		if c == '\r' {
			n.cr = true
			continue
		}
		out = append(out, c)
	}
	n.out = out
	if _, err := n.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a trailing bare CR, if any.
func (n *netasciiWriter) Flush() error {
	if n.cr {
		n.cr = false
		_, err := n.w.Write([]byte{'\r'})
		return err
	}
	return nil
}
