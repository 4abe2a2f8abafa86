package soak_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// legitClients are the clients whose service the soak protects; each round runs one transfer
// of each at once.
type legitClients struct {
	curl, nbdcopy string
	srv           *child
	work          string
	sums          map[string][32]byte
	ini           *initiator
}

func (l *legitClients) round(ctx context.Context) []legitResult {
	jobs := []struct {
		name string
		run  func(ctx context.Context) ([32]byte, error)
		sum  [32]byte
	}{
		{"curl tftp", l.curlTFTP, l.sums["tftp"]},
		{"nbdcopy", l.nbdCopy, l.sums["nbd"]},
		{"aoe initiator", l.ini.readAll, l.sums["aoe"]},
	}
	res := make([]legitResult, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Twice the deadline: a transfer that is slow is reported as slow, not as failed.
			ctx, cancel := context.WithTimeout(ctx, 2*legitDeadline)
			defer cancel()
			start := time.Now()
			sum, err := j.run(ctx)
			if err == nil && sum != j.sum {
				err = errors.New("content differs")
			}
			res[i] = legitResult{client: j.name, took: time.Since(start), err: err}
		}()
	}
	wg.Wait()
	return res
}

// sumOutput runs a peer that writes the data to stdout and returns its SHA-256.
func sumOutput(ctx context.Context, name string, args ...string) ([32]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return [32]byte{}, err
	}
	if err := cmd.Start(); err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	_, cerr := io.Copy(h, out)
	if err := cmd.Wait(); err != nil {
		return [32]byte{}, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	if cerr != nil {
		return [32]byte{}, cerr
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, nil
}

// curlTFTP fetches legit.bin from 127.0.0.2, an address no hostile client uses: per-client
// limits must leave it its share.
func (l *legitClients) curlTFTP(ctx context.Context) ([32]byte, error) {
	return sumOutput(ctx, l.curl, "-sS", "--interface", "127.0.0.2", "--tftp-blksize", "1468",
		"tftp://"+l.srv.tftp+"/legit.bin")
}

func (l *legitClients) nbdCopy(ctx context.Context) ([32]byte, error) {
	return sumOutput(ctx, l.nbdcopy, "nbd://"+l.srv.nbd+"/root", "-")
}
