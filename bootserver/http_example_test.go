package bootserver_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/netroot/netroot/bootserver"
)

// The TFTP root served over HTTP, for iPXE and UEFI HTTP boot: a Range request for part of a
// kernel. In a Server, add the HTTPServer to Services; it listens on Addr itself.
func ExampleHTTPServer() {
	root, _ := os.MkdirTemp("", "tftproot")
	defer os.RemoveAll(root)
	_ = os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "boot/linux"), []byte("MZ kernel image"), 0o644)

	h := &bootserver.HTTPServer{Root: root}
	r, _ := os.OpenRoot(root)
	defer r.Close()
	ts := httptest.NewServer(h.Handler(r))
	defer ts.Close()

	req, _ := http.NewRequest("GET", ts.URL+"/boot/linux", nil)
	req.Header.Set("Range", "bytes=3-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, string(body), h.Stats().BytesSent)
	// Output: 206 Partial Content kernel 6
}
