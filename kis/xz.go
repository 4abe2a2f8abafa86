package kis

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"github.com/ulikunitz/xz"
)

// xzProgram is the xz program found on PATH, or "" when there is none. Where it is installed it
// decompresses several times faster than the pure-Go decoder (and with -T0 on several cores for
// the multi-block files that KIWI's `xz --threads=0` writes), which matters for multi-GB images.
var xzProgram = sync.OnceValue(func() string {
	p, err := exec.LookPath("xz")
	if err != nil {
		return ""
	}
	return p
})

// newXZReader returns a streaming xz decoder over r: the xz program when it is installed, else
// the built-in decoder. name says what is decompressed, in the errors of starting the decoder;
// callers name it in read errors. The caller must Close it; a Close before the end stops the
// decoder.
func newXZReader(ctx context.Context, r io.Reader, name string) (io.ReadCloser, error) {
	return newXZReaderWith(ctx, r, name, xzProgram())
}

// newXZReaderWith decompresses with program (the path of an xz program), or with the built-in
// decoder when program is "".
func newXZReaderWith(ctx context.Context, r io.Reader, name, program string) (io.ReadCloser, error) {
	if program == "" {
		zr, err := xz.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("kis: %s: xz: %w", name, err)
		}
		return io.NopCloser(zr), nil
	}
	p := &xzProcess{ctx: ctx}
	p.cmd = exec.CommandContext(ctx, program, "--decompress", "--stdout", "--threads=0")
	p.cmd.Stdin = r
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("kis: %s: xz: %w", name, err)
	}
	p.out = bufio.NewReaderSize(out, 1<<20)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("kis: %s: starting %s: %w", name, program, err)
	}
	return p, nil
}

// xzProcess reads the output of a running xz program. Its end of data is only reported once the
// program has exited successfully, so a truncated or corrupt input is an error, never a short
// image.
type xzProcess struct {
	ctx    context.Context
	cmd    *exec.Cmd
	out    io.Reader
	stderr bytes.Buffer
	waited bool
	err    error // the program's outcome, once waited
}

func (p *xzProcess) Read(b []byte) (int, error) {
	n, err := p.out.Read(b)
	if err == io.EOF {
		if werr := p.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// Close stops the program if it is still running and reaps it.
func (p *xzProcess) Close() error {
	if !p.waited {
		_ = p.cmd.Process.Kill()
		_ = p.wait()
	}
	return nil
}

func (p *xzProcess) wait() error {
	if p.waited {
		return p.err
	}
	p.waited = true
	err := p.cmd.Wait()
	switch {
	case p.ctx.Err() != nil:
		p.err = p.ctx.Err()
	case err != nil:
		msg := strings.TrimSpace(p.stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg == "" {
			msg = err.Error()
		}
		// Callers name the file; xz's own "/usr/bin/xz: (stdin): " prefix says nothing more.
		if _, m, ok := strings.Cut(msg, "(stdin): "); ok {
			msg = m
		}
		p.err = fmt.Errorf("xz: %s", msg)
	}
	return p.err
}
