package main_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/store"
	"github.com/netroot/netroot/store/storetest"
)

// imageCmd runs `netroot image ARGS` with the credentials in the environment and returns its
// output and exit status.
func imageCmd(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"image"}, args...)...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+storetest.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+storetest.SecretAccessKey,
		"AWS_ENDPOINT_URL_S3=", "AWS_ENDPOINT_URL=", "AWS_REGION=", "AWS_DEFAULT_REGION=")
	cmd.Env = append(cmd.Env, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return o.String(), e.String(), code
}

func TestImageCommands(t *testing.T) {
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "lab")
	ctx := context.Background()
	build := func(version string, seed uint64) string {
		dir := t.TempDir()
		_, err := kistest.Write(dir, kistest.Spec{Version: version, Image: kistest.Image(3<<20, seed), Compressed: true, Append: "root=UUID=1 quiet"})
		require.NoError(t, err)
		return dir
	}

	// Endpoint by flag.
	out, errOut, code := imageCmd(t, nil, "push", "-endpoint", srv.URL, "-chunk-size", "262144", build("1.0.0", 1), "s3://images/lab")
	require.Zero(t, code, errOut)
	assert.Contains(t, out, "pushed netroot-test.x86_64-1.0.0 to s3://images/lab")
	assert.Contains(t, out, "image 3.0 MiB in 12 chunks of 256.0 KiB")
	assert.Contains(t, out, "tag netroot-test.x86_64 -> netroot-test.x86_64-1.0.0")

	// Endpoint from the environment; no tag moved.
	env := []string{"AWS_ENDPOINT_URL_S3=" + srv.URL}
	out, errOut, code = imageCmd(t, env, "push", "-no-tag", build("1.0.1", 2), "s3://images/lab")
	require.Zero(t, code, errOut)
	assert.Contains(t, out, "no tag moved; to boot it: netroot image promote s3://images/lab TAG netroot-test.x86_64-1.0.1")
	tag, err := st.Tag(ctx, "netroot-test.x86_64")
	require.NoError(t, err)
	assert.Equal(t, "netroot-test.x86_64-1.0.0", tag.Build)

	out, errOut, code = imageCmd(t, env, "list", "s3://images/lab")
	require.Zero(t, code, errOut)
	assert.Regexp(t, `netroot-test\.x86_64\s+netroot-test\.x86_64-1\.0\.0\s+[0-9a-f]{12}`, out)
	assert.Regexp(t, `[0-9a-f]{12}\s+netroot-test\.x86_64-1\.0\.1\s+3\.0 MiB\s+1\.0 MiB\s+\S+\s+-`, out)

	out, errOut, code = imageCmd(t, env, "promote", "s3://images/lab", "netroot-test.x86_64", "netroot-test.x86_64-1.0.1")
	require.Zero(t, code, errOut)
	assert.Contains(t, out, "tag netroot-test.x86_64: netroot-test.x86_64-1.0.0 -> netroot-test.x86_64-1.0.1")
	tag, err = st.Tag(ctx, "netroot-test.x86_64")
	require.NoError(t, err)
	assert.Equal(t, "netroot-test.x86_64-1.0.1", tag.Build)

	out, errOut, code = imageCmd(t, env, "gc", "-prune", "-dry-run", "s3://images/lab")
	require.Zero(t, code, errOut)
	assert.Contains(t, out, "would delete 0 chunks")
	out, errOut, code = imageCmd(t, env, "gc", "-prune", "-grace", "1ns", "s3://images/lab")
	require.Zero(t, code, errOut)
	assert.Regexp(t, `deleted manifest [0-9a-f]{64}\n`, out)
	assert.Regexp(t, `deleted [1-9][0-9]* chunks`, out)
	l, err := st.List(ctx)
	require.NoError(t, err)
	require.Len(t, l.Manifests, 1)
	assert.Equal(t, "netroot-test.x86_64-1.0.1", l.Manifests[0].Manifest.Build)

	// A build that fails verification is refused.
	bad := build("2.0.0", 3)
	require.NoError(t, os.WriteFile(filepath.Join(bad, "netroot-test.x86_64-2.0.0.md5"), []byte(kistest.Checksum([]byte("other"), -1)), 0o644))
	_, errOut, code = imageCmd(t, env, "push", bad, "s3://images/lab")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "fails verification")
	tag, err = st.Tag(ctx, "netroot-test.x86_64")
	require.NoError(t, err)
	assert.Equal(t, "netroot-test.x86_64-1.0.1", tag.Build)

	// Usage errors exit with status 2.
	for _, args := range [][]string{{"push", bad}, {"bogus"}, {"list", "http://x/y"}, {"gc", "-grace", "0s", "s3://images"}} {
		_, _, code := imageCmd(t, env, args...)
		assert.Equal(t, 2, code, "%q", args)
	}
	_, _, code = imageCmd(t, env, "list", "s3://missing-bucket")
	assert.Equal(t, 1, code)
}

// TestServeFromStore runs `netroot serve -store`: a replica whose only storage is the object
// store serves a pushed build over NBD and TFTP, and follows a promotion.
func TestServeFromStore(t *testing.T) {
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "lab")
	dir := t.TempDir()
	img1 := kistest.Image(2<<20, 4)
	_, err := kistest.Write(dir, kistest.Spec{Name: "leap", Version: "1.0.0", Image: img1, Append: "root=UUID=1 rd.kiwi.custom=1"})
	require.NoError(t, err)
	ctx := context.Background()
	_, err = st.Push(ctx, dir, &store.PushOptions{ChunkSize: 256 << 10})
	require.NoError(t, err)

	cmd := exec.Command(binary, "serve", "-store", "s3://images/lab", "-tftp-root", t.TempDir(), "-server-ip", "127.0.0.1",
		"-tftp-addr", "127.0.0.1:0", "-nbd-addr", "127.0.0.1:0", "-allow-nonstandard-nbd-port", "-no-bootloader", "-watch", "100ms")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+storetest.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+storetest.SecretAccessKey,
		"AWS_ENDPOINT_URL_S3="+srv.URL, "AWS_REGION=")
	p := startCmd(t, cmd)
	nbdAddr := p.waitLog(t, `msg="nbd listening" addr=(\S+)`)[1]
	p.waitLog(t, `msg=ready`)

	read := func(export string) []byte {
		t.Helper()
		c, err := nbd.Dial(ctx, "tcp", nbdAddr, nil)
		require.NoError(t, err)
		defer c.Close()
		info, err := c.Go(ctx, export)
		require.NoError(t, err)
		b := make([]byte, info.Size)
		_, err = c.ReadAt(b, 0)
		require.NoError(t, err)
		return b
	}
	assert.True(t, bytes.Equal(img1, read("leap.x86_64-1.0.0")))

	// A promotion reaches the replica by its watch, without a restart.
	dir2 := t.TempDir()
	img2 := kistest.Image(2<<20, 5)
	_, err = kistest.Write(dir2, kistest.Spec{Name: "leap", Version: "1.1.0", Image: img2})
	require.NoError(t, err)
	_, err = st.Push(ctx, dir2, &store.PushOptions{ChunkSize: 256 << 10})
	require.NoError(t, err)
	p.waitLog(t, `leap\.x86_64-1\.1\.0`)
	require.Eventually(t, func() bool { return bytes.Equal(img2, read("")) }, 10*time.Second, 50*time.Millisecond)

	// -kis and -store exclude each other.
	_, _, code := imageCmdServe(t, "serve", "-store", "s3://images/lab", "-kis", dir, "-server-ip", "127.0.0.1")
	assert.Equal(t, 2, code)
}

func imageCmdServe(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode()
	}
	require.NoError(t, err)
	return o.String(), e.String(), 0
}
