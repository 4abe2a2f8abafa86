package kis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logLines collects what a JSON slog handler writes, one map per line.
type logLines struct{ buf bytes.Buffer }

func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(&l.buf, nil)) }

func (l *logLines) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(l.buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(line, &m), "%s", line)
		out = append(out, m)
	}
	l.buf.Reset()
	return out
}

func msgs(lines []map[string]any) []string {
	var s []string
	for _, l := range lines {
		s = append(s, l["level"].(string)+" "+l["msg"].(string))
	}
	return s
}

// progressLog records the progress calls of one step.
type progressLog struct{ done, total []int64 }

func (p *progressLog) update(done, total int64) {
	p.done = append(p.done, done)
	p.total = append(p.total, total)
}

// Unpacking an .xz image reports uncompressed bytes out of the image's size and logs the end of
// decompression and the md5 result; unpacking again reuses the image and says why it is trusted.
func TestUnpackLogsAndProgress(t *testing.T) {
	image := kistest.Image(9<<20+4096, 3) // more than two progress steps
	dir := t.TempDir()
	b := write(t, dir, kistest.Spec{Compressed: true, Image: image})
	cache := t.TempDir()
	var logs logLines
	var p progressLog
	u, err := kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: cache, Progress: p.update, Logger: logs.logger()})
	require.NoError(t, err)

	require.GreaterOrEqual(t, len(p.done), 3)
	for i := range p.done {
		assert.Equal(t, int64(len(image)), p.total[i], "the total is the uncompressed size")
		if i > 0 {
			assert.Greater(t, p.done[i], p.done[i-1])
		}
	}
	assert.Equal(t, int64(len(image)), p.done[len(p.done)-1], "the last report is the whole image")

	lines := logs.lines(t)
	require.Equal(t, []string{"INFO unpacked root image", "INFO root image matches its md5"}, msgs(lines))
	assert.Equal(t, float64(len(image)), lines[0]["bytes"])
	assert.Equal(t, u.Image, lines[0]["image"])
	assert.Equal(t, b.CompressedImage, lines[0]["from"])
	assert.Contains(t, lines[0], "took")
	assert.Contains(t, lines[0], "mb_per_s")
	c, err := kis.ReadChecksum(b.MD5)
	require.NoError(t, err)
	assert.Equal(t, c.Sum(), lines[1]["md5"])
	assert.Equal(t, b.MD5, lines[1]["md5_file"])

	// Again: the stamp says the image matched.
	_, err = kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: cache, Logger: logs.logger()})
	require.NoError(t, err)
	lines = logs.lines(t)
	require.Equal(t, []string{"INFO reusing unpacked root image"}, msgs(lines))
	assert.Equal(t, u.Image, lines[0]["image"])
	assert.Contains(t, lines[0]["trusted"], u.Image+".kis-unpacked")
	assert.Contains(t, lines[0]["trusted"], c.Sum())

	// Without the stamp, the image is checked now, with progress over the raw image.
	require.NoError(t, os.Remove(u.Image+".kis-unpacked"))
	p = progressLog{}
	_, err = kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: cache, Progress: p.update, Logger: logs.logger()})
	require.NoError(t, err)
	lines = logs.lines(t)
	require.Equal(t, []string{"INFO reusing unpacked root image"}, msgs(lines))
	assert.Contains(t, lines[0]["trusted"], "checked now")
	require.NotEmpty(t, p.done)
	assert.Equal(t, int64(len(image)), p.done[len(p.done)-1])
}

// A build without its .md5 is found; unpacking it is an error naming the file unless NoVerify
// says to go on, which warns that the image is unverified.
func TestUnpackWithoutMD5(t *testing.T) {
	image := kistest.Image(5<<20, 8)
	for _, tc := range []struct {
		name string
		spec kistest.Spec
	}{
		{"compressed", kistest.Spec{Compressed: true, Image: image}},
		{"raw", kistest.Spec{Image: image}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := write(t, dir, tc.spec)
			require.NoError(t, os.Remove(b.MD5))
			builds, err := kis.Find(dir)
			require.NoError(t, err)
			require.Len(t, builds, 1)
			b = builds[0]
			assert.Empty(t, b.MD5)
			assert.True(t, b.Loose())

			cache := t.TempDir()
			err = kis.Verify(context.Background(), b, nil)
			require.ErrorIs(t, err, kis.ErrNoChecksum)
			assert.Contains(t, err.Error(), b.ID()+".md5")
			if b.CompressedImage != "" {
				_, err = kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: cache})
				require.ErrorIs(t, err, kis.ErrNoChecksum)
				assert.Contains(t, err.Error(), "has no md5 file "+b.ID()+".md5")
				assert.False(t, errors.Is(err, kis.ErrChecksum))
				entries, _ := os.ReadDir(cache)
				assert.Empty(t, entries, "nothing unpacked")
			}

			var logs logLines
			var p progressLog
			u, err := kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: cache, NoVerify: true, Progress: p.update, Logger: logs.logger()})
			require.NoError(t, err)
			got, err := os.ReadFile(u.Image)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(image, got))
			lines := logs.lines(t)
			require.NotEmpty(t, lines)
			assert.Equal(t, "WARN root image is NOT verified: the build has no md5 file", msgs(lines)[0])
			assert.Equal(t, filepath.Join(dir, b.ID()+".md5"), lines[0]["missing"])
			if b.CompressedImage == "" {
				assert.Len(t, lines, 1)
				return
			}
			// No md5 result, but the end of decompression; the size came from the xz index.
			assert.Equal(t, []string{"WARN root image is NOT verified: the build has no md5 file", "INFO unpacked root image"}, msgs(lines))
			require.NotEmpty(t, p.total)
			assert.Equal(t, int64(len(image)), p.total[0], "total from the xz index")
			assert.Equal(t, int64(len(image)), p.done[len(p.done)-1])

			// Reused while the .xz is unchanged; the reason says there was no md5.
			_, err = kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: cache, NoVerify: true, Logger: logs.logger()})
			require.NoError(t, err)
			lines = logs.lines(t)
			require.Equal(t, []string{"WARN root image is NOT verified: the build has no md5 file", "INFO reusing unpacked root image"}, msgs(lines))
			assert.Contains(t, lines[1]["trusted"], "no md5")
			assert.Contains(t, lines[1]["trusted"], filepath.Base(b.CompressedImage))
		})
	}
}

// A mismatch names the file and the sums once, with one "kis: " prefix, and is ErrChecksum.
func TestMismatchErrorHasOnePrefix(t *testing.T) {
	dir := t.TempDir()
	b := write(t, dir, kistest.Spec{Compressed: true})
	c, err := kis.ReadChecksum(b.MD5)
	require.NoError(t, err)
	text, err := os.ReadFile(b.MD5)
	require.NoError(t, err)
	bad := strings.Replace(string(text), c.Sum(), strings.Repeat("0", 32), 1)
	require.NoError(t, os.WriteFile(b.MD5, []byte(bad), 0o644))
	_, err = kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: t.TempDir()})
	require.ErrorIs(t, err, kis.ErrChecksum)
	assert.Equal(t, 1, strings.Count(err.Error(), "kis: "), err.Error())
	assert.Contains(t, err.Error(), "its md5 file says "+strings.Repeat("0", 32))

	require.NoError(t, os.Remove(b.MD5))
	b.MD5 = ""
	err = kis.Verify(context.Background(), b, nil)
	require.ErrorIs(t, err, kis.ErrNoChecksum)
	assert.Equal(t, 1, strings.Count(err.Error(), "kis: "), err.Error())

	_, err = kis.Find(t.TempDir())
	require.ErrorIs(t, err, kis.ErrNotFound)
	assert.Equal(t, 1, strings.Count(err.Error(), "kis: "), err.Error())
}
