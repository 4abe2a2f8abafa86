package store_test

// Interop tests against a real S3 engine: Ceph's RADOS gateway, brought up by .ci/ceph-rgw
// from Debian's ceph-mon, ceph-osd and radosgw packages (or any engine named by
// NETROOT_TEST_S3_ENDPOINT with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), read back by
// libnbd's nbdcopy through netroot's NBD server.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/store"
)

// rgw is an S3 engine for a test.
type rgw struct {
	cfg *store.Config
	dir string // the cluster's directory when this test started it; "" for an external engine
}

// startRGW returns the engine named by NETROOT_TEST_S3_ENDPOINT, or brings up Ceph RGW with
// .ci/ceph-rgw and stops it when t ends.
func startRGW(t *testing.T) *rgw {
	t.Helper()
	if ep := os.Getenv("NETROOT_TEST_S3_ENDPOINT"); ep != "" {
		cfg := store.ConfigFromEnv()
		cfg.Endpoint = ep
		return &rgw{cfg: &cfg}
	}
	for _, p := range [][2]string{{"ceph-mon", "ceph-mon"}, {"ceph-osd", "ceph-osd"}, {"radosgw", "radosgw"},
		{"radosgw-admin", "ceph-common"}, {"ceph", "ceph-common"}, {"ceph-authtool", "ceph-common"}, {"monmaptool", "ceph-base"}} {
		peertest.Program(t, p[0], p[1])
	}
	script, err := filepath.Abs(filepath.Join("..", ".ci", "ceph-rgw"))
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "ceph")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", script, "start", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s start: %v\n%s", script, err, ee.Stderr)
		}
		t.Fatalf("%s start: %v", script, err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("bash", script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("%s stop: %v\n%s", script, err, out)
		}
	})
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	cfg := &store.Config{Endpoint: env["AWS_ENDPOINT_URL_S3"], Region: env["AWS_REGION"],
		AccessKeyID: env["AWS_ACCESS_KEY_ID"], SecretAccessKey: env["AWS_SECRET_ACCESS_KEY"]}
	require.NotEmpty(t, cfg.Endpoint, "no endpoint in %q", out)
	return &rgw{cfg: cfg, dir: dir}
}

// stopGateway kills radosgw (by the PID the script recorded), leaving monitor and OSD.
func (r *rgw) stopGateway(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "run", "rgw.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
}

// replica is one stateless server: its own S3 client, cache, view of the tags and NBD server.
type replica struct {
	cache  *store.Cache
	images *store.Images
	srv    *nbd.Server
	addr   string
}

// tagExports serves each tag as an NBD export of the version it names when a client attaches.
type tagExports struct{ im *store.Images }

func (x tagExports) LookupExport(_ context.Context, name string) (*nbd.Export, error) {
	v, ok := x.im.Get(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", nbd.ErrUnknownExport, name)
	}
	return &nbd.Export{Name: name, Description: v.Manifest.Build, Device: v.Image}, nil
}

func (x tagExports) ListExports(ctx context.Context) ([]*nbd.Export, error) {
	var out []*nbd.Export
	for name := range x.im.All() {
		e, err := x.LookupExport(ctx, name)
		if err == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

func startReplica(t *testing.T, cfg *store.Config, bucket, prefix, tag string, cc *store.CacheConfig) *replica {
	t.Helper()
	st, err := store.New(bucket, prefix, cfg)
	require.NoError(t, err)
	c, err := store.NewCache(st, cc)
	require.NoError(t, err)
	im := store.NewImages(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); im.Watch(ctx, store.Watcher{Interval: 100 * time.Millisecond}, nil) }()
	srv := &nbd.Server{Exports: tagExports{im}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	require.Eventually(t, func() bool { _, ok := im.Get(tag); return ok }, 30*time.Second, 20*time.Millisecond, "replica sees tag %s", tag)
	return &replica{cache: c, images: im, srv: srv, addr: l.Addr().String()}
}

func nbdcopy(t *testing.T, prog, addr, export string) ([]byte, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "copy")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, "nbd://"+addr+"/"+export, out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nbdcopy: %w: %s", err, msg)
	}
	return os.ReadFile(out)
}

func dialExport(t *testing.T, addr, export string) *nbd.Client {
	t.Helper()
	ctx := context.Background()
	cl, err := nbd.Dial(ctx, "tcp", addr, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cl.Close() })
	_, err = cl.Go(ctx, export)
	require.NoError(t, err)
	return cl
}

func TestInteropRGW(t *testing.T) {
	nbdcopyProg := peertest.Program(t, "nbdcopy", "libnbd-bin")
	engine := startRGW(t)
	ctx := context.Background()
	bucket := fmt.Sprintf("netroot-%d", time.Now().UnixNano())
	const prefix, tag = "site", "netroot-test.x86_64"
	st, err := store.New(bucket, prefix, engine.cfg)
	require.NoError(t, err)
	require.NoError(t, st.CreateBucket(ctx))

	const cs = 256 << 10
	v1 := kistest.Image(6<<20, 11)
	r1, err := st.Push(ctx, writeBuild(t, "1.0.0", v1, kistest.Spec{}), &store.PushOptions{ChunkSize: cs})
	require.NoError(t, err)
	unique := len(r1.Manifest.Image.Chunks)
	{
		set := map[store.Hash]bool{}
		for _, h := range r1.Manifest.Image.Chunks {
			set[h] = true
		}
		unique = len(set)
	}
	l, err := st.List(ctx)
	require.NoError(t, err)
	require.Len(t, l.Manifests, 1)
	assert.Equal(t, r1.Uploaded, l.Chunks)

	replicas := make([]*replica, 3)
	for i := range replicas {
		replicas[i] = startReplica(t, engine.cfg, bucket, prefix, tag, nil)
	}

	t.Run("nbdcopy from each replica", func(t *testing.T) {
		for i, r := range replicas {
			got, err := nbdcopy(t, nbdcopyProg, r.addr, tag)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(v1, got), "replica %d: nbdcopy read different bytes", i)
			s := r.cache.Stats()
			assert.Zero(t, s.OriginErrors)
			assert.Zero(t, s.CorruptChunks)
		}
	})

	t.Run("50 concurrent readers fetch each chunk once per replica", func(t *testing.T) {
		cold := make([]*replica, 3)
		for i := range cold {
			cold[i] = startReplica(t, engine.cfg, bucket, prefix, tag, nil)
		}
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				r := cold[i%3]
				if i < 3 {
					got, err := nbdcopy(t, nbdcopyProg, r.addr, tag)
					assert.NoError(t, err)
					assert.True(t, bytes.Equal(v1, got), "nbdcopy reader %d", i)
					return
				}
				cl := dialExport(t, r.addr, tag)
				got := make([]byte, len(v1))
				// Readers start at different places, so they meet on chunks in flight.
				start := (i * 7 % 24) * cs
				for off := 0; off < len(v1); off += 128 << 10 {
					o := (start + off) % len(v1)
					if _, err := cl.ReadAt(got[o:o+128<<10], int64(o)); !assert.NoError(t, err) {
						return
					}
				}
				assert.True(t, bytes.Equal(v1, got), "reader %d", i)
			})
		}
		wg.Wait()
		for i, r := range cold {
			s := r.cache.Stats()
			assert.LessOrEqual(t, s.OriginRequests, int64(unique), "replica %d: origin requests for %d distinct chunks", i, unique)
			assert.Equal(t, int64(unique), s.Misses+s.Readaheads, "replica %d: each chunk fetched", i)
			assert.Zero(t, s.OriginErrors)
			t.Logf("replica %d: %+v", i, s)
		}

		// One replica goes away; the others serve on.
		require.NoError(t, cold[1].srv.Close())
		for _, i := range []int{0, 2} {
			got, err := nbdcopy(t, nbdcopyProg, cold[i].addr, tag)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(v1, got))
		}
		_, err := nbdcopy(t, nbdcopyProg, cold[1].addr, tag)
		assert.Error(t, err)
	})

	v2 := kistest.Image(6<<20+cs/2, 12)
	t.Run("promote while a connection reads the old version", func(t *testing.T) {
		r := replicas[0]
		old := dialExport(t, r.addr, tag)
		half := len(v1) / 2
		got := make([]byte, len(v1))
		_, err := old.ReadAt(got[:half], 0)
		require.NoError(t, err)

		r2, err := st.Push(ctx, writeBuild(t, "1.0.1", v2, kistest.Spec{}), &store.PushOptions{ChunkSize: cs, NoTag: true})
		require.NoError(t, err)
		_, err = st.Promote(ctx, tag, r2.Manifest.Build)
		require.NoError(t, err)
		for _, rep := range replicas {
			require.Eventually(t, func() bool {
				v, _ := rep.images.Get(tag)
				return v.Manifest.Build == "netroot-test.x86_64-1.0.1"
			}, 30*time.Second, 20*time.Millisecond)
		}
		_, err = old.ReadAt(got[half:], int64(half))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(v1, got), "the attached connection kept version 1.0.0")
		assert.Equal(t, int64(len(v1)), old.Size())

		fresh, err := nbdcopy(t, nbdcopyProg, r.addr, tag)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(v2, fresh), "a new connection gets version 1.0.1")
		s := r.cache.Stats()
		assert.Positive(t, s.ManifestBytes[r1.ID])
		assert.Positive(t, s.ManifestBytes[r2.ID])
	})

	t.Run("store stops: cached reads go on, cold reads fail cleanly", func(t *testing.T) {
		if engine.dir == "" {
			t.Skip("the engine was not started by this test (NETROOT_TEST_S3_ENDPOINT); not stopping it")
		}
		r := startReplica(t, engine.cfg, bucket, prefix, tag, &store.CacheConfig{Readahead: -1, FetchTimeout: 2 * time.Second})
		cl := dialExport(t, r.addr, tag)
		half := len(v2) / 2
		got := make([]byte, len(v2))
		_, err := cl.ReadAt(got[:half], 0)
		require.NoError(t, err)

		engine.stopGateway(t)

		again := make([]byte, half)
		_, err = cl.ReadAt(again, 0)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(v2[:half], again), "cached half read with the store down")

		start := time.Now()
		_, err = cl.ReadAt(got[len(v2)-4096:], int64(len(v2)-4096))
		var nerr *nbd.Error
		require.True(t, errors.As(err, &nerr), "a cold read is an NBD error reply, got %v", err)
		assert.Less(t, time.Since(start), 20*time.Second)

		// The connection survives the failed request.
		_, err = cl.ReadAt(again[:4096], 0)
		require.NoError(t, err)
		assert.Equal(t, v2[:4096], again[:4096])
		s := r.cache.Stats()
		assert.Positive(t, s.OriginErrors)
		assert.Positive(t, s.ReadErrors)

		// nbdcopy of the whole export fails and says so, rather than hanging or copying holes.
		_, err = nbdcopy(t, nbdcopyProg, r.addr, tag)
		assert.Error(t, err)

		// Failed fetches in a row open the circuit breaker: then cold reads fail at once, and
		// cached ones are still served.
		require.Eventually(t, func() bool {
			cl.ReadAt(got[len(v2)-8192:len(v2)-4096], int64(len(v2)-8192))
			return r.cache.Stats().Breaker == store.BreakerOpen
		}, 60*time.Second, 10*time.Millisecond)
		start = time.Now()
		_, err = cl.ReadAt(got[len(v2)-4096:], int64(len(v2)-4096))
		require.True(t, errors.As(err, &nerr), "a cold read with the breaker open is an NBD error reply, got %v", err)
		t.Logf("with the gateway down: a cold read failed after %v with the breaker open (fetch timeout 2s)", time.Since(start))
		assert.Positive(t, r.cache.Stats().FastFailures)
		_, err = cl.ReadAt(again[:4096], 0)
		require.NoError(t, err)
	})
}
