// Command netroot serves network boots of KIWI NG KIS images: it stages the kernel and initrd
// into a TFTP root, writes pxelinux/GRUB/iPXE configs with the kiwi-overlay kernel command line,
// and serves TFTP, NBD and AoE. Each server also runs on its own as a drop-in for tftpd-hpa,
// nbd-server and vblade, and the offline steps (stage, pxe, cmdline, inspect) run alone.
//
// With no arguments it runs a self-contained demo on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, env *env, args []string) error
}

var commands = []command{
	{"serve", "stage a KIS build, write boot configs, serve TFTP + NBD (+ AoE)", runServe},
	{"tftp", "serve a directory over TFTP (tftpd-hpa replacement)", runTFTP},
	{"nbd", "serve images over NBD (nbd-server replacement; reads its config file)", runNBD},
	{"aoe", "serve an image over AoE: SHELF SLOT IFACE FILE (vblade replacement)", runAoE},
	{"stage", "copy or link a KIS build's kernel and initrd into a TFTP root", runStage},
	{"pxe", "write pxelinux (and GRUB/iPXE) configs for a network root", runPXE},
	{"cmdline", "print and validate a kiwi-overlay kernel command line", runCmdline},
	{"inspect", "show the KIS builds in a directory: versions, files, sizes, md5 status", runInspect},
	{"image", "publish KIS builds to S3-compatible storage: push, promote, list, gc", runImage},
	{"demo", "the demo that runs when netroot is given no arguments", runDemo},
}

// env is what every command shares: its output streams and the logger made from global flags.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	isTerminal     bool
	verbose        bool
}

// protoLog is the logger handed to a protocol package: everything with -v, otherwise only its
// warnings and errors, since the binary logs one line per boot-relevant event itself.
func (e *env) protoLog(proto string) *slog.Logger {
	l := e.log.With("proto", proto)
	if e.verbose {
		return l
	}
	return slog.New(minLevel{l.Handler(), slog.LevelWarn})
}

// protoBase is protoLog without the proto attribute, for bootserver.Server.ProtocolLogger.
func (e *env) protoBase() *slog.Logger {
	if e.verbose {
		return e.log
	}
	return slog.New(minLevel{e.log.Handler(), slog.LevelWarn})
}

// minLevel drops records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.level && m.Handler.Enabled(ctx, l)
}

func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(a), m.level}
}

func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{m.Handler.WithGroup(name), m.level}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "netroot:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks errors in the command line itself (exit status 2, like flag's).
type usageError struct{ error }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("netroot", flag.ContinueOnError)
	global.SetOutput(stderr)
	logFormat := global.String("log-format", "text", "log format: text or json")
	verbose := global.Bool("v", false, "log protocol detail (debug level)")
	global.Usage = func() { usage(global) }
	if err := parseFlags(global, args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logFormat, *verbose)
	if err != nil {
		return usageError{err}
	}
	e := &env{stdout: stdout, stderr: stderr, log: logger, isTerminal: isTerminal(stdout), verbose: *verbose}
	rest := global.Args()
	if len(rest) == 0 {
		return runDemo(ctx, e, nil)
	}
	for _, c := range commands {
		if c.name == rest[0] {
			return c.run(ctx, e, rest[1:])
		}
	}
	usage(global)
	return usageError{fmt.Errorf("unknown command %q", rest[0])}
}

func usage(global *flag.FlagSet) {
	w := global.Output()
	fmt.Fprintln(w, "usage: netroot [-v] [-log-format text|json] COMMAND [flags] [args]")
	fmt.Fprintln(w, "\nWith no COMMAND, netroot runs a demo on loopback (no root needed).\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'netroot COMMAND -h' for a command's flags.\n\nGlobal flags:")
	global.PrintDefaults()
}

// newFlagSet returns a flag set for a command whose -h prints a one-line synopsis first.
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("netroot "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: netroot %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func newLogger(w io.Writer, format string, verbose bool) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if verbose {
		opts.Level = slog.LevelDebug
	}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}

// parseFlags parses args into fs; a bad flag is a usage error (exit status 2), printed once.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}
