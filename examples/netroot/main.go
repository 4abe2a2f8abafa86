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
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/netroot/netroot/bootserver"
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
	{"version", "print the version and VCS revision of this binary", runVersion},
	{"help", "show the commands, or a command's flags: help [COMMAND]", nil},
}

// defaultTFTPRoot is the TFTP root of every command that takes one (-tftp-root).
const defaultTFTPRoot = "/srv/tftpboot"

// env is what every command shares: its output streams and the logger made from global flags.
type env struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	isTerminal     bool
	verbose        bool
	// globals are the global flags' values; they may also follow the command's name, so every
	// command's flag set carries them too and the logger is made again after it is parsed.
	globals globalFlags
}

// globalFlags are the flags every command takes.
type globalFlags struct {
	logFormat string
	logLevel  string
	verbose   bool
	version   bool
}

func (g *globalFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.logFormat, "log-format", g.logFormat, "global: log format: text or json")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "global: least severe log level: debug, info, warn or error")
	fs.BoolVar(&g.verbose, "v", g.verbose, "global: log protocol detail too (implies -log-level debug)")
}

// applyGlobals makes e's logger from its global flags.
func (e *env) applyGlobals() error {
	logger, err := newLogger(e.stderr, e.globals.logFormat, e.globals.logLevel, e.globals.verbose)
	if err != nil {
		return usageError{err}
	}
	e.log, e.verbose = logger, e.globals.verbose
	return nil
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
			var u commandUsageError
			if errors.As(err, &u) {
				fmt.Fprintf(os.Stderr, "Run 'netroot %s -h' for its usage.\n", u.cmd)
			}
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks errors in the command line itself (exit status 2, like flag's).
type usageError struct{ error }

// commandUsageError is a usageError of command cmd, whose help shows the right usage.
type commandUsageError struct {
	err usageError
	cmd string
}

func (c commandUsageError) Error() string { return c.err.Error() }
func (c commandUsageError) Unwrap() error { return c.err }

// cmdUsage returns err as a usage error of command cmd.
func cmdUsage(cmd string, err error) error {
	if cmd == "" {
		return usageError{err}
	}
	return commandUsageError{usageError{err}, cmd}
}

// exitCode is 0 for a help request (help goes to stdout), 2 for a usage error, 1 otherwise.
func exitCode(err error) int {
	var u usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	e := &env{stdout: stdout, stderr: stderr, isTerminal: isTerminal(stdout),
		globals: globalFlags{logFormat: "text", logLevel: "info"}}
	global := flag.NewFlagSet("netroot", flag.ContinueOnError)
	e.globals.register(global)
	global.BoolVar(&e.globals.version, "version", false, "print the version and exit")
	if err := parse(e, global, "", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, global)
		}
		return err
	}
	if err := e.applyGlobals(); err != nil {
		return err
	}
	if e.globals.version {
		return runVersion(ctx, e, nil)
	}
	rest := global.Args()
	if len(rest) == 0 {
		return runDemo(ctx, e, nil)
	}
	if rest[0] == "help" {
		return runHelp(ctx, e, global, rest[1:])
	}
	if c := lookupCommand(rest[0]); c != nil {
		return c.run(ctx, e, rest[1:])
	}
	msg := fmt.Sprintf("unknown command %q", rest[0])
	names := make([]string, 0, len(commands))
	for _, c := range commands {
		names = append(names, c.name)
	}
	if s := suggest(rest[0], names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return usageError{errors.New(msg + "; run 'netroot help' for the list")}
}

func lookupCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name && commands[i].run != nil {
			return &commands[i]
		}
	}
	return nil
}

// runHelp prints the commands, or a command's flags (as COMMAND -h does), to stdout.
func runHelp(ctx context.Context, e *env, global *flag.FlagSet, args []string) error {
	switch {
	case len(args) == 0:
		usage(e.stdout, global)
		return nil
	case len(args) > 1:
		return usageError{fmt.Errorf("help: unexpected arguments %q; want at most one COMMAND", args[1:])}
	}
	if args[0] == "help" {
		usage(e.stdout, global)
		return nil
	}
	c := lookupCommand(args[0])
	if c == nil {
		return usageError{fmt.Errorf("help: unknown command %q; run 'netroot help' for the list", args[0])}
	}
	err := c.run(ctx, e, []string{"-h"})
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// runVersion prints the module version, VCS revision and Go version of this binary.
func runVersion(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "version", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	version, revision, goversion := bootserver.BinaryVersion()
	fmt.Fprintf(e.stdout, "netroot %s (revision %s, %s)\n", version, revision, goversion)
	return nil
}

func usage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprintln(w, "usage: netroot [global flags] COMMAND [flags] [args]")
	fmt.Fprintln(w, "\nWith no COMMAND, netroot runs a demo on loopback (no root needed).\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'netroot help COMMAND' or 'netroot COMMAND -h' for a command's flags.")
	fmt.Fprintln(w, "Global flags (also accepted after COMMAND):")
	global.SetOutput(w)
	global.PrintDefaults()
	global.SetOutput(io.Discard)
}

// flagSetInfo is what parseFlags needs to know of a command's flag set.
type flagSetInfo struct {
	e        *env
	name     string
	synopsis string
	// args allows positional arguments (the command checks their number itself).
	args bool
}

// flagSets maps each command's flag set to its flagSetInfo. The command functions call
// parseFlags(fs, args) with only the flag set; this keeps their signature small.
var flagSets sync.Map // *flag.FlagSet → *flagSetInfo

// newFlagSet returns a flag set for a command, with the global flags, whose -h prints the
// synopsis and the flags to stdout. Positional arguments are refused unless allowArgs(fs) is
// called (the synopsis then names them).
func newFlagSet(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("netroot "+name, flag.ContinueOnError)
	e.globals.register(fs)
	flagSets.Store(fs, &flagSetInfo{e: e, name: name, synopsis: synopsis})
	return fs
}

// allowArgs lets fs's command take positional arguments.
func allowArgs(fs *flag.FlagSet) {
	if v, ok := flagSets.Load(fs); ok {
		v.(*flagSetInfo).args = true
	}
}

// parseFlags parses a command's args into fs (see newFlagSet): -h prints the command's help to
// stdout (and returns flag.ErrHelp: exit status 0); a bad flag or an unexpected argument is a
// usage error (exit status 2), reported once, with a suggestion for a misspelt flag; global
// flags given after the command take effect.
func parseFlags(fs *flag.FlagSet, args []string) error {
	v, ok := flagSets.Load(fs)
	if !ok {
		return parse(nil, fs, "", args)
	}
	info := v.(*flagSetInfo)
	if err := parse(info.e, fs, info.name, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			w := info.e.stdout
			fmt.Fprintf(w, "usage: netroot %s %s\n\nFlags:\n", info.name, info.synopsis)
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
		return err
	}
	if !info.args && fs.NArg() > 0 {
		return cmdUsage(info.name, fmt.Errorf("%s: unexpected argument %q (flags go before arguments; this command takes none)", info.name, fs.Arg(0)))
	}
	return info.e.applyGlobals()
}

// parse runs fs.Parse without flag's own printing and turns its errors into usage errors
// that name the command and suggest the closest flag.
func parse(e *env, fs *flag.FlagSet, cmd string, args []string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		msg = fmt.Sprintf("unknown flag -%s", name)
		if s := suggest(name, names); s != "" {
			msg += fmt.Sprintf(" (did you mean -%s?)", s)
		}
	}
	if cmd != "" {
		msg = cmd + ": " + msg
	}
	return cmdUsage(cmd, errors.New(msg))
}

// suggest returns the candidate closest to s by edit distance, when it is close enough to be
// a likely misspelling ("" otherwise).
func suggest(s string, candidates []string) string {
	best, bestD := "", 0
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(1, len(s)/3) {
		return ""
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b: insertions,
// deletions, substitutions and swaps of neighbouring characters count one each.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// readableAttr writes durations as text ("1.5s", not nanoseconds in JSON) and client
// addresses that arrived on a dual-stack socket as IPv4 (192.0.2.7, not ::ffff:192.0.2.7).
func readableAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindDuration:
		return slog.String(a.Key, a.Value.Duration().String())
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case netip.AddrPort:
			return slog.String(a.Key, netip.AddrPortFrom(v.Addr().Unmap(), v.Port()).String())
		case netip.Addr:
			return slog.String(a.Key, v.Unmap().String())
		case *net.TCPAddr:
			if v != nil {
				return slog.String(a.Key, netip.AddrPortFrom(v.AddrPort().Addr().Unmap(), v.AddrPort().Port()).String())
			}
		case *net.UDPAddr:
			if v != nil {
				return slog.String(a.Key, netip.AddrPortFrom(v.AddrPort().Addr().Unmap(), v.AddrPort().Port()).String())
			}
		}
	}
	return a
}

func newLogger(w io.Writer, format, level string, verbose bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	if verbose {
		lv = min(lv, slog.LevelDebug)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: readableAttr}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}
