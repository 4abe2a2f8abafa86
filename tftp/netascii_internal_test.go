package tftp

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func encodeNetascii(t testing.TB, b []byte, chunk int) []byte {
	r := newNetasciiReader(bytes.NewReader(b))
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
	}
}

func decodeNetascii(t testing.TB, b []byte, chunk int) []byte {
	var out bytes.Buffer
	w := newNetasciiWriter(&out)
	for len(b) > 0 {
		n := min(chunk, len(b))
		_, err := w.Write(b[:n])
		require.NoError(t, err)
		b = b[n:]
	}
	require.NoError(t, w.Flush())
	return out.Bytes()
}

func TestNetasciiCoding(t *testing.T) {
	for _, tc := range []struct{ name, local, wire string }{
		{"empty", "", ""},
		{"plain", "abc", "abc"},
		{"LF", "a\nb\n", "a\r\nb\r\n"},
		{"CR", "a\rb", "a\r\x00b"},
		{"CRLF", "a\r\n", "a\r\x00\r\n"},
		{"trailing CR", "x\r", "x\r\x00"},
		{"only line ends", "\n\n\r\r", "\r\n\r\n\r\x00\r\x00"},
	} {
		for _, chunk := range []int{1, 2, 3, 512} {
			assert.Equal(t, tc.wire, string(encodeNetascii(t, []byte(tc.local), chunk)), "%s encode chunk %d", tc.name, chunk)
			assert.Equal(t, tc.local, string(decodeNetascii(t, []byte(tc.wire), chunk)), "%s decode chunk %d", tc.name, chunk)
		}
		n, err := netasciiSize(bytes.NewReader([]byte(tc.local)))
		require.NoError(t, err)
		assert.EqualValues(t, len(tc.wire), n, tc.name)
	}
	// A bare CR followed by another byte (not valid netascii) is kept.
	assert.Equal(t, "a\rb", string(decodeNetascii(t, []byte("a\rb"), 1)))
	// A reader that returns one byte at a time.
	r := newNetasciiReader(iotest.OneByteReader(bytes.NewReader([]byte("a\nb"))))
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "a\r\nb", string(b))
}

// FuzzNetascii checks that decoding undoes encoding for any content and any chunking, and that
// netasciiSize predicts the encoded size.
func FuzzNetascii(f *testing.F) {
	f.Add([]byte("DEFAULT linux\nLABEL linux\r\n"), uint8(7))
	f.Add([]byte("\r\r\n\n\x00\r"), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8) {
		c := int(chunk%64) + 1
		enc := encodeNetascii(t, b, c)
		n, err := netasciiSize(bytes.NewReader(b))
		require.NoError(t, err)
		require.EqualValues(t, len(enc), n)
		require.Equal(t, string(b), string(decodeNetascii(t, enc, c)))
	})
}
