package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/kis/kistest"
)

// A build without its .md5: serve refuses it, naming the file and -no-verify; with -no-verify
// it is served, with a WARN that it is unverified.
func TestServeBuildWithoutMD5(t *testing.T) {
	kisDir := t.TempDir()
	spec := kistest.Spec{Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(1<<20, 4), Compressed: true}
	b, err := kistest.Write(kisDir, spec)
	require.NoError(t, err)
	require.NoError(t, os.Remove(b.MD5))
	md5 := filepath.Base(b.MD5)

	args := serveArgs(kisDir, t.TempDir(), "-no-bootloader", "-cache-dir", t.TempDir())
	_, stderr, code := runBinary(t, args...)
	assert.NotZero(t, code)
	assert.Contains(t, stderr, "has no md5 file "+md5)
	assert.Contains(t, stderr, "-no-verify serves it unverified")

	p := start(t, append(args, "-no-verify")...)
	p.waitLog(t, `level=WARN msg="root image is NOT verified: the build has no md5 file" build=leap-diskless.x86_64-1.15.3 missing=\S+`+regexp.QuoteMeta(md5))
	p.waitLog(t, `msg="unpacked root image" build=leap-diskless.x86_64-1.15.3 .*bytes=1048576 took=`)
	p.waitLog(t, `msg=ready`)
	assert.Nil(t, p.match(regexp.MustCompile(`root image matches its md5`)), "nothing claims a check that was not made")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
}

// stage shows the unpack steps: progress in uncompressed bytes with rate, the end of the
// decompression, the md5 result; a second run reuses the unpacked image and says why.
func TestStageLogsUnpackSteps(t *testing.T) {
	kisDir := t.TempDir()
	spec := kistest.Spec{Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(2<<20, 4), Compressed: true}
	_, err := kistest.Write(kisDir, spec)
	require.NoError(t, err)
	cache := t.TempDir()
	args := []string{"stage", "-kis", kisDir, "-tftp-root", t.TempDir(), "-cache-dir", cache}
	_, stderr, code := runBinary(t, args...)
	require.Zero(t, code, stderr)
	lines := strings.Split(stderr, "\n")
	find := func(re string) string {
		t.Helper()
		rx := regexp.MustCompile(re)
		var got []string
		for _, l := range lines {
			if rx.MatchString(l) {
				got = append(got, l)
			}
		}
		require.Len(t, got, 1, "one line matching %q in\n%s", re, stderr)
		return got[0]
	}
	find(`msg=unpacking done_bytes=2097152 total_bytes=2097152 mb_per_s=\S+ elapsed=`)
	find(`msg="unpacked root image" .*bytes=2097152 took=\S+ mb_per_s=`)
	find(`msg="root image matches its md5" .*md5=[0-9a-f]{32}`)

	_, stderr, code = runBinary(t, args...)
	require.Zero(t, code, stderr)
	lines = strings.Split(stderr, "\n")
	find(`msg="reusing unpacked root image" .*trusted="its stamp \S+\.kis-unpacked records that it matched md5`)
	for _, l := range lines {
		assert.NotContains(t, l, `msg="unpacked root image"`, "nothing is unpacked again")
	}
}

// inspect fails for a build without .md5, saying what -no-verify does; with it, it passes and
// still says the file is missing.
func TestInspectBuildWithoutMD5(t *testing.T) {
	kisDir := t.TempDir()
	b, err := kistest.Write(kisDir, kistest.Spec{Name: "leap", Version: "1.0.0", Compressed: true})
	require.NoError(t, err)
	require.NoError(t, os.Remove(b.MD5))
	stdout, stderr, code := runBinary(t, "inspect", "-kis", kisDir)
	assert.Equal(t, 1, code, stderr)
	assert.Contains(t, stdout, "MISSING leap.x86_64-1.0.0.md5: serve and stage refuse this build (-no-verify serves it unverified)")
	assert.Contains(t, stderr, "md5 check failed for leap.x86_64-1.0.0")
	stdout, stderr, code = runBinary(t, "inspect", "-kis", kisDir, "-no-verify")
	assert.Zero(t, code, stderr)
	assert.Contains(t, stdout, "MISSING leap.x86_64-1.0.0.md5 (-no-verify serves it unverified)")
}
