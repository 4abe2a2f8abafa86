package pxecfg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// WritePXELinux writes c as a pxelinux configuration file. It validates c first and writes
// nothing if c is invalid.
func WritePXELinux(w io.Writer, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var b bytes.Buffer
	line := func(kw, args string) {
		if args == "" {
			b.WriteString(kw + "\n")
			return
		}
		b.WriteString(kw + " " + args + "\n")
	}
	if c.Serial != "" {
		line("SERIAL", c.Serial)
	}
	if c.UI != "" {
		line("UI", c.UI)
	}
	if c.Title != "" {
		line("MENU TITLE", c.Title)
	}
	if c.Default != "" {
		line("DEFAULT", c.Default)
	}
	if c.Prompt {
		line("PROMPT", "1")
	}
	if c.Timeout > 0 {
		line("TIMEOUT", strconv.FormatInt(int64(c.Timeout/(100*time.Millisecond)), 10))
	}
	if c.Append != "" {
		line("APPEND", c.Append)
	}
	if c.IPAppend != 0 {
		line("IPAPPEND", strconv.FormatUint(uint64(c.IPAppend), 10))
	}
	for _, d := range c.Directives {
		line(strings.ToUpper(d.Keyword), d.Args)
	}
	for i := range c.Entries {
		e := &c.Entries[i]
		b.WriteString("\n")
		line("LABEL", e.Label)
		ind := func(kw, args string) { b.WriteString("  "); line(kw, args) }
		if e.MenuLabel != "" {
			ind("MENU LABEL", e.MenuLabel)
		}
		if e.MenuDefault {
			ind("MENU DEFAULT", "")
		}
		if e.Kernel != "" {
			kw := strings.ToUpper(e.KernelKeyword)
			if kw == "" {
				kw = "LINUX"
			}
			ind(kw, e.Kernel)
		}
		if len(e.Initrds) > 0 {
			ind("INITRD", strings.Join(e.Initrds, ","))
		}
		switch {
		case e.NoGlobalAppend:
			ind("APPEND", "-")
		case e.Append != "":
			ind("APPEND", e.Append)
		}
		if e.IPAppend != 0 {
			ind("IPAPPEND", strconv.FormatUint(uint64(e.IPAppend), 10))
		}
		for _, d := range e.Directives {
			ind(strings.ToUpper(d.Keyword), d.Args)
		}
		if e.Help != "" {
			ind("TEXT HELP", "")
			b.WriteString(e.Help + "\n")
			b.WriteString("  ENDTEXT\n")
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// ErrInclude reports an INCLUDE in a file read by [Parse], which has no file system to follow
// it in; use [ParseFS].
var ErrInclude = errors.New("pxecfg: INCLUDE needs ParseFS")

// Parse reads a pxelinux configuration. Keywords are case-insensitive; lines starting with '#'
// are comments and are dropped. Global keywords (DEFAULT, TIMEOUT, UI, ...) set the Config
// wherever they appear, as in pxelinux; APPEND, IPAPPEND, INITRD and the kernel keywords belong
// to the latest LABEL, or are global before the first one. An INCLUDE returns an error wrapping
// [ErrInclude].
func Parse(r io.Reader) (*Config, error) {
	p := &parser{}
	if err := p.parse(r, "config", 0); err != nil {
		return nil, err
	}
	return &p.c, nil
}

// ParseFS reads the pxelinux configuration name from fsys, the TFTP root, following INCLUDE
// (and MENU INCLUDE) up to [MaxIncludeDepth] levels. Included files are merged in place, so the
// Config written back is one self-contained file. Include paths are relative to the root of
// fsys, as pxelinux resolves them against its own directory; a leading '/' is ignored.
func ParseFS(fsys fs.FS, name string) (*Config, error) {
	p := &parser{fsys: fsys}
	if err := p.include(name, 0); err != nil {
		return nil, err
	}
	return &p.c, nil
}

type parser struct {
	fsys fs.FS
	c    Config
	// inLabel is whether a LABEL block is being read; the block is the last entry of c.
	inLabel bool
}

func (p *parser) include(name string, depth int) error {
	if depth > MaxIncludeDepth {
		return fmt.Errorf("pxecfg: INCLUDE %q nested deeper than %d levels", name, MaxIncludeDepth)
	}
	clean := path.Clean(strings.TrimPrefix(name, "/"))
	f, err := p.fsys.Open(clean)
	if err != nil {
		return fmt.Errorf("pxecfg: %w", err)
	}
	defer f.Close()
	return p.parse(f, clean, depth)
}

func (p *parser) entry() *Entry {
	if !p.inLabel {
		return nil
	}
	return &p.c.Entries[len(p.c.Entries)-1]
}

func (p *parser) parse(r io.Reader, name string, depth int) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		raw := strings.TrimRight(sc.Text(), "\r")
		s := strings.TrimSpace(raw)
		if s == "" || s[0] == '#' {
			continue
		}
		kw, args := splitKeyword(s)
		errf := func(format string, a ...any) error {
			return fmt.Errorf("pxecfg: %s:%d: "+format, append([]any{name, n}, a...)...)
		}
		if kw == "MENU" {
			sub, rest := splitKeyword(args)
			kw, args = "MENU "+sub, rest
		}
		e := p.entry()
		switch kw {
		case "INCLUDE", "MENU INCLUDE":
			if args == "" {
				return errf("%s without a file name", kw)
			}
			file := strings.Fields(args)[0]
			if p.fsys == nil {
				return fmt.Errorf("%w: %s:%d: INCLUDE %s", ErrInclude, name, n, file)
			}
			if err := p.include(file, depth+1); err != nil {
				return err
			}
		case "LABEL":
			if args == "" {
				return errf("LABEL without a name")
			}
			p.c.Entries = append(p.c.Entries, Entry{Label: args})
			p.inLabel = true
		case "DEFAULT":
			p.c.Default = args
		case "UI":
			p.c.UI = args
		case "SERIAL":
			p.c.Serial = args
		case "MENU TITLE":
			p.c.Title = args
		case "PROMPT":
			v, err := strconv.Atoi(args)
			if err != nil {
				return errf("PROMPT %q is not a number", args)
			}
			p.c.Prompt = v != 0
		case "TIMEOUT":
			v, err := strconv.Atoi(args)
			if err != nil || v < 0 || v > int(MaxTimeout/(100*time.Millisecond)) {
				return errf("TIMEOUT %q is not a number of tenths of a second up to 35996", args)
			}
			p.c.Timeout = time.Duration(v) * 100 * time.Millisecond
		case "APPEND":
			switch {
			case e == nil:
				p.c.Append = args
			case args == "-":
				e.NoGlobalAppend, e.Append = true, ""
			default:
				e.NoGlobalAppend, e.Append = false, args
			}
		case "IPAPPEND", "SYSAPPEND":
			v, err := strconv.ParseUint(args, 0, 32)
			if err != nil {
				return errf("%s %q is not a number", kw, args)
			}
			if e == nil {
				p.c.IPAppend = IPAppend(v)
			} else {
				e.IPAppend = IPAppend(v)
			}
		case "KERNEL", "LINUX", "BOOT", "BSS", "PXE", "FDIMAGE", "COMBOOT", "COM32", "CONFIG":
			if e == nil {
				p.c.Directives = append(p.c.Directives, Directive{Keyword: kw, Args: args})
				continue
			}
			e.KernelKeyword = kw
			if kw == "LINUX" || args == "" {
				e.KernelKeyword = ""
			}
			// Anything after the file name is part of the command (for KERNEL, pxelinux takes
			// it as the command line); keep it whole so nothing is lost.
			e.Kernel = args
		case "INITRD":
			if e == nil {
				p.c.Directives = append(p.c.Directives, Directive{Keyword: kw, Args: args})
				continue
			}
			e.Initrds = nil
			if args != "" {
				e.Initrds = strings.Split(args, ",")
			}
		case "MENU LABEL":
			if e == nil {
				p.c.Directives = append(p.c.Directives, Directive{Keyword: kw, Args: args})
				continue
			}
			e.MenuLabel = args
		case "MENU DEFAULT":
			if e == nil {
				p.c.Directives = append(p.c.Directives, Directive{Keyword: kw, Args: args})
				continue
			}
			e.MenuDefault = true
		case "TEXT":
			var lines []string
			closed := false
			for sc.Scan() {
				n++
				l := strings.TrimRight(sc.Text(), "\r")
				if strings.EqualFold(strings.TrimSpace(l), "ENDTEXT") {
					closed = true
					break
				}
				lines = append(lines, l)
			}
			if !closed {
				return errf("TEXT %s without ENDTEXT", args)
			}
			if e != nil && strings.EqualFold(args, "HELP") {
				e.Help = strings.Join(lines, "\n")
			}
			// Other TEXT blocks are not modelled and are dropped like comments.
		case "ENDTEXT":
			return errf("ENDTEXT without TEXT")
		default:
			d := Directive{Keyword: kw, Args: args}
			if e == nil {
				p.c.Directives = append(p.c.Directives, d)
			} else {
				e.Directives = append(e.Directives, d)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("pxecfg: %s: %w", name, err)
	}
	return nil
}

// splitKeyword splits a line into its upper-cased first word and the trimmed rest.
func splitKeyword(s string) (string, string) {
	s = strings.TrimSpace(s)
	i := strings.IndexAny(s, " \t\v\f")
	if i < 0 {
		return strings.ToUpper(s), ""
	}
	return strings.ToUpper(s[:i]), strings.TrimSpace(s[i+1:])
}
