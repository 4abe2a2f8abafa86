package kis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/netroot/netroot/internal/atomicfile"
)

// Default places of kernel and initrd inside the TFTP root, as in KIWI's PXE documentation.
const (
	DefaultKernelPath = "boot/linux"
	DefaultInitrdPath = "boot/initrd"
)

// StageOptions configures Stage. A nil *StageOptions means the zero value.
type StageOptions struct {
	// Kernel and Initrd are the slash-separated paths, relative to the TFTP root, the files
	// are staged at. Empty means DefaultKernelPath and DefaultInitrdPath.
	Kernel, Initrd string

	// PerBuild puts the files into a folder named after the build, next to where they would
	// go otherwise (boot/NAME.ARCH-VERSION/linux), so several builds can be served side by
	// side.
	PerBuild bool

	// NoLink forbids hard links: the TFTP root then gets a reflink or a copy even on the
	// build's file system.
	NoLink bool
}

// Method is how Stage put a file in place.
type Method string

// The ways Stage puts a file in place.
const (
	Unchanged Method = "unchanged" // the staged file already had the same content
	Linked    Method = "link"      // hard link to the build's file
	Reflinked Method = "reflink"   // copy-on-write clone (FICLONE)
	Copied    Method = "copy"      // byte copy
)

// StagedFile is one file Stage put into the TFTP root.
type StagedFile struct {
	Source string // the build's file
	Path   string // slash-separated path relative to the TFTP root, as a boot config names it
	File   string // the staged file on disk
	Size   int64
	Method Method
}

// Staged is what Stage put into the TFTP root.
type Staged struct {
	Build  string // NAME.ARCH-VERSION
	Kernel StagedFile
	Initrd StagedFile
}

// Stage puts the build's kernel and initrd into tftpRoot where the boot configuration will point
// (boot/linux and boot/initrd unless opts say otherwise). Each file is hard linked when the
// TFTP root is on the build's file system, else reflinked, else copied; always through a
// temporary file renamed into place, so a TFTP client never sees half a file. A staged file that
// already has the same content is left alone. The build must have its kernel and initrd as
// loose files ([Unpack] extracts them from a bundle).
func Stage(ctx context.Context, b Build, tftpRoot string, opts *StageOptions) (Staged, error) {
	var o StageOptions
	if opts != nil {
		o = *opts
	}
	if o.Kernel == "" {
		o.Kernel = DefaultKernelPath
	}
	if o.Initrd == "" {
		o.Initrd = DefaultInitrdPath
	}
	if o.PerBuild {
		o.Kernel = path.Join(path.Dir(o.Kernel), b.ID(), path.Base(o.Kernel))
		o.Initrd = path.Join(path.Dir(o.Initrd), b.ID(), path.Base(o.Initrd))
	}
	var missing []string
	if b.Kernel == "" {
		missing = append(missing, "kernel")
	}
	if b.Initrd == "" {
		missing = append(missing, "initrd")
	}
	if len(missing) > 0 {
		have := present(b)
		if b.Bundle != "" {
			have = append(have, "bundle "+filepath.Base(b.Bundle)+" (Unpack extracts it)")
		}
		return Staged{}, fmt.Errorf("kis: cannot stage build %s: no loose %s (found %s)",
			b.ID(), strings.Join(missing, " and "), listOrNone(have))
	}
	for _, p := range []string{o.Kernel, o.Initrd} {
		if !filepath.IsLocal(filepath.FromSlash(p)) || strings.Contains(p, `\`) {
			return Staged{}, fmt.Errorf("kis: staging path %q is not a relative path inside the TFTP root", p)
		}
	}
	if path.Clean(o.Kernel) == path.Clean(o.Initrd) {
		return Staged{}, fmt.Errorf("kis: kernel and initrd staging paths are both %q", o.Kernel)
	}
	s := Staged{Build: b.ID()}
	var err error
	if s.Kernel, err = stageFile(ctx, b.Kernel, tftpRoot, path.Clean(o.Kernel), o.NoLink); err != nil {
		return Staged{}, err
	}
	if s.Initrd, err = stageFile(ctx, b.Initrd, tftpRoot, path.Clean(o.Initrd), o.NoLink); err != nil {
		return Staged{}, err
	}
	return s, nil
}

func stageFile(ctx context.Context, src, root, rel string, noLink bool) (StagedFile, error) {
	if err := ctx.Err(); err != nil {
		return StagedFile{}, err
	}
	dst := filepath.Join(root, filepath.FromSlash(rel))
	sf := StagedFile{Source: src, Path: rel, File: dst}
	sst, err := os.Stat(src)
	if err != nil {
		return StagedFile{}, fmt.Errorf("kis: %w", err)
	}
	if !sst.Mode().IsRegular() {
		return StagedFile{}, fmt.Errorf("kis: %s is not a regular file (mode %s)", src, sst.Mode())
	}
	sf.Size = sst.Size()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return StagedFile{}, fmt.Errorf("kis: %w", err)
	}
	if dst, err := os.Stat(dst); err == nil {
		if os.SameFile(sst, dst) {
			sf.Method = Unchanged
			return sf, nil
		}
		if dst.Mode().IsRegular() && dst.Size() == sst.Size() {
			same, err := sameContent(ctx, src, sf.File)
			if err != nil {
				return StagedFile{}, err
			}
			if same {
				sf.Method = Unchanged
				return sf, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return StagedFile{}, fmt.Errorf("kis: %w", err)
	}

	if !noLink && atomicfile.Link(src, dst) == nil {
		sf.Method = Linked
		return sf, nil
	}
	if sf.Method, err = cloneOrCopy(ctx, src, dst, sst); err != nil {
		return StagedFile{}, err
	}
	return sf, nil
}

// cloneOrCopy writes a reflink or a copy of src to dst through a temporary file.
func cloneOrCopy(ctx context.Context, src, dst string, sst os.FileInfo) (m Method, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("kis: %w", err)
	}
	defer in.Close()
	tmp, err := atomicfile.Create(dst, 0o644)
	if err != nil {
		return "", fmt.Errorf("kis: %w", err)
	}
	defer tmp.Abort()
	m = Reflinked
	if reflink(tmp.File, in) != nil {
		m = Copied
		if _, err := io.Copy(tmp, &ctxReader{ctx: ctx, r: in}); err != nil {
			return "", fmt.Errorf("kis: copying %s to %s: %w", src, dst, err)
		}
	}
	tmp.SetModTime(sst.ModTime())
	if err := tmp.Commit(); err != nil {
		return "", fmt.Errorf("kis: %w", err)
	}
	return m, nil
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// sameContent compares two files of equal size byte by byte.
func sameContent(ctx context.Context, a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, fmt.Errorf("kis: %w", err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, fmt.Errorf("kis: %w", err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == ea, nil
		}
		if ea != nil {
			return false, fmt.Errorf("kis: %w", ea)
		}
		if eb != nil {
			return false, fmt.Errorf("kis: %w", eb)
		}
	}
}
