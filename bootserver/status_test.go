package bootserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/dhcp"
	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// statusServer runs a loopback server with one build, fetches its kernel over TFTP and attaches
// an NBD client to its export, and returns the server, the build ID and the client's address.
func statusServer(t *testing.T) (srv *bootserver.Server, build, client string) {
	t.Helper()
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ = newServer(t, kisDir)
	reg := prometheus.NewRegistry()
	srv.Registerer = reg
	run(t, srv)
	build = "leap.x86_64-1.0.0"
	var buf bytes.Buffer
	_, err := (&tftp.Client{}).Get(context.Background(), srv.ActiveListeners().TFTP.LocalAddr().String(), "boot/"+build+"/linux", &buf)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(srv.Status().Transfers) == 1 }, 10*time.Second, 10*time.Millisecond,
		"the transfer is reported once the server has the last acknowledgement")
	c, _ := attach(t, srv, build)
	t.Cleanup(func() { c.Close() })
	_, err = c.ReadAt(make([]byte, 4096), 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(srv.Status().Clients) == 1 }, 10*time.Second, 10*time.Millisecond)
	return srv, build, srv.Status().Clients[0].Client
}

func TestStatus(t *testing.T) {
	srv, build, client := statusServer(t)
	st := srv.Status()
	require.Len(t, st.Builds, 1)
	assert.Equal(t, build, st.Builds[0].ID)
	assert.True(t, st.Builds[0].Current)
	assert.Equal(t, build, st.Default)
	assert.Equal(t, build, st.Clients[0].Export)
	assert.Equal(t, int64(4096), st.Clients[0].BytesRead)
	assert.Equal(t, int64(1), st.Clients[0].Requests)
	assert.False(t, st.Clients[0].LastRequest.IsZero())
	assert.Contains(t, client, "127.0.0.1")
	require.NotEmpty(t, st.Transfers)
	assert.Equal(t, "boot/"+build+"/linux", st.Transfers[0].File)
	assert.Positive(t, st.Transfers[0].Bytes)
	require.NotEmpty(t, st.Machines, "the loopback client has a timeline")
	var kinds []string
	for _, e := range st.Machines[0].Timeline {
		kinds = append(kinds, e.Kind)
	}
	assert.Equal(t, []string{"tftp-transfer", "nbd-attach"}, kinds, "what the server saw of the client, in order")
	var menus []string
	for _, m := range st.Menus {
		menus = append(menus, m.Path)
		assert.NotEmpty(t, m.Content, m.Path)
	}
	assert.Contains(t, menus, "pxelinux.cfg/default")

	h := httptest.NewServer(srv.StatusHandler())
	defer h.Close()
	resp, err := http.Get(h.URL + "/status.json")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var got bootserver.Status
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	assert.Equal(t, build, got.Clients[0].Export)
	assert.Equal(t, client, got.Clients[0].Client)

	page, err := http.Get(h.URL + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	assert.Equal(t, http.StatusOK, page.StatusCode)
	assert.Contains(t, string(body), build)
	nf, err := http.Get(h.URL + "/metrics")
	require.NoError(t, err)
	nf.Body.Close()
	assert.Equal(t, http.StatusNotFound, nf.StatusCode, "other paths are left to the caller's mux")
}

// TestMetricsFollowConventions lints the server's metrics with client_golang's linter (the
// rules promtool applies) and checks the per-command and per-reason labels.
func TestMetricsFollowConventions(t *testing.T) {
	srv, build, _ := statusServer(t)
	reg := srv.Registerer.(*prometheus.Registry)
	reg.MustRegister(bootserver.BuildInfoCollector(),
		bootserver.HTTPCollector(func() bootserver.HTTPStats { return bootserver.HTTPStats{Requests: 5, NotFound: 2, BytesSent: 100} }),
		bootserver.DHCPCollector(func() dhcp.Stats { return dhcp.Stats{Received: 3, Offers: 1, Acks: 1} }))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
	text := gatherText(t, reg)
	assert.Contains(t, text, `netroot_nbd_export_clients{export="`+build+`"} 1`)
	assert.Contains(t, text, `netroot_image_info{build="`+build+`",image="leap",state="current",version="1.0.0"} 1`)
	assert.Contains(t, text, `netroot_tftp_transfers_total{result="completed"} 1`)
	assert.Contains(t, text, `netroot_nbd_requests_total{command="read"}`)
	assert.Contains(t, text, `netroot_nbd_refused_clients_total{reason="unknown_export"} 0`)
	assert.Contains(t, text, `netroot_build_info{goversion=`)
	assert.Contains(t, text, `netroot_http_requests_total{result="ok"} 3`)
	assert.Contains(t, text, `netroot_dhcp_replies_total{type="offer"} 1`)

	// promtool, the Prometheus project's own checker, when installed (required in CI).
	promtool := peertest.Program(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)
}

func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	h := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer h.Close()
	resp, err := http.Get(h.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// TestStatusPageInABrowser loads the status page in headless Chromium and checks that the
// rendered document lists the build and the attached NBD client.
func TestStatusPageInABrowser(t *testing.T) {
	chromium := peertest.Program(t, "chromium", "chromium")
	srv, build, client := statusServer(t)
	h := httptest.NewServer(srv.StatusHandler())
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--dump-dom", h.URL+"/")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	require.NoError(t, err, "chromium: %s", stderr.String())
	d := string(dom)
	require.Contains(t, d, `<table id="clients">`, "the browser rendered the clients table")
	i := strings.Index(d, `<table id="clients">`)
	clients := d[i : i+strings.Index(d[i:], "</table>")]
	assert.Contains(t, clients, client, "the attached client is shown")
	assert.Contains(t, clients, build)
	assert.Contains(t, d, "<title>netroot boot server</title>")
}

// TestRefusedClient asks for an export that does not exist: the server logs one WARN line
// naming the client, the export asked for and the exports there are, counts it by reason, and
// puts it on the client's timeline.
func TestRefusedClient(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	var logs syncBuffer
	srv.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	reg := prometheus.NewRegistry()
	srv.Registerer = reg
	run(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, "tcp", srv.ActiveListeners().NBD.Addr().String(), nil)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Go(ctx, "leap.x86_64-9.9.9")
	require.Error(t, err)

	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "nbd client refused") }, 10*time.Second, 10*time.Millisecond)
	line := logs.String()[strings.Index(logs.String(), "level=WARN msg=\"nbd client refused\""):]
	line = line[:strings.Index(line, "\n")]
	assert.Contains(t, line, "client=127.0.0.1:")
	assert.Contains(t, line, "reason=\"unknown export\"")
	assert.Contains(t, line, "export=leap.x86_64-9.9.9")
	assert.Contains(t, line, "exports=[leap.x86_64-1.0.0]")
	assert.Equal(t, 1, strings.Count(logs.String(), "nbd client refused"), "logged once")
	assert.Contains(t, gatherText(t, reg), `netroot_nbd_refused_clients_total{reason="unknown_export"} 1`)
	require.Eventually(t, func() bool {
		for _, m := range srv.Status().Machines {
			for _, e := range m.Timeline {
				if e.Kind == "nbd-refused" && e.File == "leap.x86_64-9.9.9" {
					return true
				}
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
}

// TestStatusHTTPFetches runs an HTTPServer among the Server's Services and checks that a
// machine's HTTP fetches reach /status.json: in the transfers and in its timeline, with a
// failed fetch counted as an error.
func TestStatusHTTPFetches(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv.Services = []bootserver.Service{&bootserver.HTTPServer{Root: srv.TFTPRoot, Listener: ln}}
	run(t, srv)
	build := "leap.x86_64-1.0.0"
	for _, p := range []string{"boot/" + build + "/linux", "no-such-file"} {
		resp, err := http.Get("http://" + ln.Addr().String() + "/" + p)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	h := httptest.NewServer(srv.StatusHandler())
	defer h.Close()
	var st bootserver.Status
	require.Eventually(t, func() bool {
		resp, err := http.Get(h.URL + "/status.json")
		require.NoError(t, err)
		defer resp.Body.Close()
		st = bootserver.Status{}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
		return len(st.Transfers) == 2
	}, 10*time.Second, 10*time.Millisecond)
	files := map[string]bootserver.EventStatus{}
	for _, tr := range st.Transfers {
		files[tr.File] = tr
	}
	require.Contains(t, files, "boot/"+build+"/linux")
	got := files["boot/"+build+"/linux"]
	assert.Equal(t, "http-request", got.Kind)
	assert.Positive(t, got.Bytes)
	assert.Empty(t, got.Error)
	assert.Equal(t, "http: GET no-such-file: 404 Not Found", files["no-such-file"].Error)

	require.Len(t, st.Machines, 1)
	m := st.Machines[0]
	assert.Equal(t, []string{"127.0.0.1"}, m.Addresses)
	assert.Equal(t, 1, m.Errors)
	var timeline []string
	for _, e := range m.Timeline {
		timeline = append(timeline, e.Kind+" "+e.File)
	}
	assert.Equal(t, []string{"http-request boot/" + build + "/linux", "http-request no-such-file"}, timeline)
}
