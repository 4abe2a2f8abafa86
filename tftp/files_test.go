package tftp_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

// syncBuffer is a log destination safe for concurrent transfers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFileServerConfinement(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, outside, "secret", []byte("secret"))
	root := t.TempDir()
	writeFile(t, root, "pxelinux.0", []byte("bootloader"))
	writeFile(t, root, "boot/linux", []byte("kernel"))
	writeFile(t, root, "Boot/Mixed", []byte("mixed"))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "escape")))
	require.NoError(t, os.Symlink("../../"+filepath.Base(outside)+"/secret", filepath.Join(root, "boot", "relescape")))
	require.NoError(t, os.Symlink("linux", filepath.Join(root, "boot", "vmlinuz")))
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "outdir")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	if os.Geteuid() == 0 {
		require.NoError(t, syscall.Mknod(filepath.Join(root, "null"), syscall.S_IFCHR|0o666, int(1<<8|3)))
	}
	logs := &syncBuffer{}
	srv := &tftp.Server{
		Handler: tftp.FileServer(root), Timeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	}
	addr := serve(t, srv)
	c := &tftp.Client{Timeout: 200 * time.Millisecond}
	for _, tc := range []struct {
		name string
		file string
		want string // content, or "" for an error
		code tftp.ErrorCode
	}{
		{"plain", "pxelinux.0", "bootloader", 0},
		{"subdirectory", "boot/linux", "kernel", 0},
		{"symlink inside", "boot/vmlinuz", "kernel", 0},
		{"missing", "nope", "", tftp.ErrFileNotFound},
		{"dot-dot", "../" + filepath.Base(outside) + "/secret", "", tftp.ErrAccessViolation},
		{"dot-dot inside", "boot/../../secret", "", tftp.ErrAccessViolation},
		{"dot-dot that stays inside", "boot/../pxelinux.0", "", tftp.ErrAccessViolation},
		{"absolute", filepath.Join(outside, "secret"), "", tftp.ErrAccessViolation},
		{"etc passwd", "/etc/passwd", "", tftp.ErrAccessViolation},
		{"backslashes", `..\..\etc\passwd`, "", tftp.ErrAccessViolation},
		{"windows path", `boot\linux`, "", tftp.ErrAccessViolation},
		{"symlink to outside", "escape", "", tftp.ErrAccessViolation},
		{"relative symlink to outside", "boot/relescape", "", tftp.ErrAccessViolation},
		{"through a symlinked directory", "outdir/secret", "", tftp.ErrAccessViolation},
		{"directory", "boot", "", tftp.ErrAccessViolation},
		{"root", ".", "", tftp.ErrAccessViolation},
		{"fifo", "fifo", "", tftp.ErrAccessViolation},
		{"device file", "null", "", tftp.ErrAccessViolation},
		{"empty element", "boot//linux", "", tftp.ErrAccessViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.file == "null" && os.Geteuid() != 0 {
				t.Skip("mknod needs root")
			}
			got, _, err := get(t, c, addr, tc.file)
			if tc.want != "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, string(got))
				return
			}
			require.ErrorIs(t, err, tc.code)
			assert.NotContains(t, string(got), "secret")
			require.Eventually(t, func() bool {
				return strings.Contains(logs.String(), "file="+quoteLog(tc.file))
			}, time.Second, 10*time.Millisecond, "refusal logged")
		})
	}
	assert.Contains(t, logs.String(), "level=WARN msg=\"tftp: transfer failed\"")
}

// quoteLog renders a value as slog's text handler does.
func quoteLog(s string) string {
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info("", "v", s)
	line := strings.TrimSpace(b.String())
	return line[strings.Index(line, "v=")+2:]
}

func TestFileServerRemap(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "boot/grub/grub.cfg", []byte("grub"))
	addr := serve(t, &tftp.Server{Handler: tftp.NewFileServer(root, &tftp.FileServerConfig{
		Remap: func(name string) string { return tftp.FoldCase(tftp.SlashPath(name)) },
	})})
	for _, name := range []string{`\BOOT\GRUB\GRUB.CFG`, "/boot/grub/grub.cfg", "boot/Grub/grub.cfg"} {
		t.Run(name, func(t *testing.T) {
			got, _, err := get(t, &tftp.Client{}, addr, name)
			require.NoError(t, err)
			assert.Equal(t, "grub", string(got))
		})
	}
	_, _, err := get(t, &tftp.Client{}, addr, `\..\x`)
	require.ErrorIs(t, err, tftp.ErrAccessViolation)
}

func TestFSServer(t *testing.T) {
	fsys := fstest.MapFS{
		"pxelinux.cfg/default": {Data: []byte("DEFAULT linux\n")},
		"dir/sub":              {Data: []byte("x")},
	}
	addr := serve(t, &tftp.Server{Handler: tftp.FSServer(fsys)})
	got, info, err := get(t, &tftp.Client{TransferSize: true}, addr, "pxelinux.cfg/default")
	require.NoError(t, err)
	assert.Equal(t, "DEFAULT linux\n", string(got))
	assert.EqualValues(t, 14, info.Size)
	for name, code := range map[string]tftp.ErrorCode{"missing": tftp.ErrFileNotFound, "dir": tftp.ErrAccessViolation, "../x": tftp.ErrAccessViolation} {
		_, _, err := get(t, &tftp.Client{}, addr, name)
		assert.ErrorIs(t, err, code, name)
	}
}

func TestUploads(t *testing.T) {
	put := func(t *testing.T, c *tftp.Client, addr, name string, content []byte, size int64) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.Put(ctx, addr, name, bytes.NewReader(content), size)
		return err
	}
	content := randomBytes(50_000, 8)

	t.Run("disabled by default", func(t *testing.T) {
		addr := serve(t, &tftp.Server{Handler: tftp.FileServer(t.TempDir())})
		err := put(t, &tftp.Client{}, addr, "x", content, int64(len(content)))
		require.ErrorIs(t, err, tftp.ErrAccessViolation)
	})
	t.Run("read-only file server refuses", func(t *testing.T) {
		h := tftp.FileServer(t.TempDir())
		addr := serve(t, &tftp.Server{Handler: h, WriteHandler: h})
		require.ErrorIs(t, put(t, &tftp.Client{}, addr, "x", content, -1), tftp.ErrAccessViolation)
	})

	t.Run("default limit", func(t *testing.T) {
		dir := t.TempDir()
		addr := serve(t, &tftp.Server{WriteHandler: tftp.UploadServer(dir, nil)})
		// Announced with tsize, refused before any data moves.
		err := put(t, &tftp.Client{TransferSize: true}, addr, "x", content, tftp.DefaultMaxUploadSize+1)
		require.ErrorIs(t, err, tftp.ErrDiskFull)
		require.NoError(t, put(t, &tftp.Client{TransferSize: true}, addr, "y", content, int64(len(content))))
	})

	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	writeFile(t, dir, "existing", []byte("keep"))
	srv := &tftp.Server{WriteHandler: tftp.UploadServer(dir, &tftp.UploadConfig{MaxSize: 100_000}), Timeout: 100 * time.Millisecond, Retries: 2}
	addr := serve(t, srv)
	for _, tc := range []struct {
		name   string
		client tftp.Client
		file   string
		body   []byte
		size   int64
		code   tftp.ErrorCode // 0: success
	}{
		{"plain", tftp.Client{}, "a", content, -1, 0},
		{"options", tftp.Client{BlockSize: 1468, WindowSize: 8, TransferSize: true}, "sub/b", content, int64(len(content)), 0},
		{"empty", tftp.Client{}, "empty", nil, 0, 0},
		{"exact limit", tftp.Client{TransferSize: true}, "limit", randomBytes(100_000, 1), 100_000, 0},
		{"netascii", tftp.Client{Netascii: true}, "text", []byte("a\nb\r\nc\r"), -1, 0},
		{"tsize over the limit", tftp.Client{TransferSize: true}, "big1", randomBytes(100_001, 1), 100_001, tftp.ErrDiskFull},
		{"data over the limit", tftp.Client{BlockSize: 8192}, "big2", randomBytes(150_000, 1), -1, tftp.ErrDiskFull},
		{"existing file kept", tftp.Client{}, "existing", content, -1, tftp.ErrFileExists},
		{"missing directory", tftp.Client{}, "nodir/x", content, -1, tftp.ErrFileNotFound},
		{"escape", tftp.Client{}, "../x", content, -1, tftp.ErrAccessViolation},
		{"absolute", tftp.Client{}, "/tmp/x", content, -1, tftp.ErrAccessViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := put(t, &tc.client, addr, tc.file, tc.body, tc.size)
			if tc.code != 0 {
				require.ErrorIs(t, err, tc.code)
				if tc.file != "existing" {
					_, statErr := os.Stat(filepath.Join(dir, tc.file))
					assert.ErrorIs(t, statErr, os.ErrNotExist, "no partial file")
				}
				return
			}
			require.NoError(t, err)
			got, err := os.ReadFile(filepath.Join(dir, tc.file))
			require.NoError(t, err, "committed before the final ACK")
			assert.Equal(t, string(tc.body), string(got))
		})
	}
	got, err := os.ReadFile(filepath.Join(dir, "existing"))
	require.NoError(t, err)
	assert.Equal(t, "keep", string(got))

	t.Run("abandoned upload leaves nothing", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.send(&tftp.RequestPacket{Op: tftp.OpWRQ, Filename: "abandoned", Mode: "octet"})
		require.Equal(t, &tftp.AckPacket{Block: 0}, rc.must(time.Second))
		rc.send(&tftp.DataPacket{Block: 1, Data: make([]byte, 512)})
		require.Equal(t, &tftp.AckPacket{Block: 1}, rc.must(time.Second))
		// Go silent: the server retries, gives up and removes the partial upload.
		require.Eventually(t, func() bool { return srv.Stats().Active == 0 }, 5*time.Second, 20*time.Millisecond)
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			assert.NotContains(t, e.Name(), "abandoned")
			assert.NotContains(t, e.Name(), "upload-")
		}
	})
}
