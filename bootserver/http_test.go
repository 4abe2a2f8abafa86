package bootserver_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/internal/peertest"
)

// httpRoot makes a TFTP root with a kernel, a config, a hidden temporary file, a folder and a
// symbolic link pointing out of the root.
func httpRoot(t *testing.T) string {
	t.Helper()
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644))
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "boot/leap"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "boot/leap/linux"), []byte("0123456789abcdef"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "boot.ipxe"), []byte("#!ipxe\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "boot/.linux.tmp-1"), []byte("half"), 0o644))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "escape")))
	require.NoError(t, os.Symlink("boot/leap/linux", filepath.Join(root, "inside")))
	return root
}

func TestHTTPHandler(t *testing.T) {
	root := httpRoot(t)
	r, err := os.OpenRoot(root)
	require.NoError(t, err)
	defer r.Close()
	var (
		mu    sync.Mutex
		infos []bootserver.HTTPRequestInfo
	)
	h := &bootserver.HTTPServer{Root: root, OnRequest: func(i bootserver.HTTPRequestInfo) {
		mu.Lock()
		infos = append(infos, i)
		mu.Unlock()
	}}
	ts := httptest.NewServer(h.Handler(r))
	defer ts.Close()

	for _, tc := range []struct {
		name, method, path, rng string
		status                  int
		body                    string
	}{
		{"file", "GET", "/boot/leap/linux", "", 200, "0123456789abcdef"},
		{"range", "GET", "/boot/leap/linux", "bytes=4-7", 206, "4567"},
		{"suffix range", "GET", "/boot/leap/linux", "bytes=-3", 206, "def"},
		{"bad range", "GET", "/boot/leap/linux", "bytes=99-", 416, ""},
		{"head", "HEAD", "/boot.ipxe", "", 200, ""},
		{"link inside", "GET", "/inside", "", 200, "0123456789abcdef"},
		{"link outside", "GET", "/escape", "", 404, ""},
		{"dot dot", "GET", "/../../etc/passwd", "", 404, ""},
		{"encoded dot dot", "GET", "/boot/%2e%2e/%2e%2e/etc/passwd", "", 404, ""},
		{"hidden temporary file", "GET", "/boot/.linux.tmp-1", "", 404, ""},
		{"folder", "GET", "/boot/", "", 404, ""},
		{"root", "GET", "/", "", 404, ""},
		{"missing", "GET", "/pxelinux.0", "", 404, ""},
		{"post", "POST", "/boot.ipxe", "", 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, ts.URL+tc.path, nil)
			require.NoError(t, err)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, tc.status, resp.StatusCode)
			if tc.status < 300 {
				assert.Equal(t, tc.body, string(b))
			}
			assert.NotContains(t, string(b), "secret")
			if tc.method == "HEAD" {
				assert.Equal(t, "7", resp.Header.Get("Content-Length"))
			}
		})
	}
	st := h.Stats()
	assert.Equal(t, uint64(14), st.Requests)
	assert.Equal(t, uint64(7), st.NotFound)
	assert.Equal(t, uint64(2), st.Failed) // 416 and 405
	assert.Equal(t, uint64(16+4+3+16), st.BytesSent)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, infos, 14)
	assert.Equal(t, "boot/leap/linux", infos[0].Path)
	assert.Equal(t, int64(16), infos[0].Bytes)
	assert.Equal(t, 206, infos[1].Status)
}

// TestHTTPServeCurl serves a root on loopback and fetches a file and a range with curl.
func TestHTTPServeCurl(t *testing.T) {
	curl := peertest.Program(t, "curl", "curl")
	root := httpRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &bootserver.HTTPServer{Root: root, Listener: ln}
	done := make(chan error, 1)
	go func() { done <- h.Serve(context.Background()) }()
	url := "http://" + ln.Addr().String() + "/boot/leap/linux"
	out, err := exec.Command(curl, "-sSf", url).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "0123456789abcdef", string(out))
	out, err = exec.Command(curl, "-sSf", "-r", "10-", url).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "abcdef", string(out))
	out, err = exec.Command(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", "http://"+ln.Addr().String()+"/../escape").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "404", strings.TrimSpace(string(out)))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, h.Shutdown(ctx))
	require.NoError(t, <-done)
	assert.Equal(t, uint64(3), h.Stats().Requests)
}

func TestHTTPCloseBeforeServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &bootserver.HTTPServer{Root: t.TempDir(), Listener: ln}
	require.NoError(t, h.Close())
	require.NoError(t, h.Serve(context.Background()))
	err = (&bootserver.HTTPServer{Root: filepath.Join(t.TempDir(), "missing")}).Serve(context.Background())
	assert.ErrorContains(t, err, "bootserver: http root:")
}
