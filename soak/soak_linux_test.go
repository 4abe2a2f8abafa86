package soak_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// What the soak states and asserts. Under the race detector the time and memory bounds are
// larger (see raceTimeFactor and raceMemFactor).
const (
	// hostileFor is how long the hostile clients run; legitimate clients run rounds meanwhile.
	hostileFor = 35 * time.Second
	// legitDeadline bounds each legitimate transfer (8 MiB over TFTP, 32 MiB over NBD, 8 MiB
	// over AoE) while the servers are under attack.
	legitDeadline = 20 * time.Second * raceTimeFactor
	// rssBound bounds the server process's resident memory throughout: the default buffer
	// budgets of the NBD and TFTP servers and 192 MiB for everything else (the runtime, the
	// garbage collector's headroom, the TFTP floors beyond its budget).
	rssBound = (nbd.DefaultMaxBufferBytes + tftp.DefaultMaxBufferBytes + 192<<20) * raceMemFactor
	// drainWithin is how long after the hostile clients went the server may take to be back to
	// its descriptors and goroutines before the attack (TFTP gives abandoned transfers
	// serverConfig.tftpMaxIdle).
	drainWithin = 20 * time.Second
	// Slack over the baseline for goroutines (timers, the runtime's) and descriptors.
	goroutineSlack, fdSlack = 8, 2
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envChild); dir != "" {
		runChild(dir)
	}
	os.Exit(m.Run())
}

// child is the server process.
type child struct {
	cmd                *exec.Cmd
	in                 io.WriteCloser
	out                *bufio.Reader
	mu                 sync.Mutex
	tftp, nbd, aoeAddr string
}

func (c *child) stats(t *testing.T) childStats {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := io.WriteString(c.in, "stats\n")
	require.NoError(t, err)
	line, err := c.out.ReadString('\n')
	require.NoError(t, err)
	var st childStats
	require.NoError(t, json.Unmarshal([]byte(line), &st), "%s", line)
	return st
}

// procStatus returns the child's resident memory and open descriptors.
func (c *child) procStatus(t *testing.T) (rss int64, fds int) {
	t.Helper()
	pid := c.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			require.NoError(t, err)
			rss = kb << 10
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return rss, len(ents)
}

// writeRandom writes n random bytes to path and returns their SHA-256.
func writeRandom(t *testing.T, path string, n int, seed uint64) [32]byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return sha256.Sum256(b)
}

// legitResult is one legitimate transfer.
type legitResult struct {
	client string
	took   time.Duration
	err    error
}

func TestSoak(t *testing.T) {
	peertest.Root(t, "network namespaces, veth and AF_PACKET sockets")
	curl := peertest.Program(t, "curl", "curl")
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	nw := newVethPair(t)

	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	sums := map[string][32]byte{
		"tftp": writeRandom(t, filepath.Join(dir, "tftp", "legit.bin"), 8<<20, 1),
		"nbd":  writeRandom(t, filepath.Join(dir, "root.img"), 32<<20, 2),
		"aoe":  writeRandom(t, filepath.Join(dir, "aoe.img"), 8<<20, 3),
	}
	rwInit := writeRandom(t, filepath.Join(dir, "rw.img"), 8<<20, 4)
	writeText(t, filepath.Join(dir, "tftp", "big.txt"), 48<<20)
	require.NoError(t, os.Mkdir(filepath.Join(dir, "cow"), 0o755))

	// The server process.
	cmd := exec.Command(os.Args[0], "-test.run=^TestSoak$")
	cmd.Env = append(os.Environ(), envChild+"="+dir, envNS+"="+nw.nsA, envIf+"="+nw.ifA)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	srv := &child{cmd: cmd, in: in, out: bufio.NewReader(out)}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, err := srv.out.ReadString('\n')
	require.NoError(t, err)
	f := strings.Fields(line)
	require.True(t, len(f) == 4 && f[0] == "ready", "server: %s", line)
	srv.tftp, srv.nbd, srv.aoeAddr = f[1], f[2], f[3]

	// The AoE initiator and a listener for what the target broadcasts, in namespace B.
	ini := newInitiator(t, nw)

	// One round of each legitimate client before the attack, as the baseline.
	work := t.TempDir()
	legit := legitClients{curl: curl, nbdcopy: nbdcopy, srv: srv, work: work, sums: sums, ini: ini}
	for _, r := range legit.round(context.Background()) {
		require.NoError(t, r.err, "%s before the attack", r.client)
	}
	time.Sleep(500 * time.Millisecond)
	base := srv.stats(t)
	_, baseFDs := srv.procStatus(t)
	t.Logf("baseline: %d goroutines, %d descriptors", base.Goroutines, baseFDs)

	// Memory is sampled until the end of the drain.
	var peak int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
				if err != nil {
					continue
				}
				for _, l := range strings.Split(string(b), "\n") {
					if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
						kb, _ := strconv.ParseInt(f[1], 10, 64)
						peak = max(peak, kb<<10)
					}
				}
			}
		}
	}()

	// The attack, with legitimate rounds until it ends.
	ctx, cancel := context.WithTimeout(context.Background(), hostileFor)
	defer cancel()
	h := &hostile{t: t, srv: srv, nw: nw, ini: ini}
	var hw sync.WaitGroup
	h.start(ctx, &hw)
	var results []legitResult
	var mid []childStats
	for rounds := 0; ctx.Err() == nil || rounds == 0; rounds++ {
		results = append(results, legit.round(context.Background())...)
		mid = append(mid, srv.stats(t))
		time.Sleep(200 * time.Millisecond)
	}
	hw.Wait()
	h.closeAll()
	during := srv.stats(t)

	// Every legitimate transfer finished byte-exact, in time.
	perClient := map[string]int{}
	for _, r := range results {
		perClient[r.client]++
		assert.NoError(t, r.err, "%s during the attack", r.client)
		assert.LessOrEqual(t, r.took, legitDeadline, "%s took %v", r.client, r.took)
	}
	t.Logf("legitimate transfers during the attack: %v; slowest %v", perClient, slowest(results))
	for _, c := range []string{"curl tftp", "nbdcopy", "aoe initiator"} {
		assert.Positive(t, perClient[c], "no %s transfer during the attack", c)
	}
	t.Logf("hostile traffic: %s", h.summary())
	t.Logf("tftp: %+v", during.TFTP)
	t.Logf("nbd: refused %v, buffer waits %d, write timeouts %d", during.NBD.Refused, during.NBD.BufferWaits, during.NBD.WriteTimeouts)
	// The budgets held while the attack ran (the TFTP one up to a floor of a few blocks per
	// transfer; see tftp.Server.MaxBufferBytes).
	var nbdPeak, tftpPeak int64
	for _, st := range mid {
		nbdPeak, tftpPeak = max(nbdPeak, st.NBD.BufferedBytes), max(tftpPeak, st.TFTP.BufferedBytes)
		assert.LessOrEqual(t, st.NBD.BufferedBytes, st.NBD.BufferLimit, "NBD buffered bytes")
		assert.LessOrEqual(t, st.TFTP.BufferedBytes, int64(tftp.DefaultMaxBufferBytes+tftp.DefaultMaxTransfers*4*tftp.FloorBlockSize), "TFTP buffered bytes")
	}
	t.Logf("buffered at the end of legitimate rounds: NBD up to %d MiB, TFTP up to %d MiB", nbdPeak>>20, tftpPeak>>20)
	assert.Positive(t, during.NBD.Refused[nbd.RefusedHandshakeLimit], "the idle handshakes from one address met their limit")
	assert.Positive(t, h.idleAttached.Load())
	assert.Equal(t, h.idleAttached.Load(), h.idleCut.Load(), "idle clients of an export with an idle timeout cut after it")
	t.Logf("aoe: %v", during.AoE)
	assert.Positive(t, during.TFTP.Malformed, "the oversized option lists reached the server")
	assert.Positive(t, during.TFTP.RefusedClient+during.TFTP.BudgetShrunk, "the abandoned transfers met a limit")
	assert.LessOrEqual(t, h.maxErrorPacket.Load(), int64(4+200+1), "a TFTP ERROR packet echoed a long name")

	// Defect 8: a cut-off WRITE leaves nothing in a writable plain-file export.
	assert.Equal(t, rwInit, sha256File(t, filepath.Join(dir, "rw.img")), "a cut-off NBD WRITE left its prefix in the export")
	// Defect 6: frames from group addresses are not answered, least of all with sector data to
	// the whole segment.
	assert.Zero(t, h.aoeBroadcastData.Load(), "the AoE target broadcast sector data")
	assert.Positive(t, during.AoE["GroupSource"], "group-source frames were counted")

	// No descriptor or goroutine is left once the hostile clients are gone.
	var now childStats
	var fds int
	deadline := time.Now().Add(drainWithin)
	for {
		now = srv.stats(t)
		_, fds = srv.procStatus(t)
		if (now.Goroutines <= base.Goroutines+goroutineSlack && fds <= baseFDs+fdSlack) || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	close(stopSampling)
	<-sampled
	t.Logf("after the attack: %d goroutines, %d descriptors, %d TFTP transfers, %d NBD connections; peak RSS %d MiB",
		now.Goroutines, fds, now.TFTP.Active, now.NBD.ActiveConnections, peak>>20)
	assert.LessOrEqual(t, now.Goroutines, base.Goroutines+goroutineSlack, "goroutines left after the attack")
	assert.LessOrEqual(t, fds, baseFDs+fdSlack, "descriptors left after the attack")
	assert.Zero(t, now.TFTP.Active)
	assert.Zero(t, now.TFTP.BufferedBytes)
	assert.LessOrEqual(t, peak, int64(rssBound), "server RSS")

	// Defect 4: a SIGKILL leaves no copy-on-write overlay. Written overlays are open now.
	c := h.cowWriters(ctx)
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	killed = true
	for _, cc := range c {
		cc.Close()
	}
	ents, err := os.ReadDir(filepath.Join(dir, "cow"))
	require.NoError(t, err)
	assert.Empty(t, ents, "copy-on-write overlays outlived the server")
}

func slowest(rs []legitResult) time.Duration {
	var d time.Duration
	for _, r := range rs {
		d = max(d, r.took)
	}
	return d
}

func sha256File(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// writeText writes n bytes of text lines (netascii doubles each line end).
func writeText(t *testing.T, path string, n int) {
	t.Helper()
	line := []byte("kernel /boot/linux root=overlay:nbd=192.0.2.1:10809:root rd.kiwi.debug\n")
	b := make([]byte, 0, n)
	for len(b)+len(line) <= n {
		b = append(b, line...)
	}
	require.NoError(t, os.WriteFile(path, b, 0o644))
}
