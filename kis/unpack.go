package kis

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/netroot/netroot/internal/atomicfile"
)

// UnpackOptions configures Unpack. A nil *UnpackOptions means the zero value.
type UnpackOptions struct {
	// Dir is where unpacked files are written. Empty means the build's own directory, next to
	// the compressed image or bundle.
	Dir string

	// Progress, when not nil, is called now and then with the bytes done so far and the
	// total: for a bundle the bytes of it read, for an .xz image the uncompressed bytes written
	// out of the image's size (from the .md5, else from the .xz index; -1 when neither says), for
	// a reused image the bytes checked against the .md5. Counting restarts at 0 for each step;
	// each step's last call has done == total, and comes when the step has ended (for an .xz,
	// when the decompressor has finished).
	Progress func(done, total int64)

	// NoVerify unpacks a build that has no .md5 file, unchecked (with a warning to Logger);
	// without it such a build is an error wrapping ErrNoChecksum. An .md5 that is there is
	// always checked against what is unpacked.
	NoVerify bool

	// Logger receives a line when a cached unpacked image is reused (and why it is trusted),
	// when decompression ends (bytes, duration, rate), with the md5 result, and a warning for an
	// unverified image. nil means silent.
	Logger *slog.Logger
}

// stampSuffix names the small file that records which .md5 an unpacked raw image was checked
// against, so a later Unpack can reuse the image without reading it again.
const stampSuffix = ".kis-unpacked"

// bundleStampSuffix names the file that records which bundle was extracted, and into what.
const bundleStampSuffix = ".kis-bundle"

// Unpack makes the build usable for serving and returns it with Image set to the raw root image
// an NBD or AoE export needs.
//
// A build that only has its bundle is extracted first (kernel, initrd, .md5, image and
// .append land in the target directory and the returned Build points at them). A compressed
// image is decompressed as a stream into NAME.ARCH-VERSION in the target directory, written
// sparsely (zero blocks become holes), checked against the .md5 while it is written and put in
// place atomically. Work done once is reused: the bundle is not extracted again while it is
// unchanged, and an existing raw image is kept when it matches the .md5 (a small
// NAME.ARCH-VERSION.kis-unpacked file records the check, so it is not repeated for an
// unchanged image). A raw image that does not match is replaced.
//
// Because Unpack checks every image it writes or reuses against the .md5, calling [Verify]
// first is only worth it for a build that has a raw image and no compressed one: such a build
// is returned as it is. The returned Build keeps the paths of files that needed no unpacking,
// so its Image may lie in opts.Dir while its kernel stays in the build directory.
func Unpack(ctx context.Context, b Build, opts *UnpackOptions) (Build, error) {
	var o UnpackOptions
	if opts != nil {
		o = *opts
	}
	if o.Dir == "" {
		o.Dir = b.Dir
	}
	for _, p := range []string{b.CompressedImage, b.Bundle} {
		if o.Dir == "" && p != "" {
			o.Dir = filepath.Dir(p)
		}
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return Build{}, fmt.Errorf("kis: %w", err)
	}
	if !b.Loose() || b.MD5 == "" && b.Bundle != "" {
		if b.Bundle == "" {
			return Build{}, fmt.Errorf("kis: build %s in %s has neither all of kernel, initrd and image (%s) nor a bundle to unpack",
				b.ID(), b.Dir, listOrNone(present(b)))
		}
		var err error
		if b, err = extractBundle(ctx, b, o); err != nil {
			return Build{}, err
		}
	}
	var c *Checksum
	if b.MD5 != "" {
		sum, err := ReadChecksum(b.MD5)
		if err != nil {
			return Build{}, err
		}
		c = &sum
	} else if !o.NoVerify {
		return Build{}, noChecksum(b)
	} else if o.Logger != nil {
		o.Logger.Warn("root image is NOT verified: the build has no md5 file", "build", b.ID(),
			"missing", filepath.Join(b.Dir, b.ID()+".md5"))
	}
	if b.CompressedImage == "" {
		return b, nil
	}
	raw := filepath.Join(o.Dir, b.ID())
	if why, err := reusable(ctx, raw, c, b.CompressedImage, o.Progress); err != nil {
		return Build{}, err
	} else if why != "" {
		if o.Logger != nil {
			o.Logger.Info("reusing unpacked root image", "build", b.ID(), "image", raw, "trusted", why)
		}
		b.Image = raw
		return b, nil
	}
	if err := decompressImage(ctx, b, raw, c, o); err != nil {
		return Build{}, err
	}
	b.Image = raw
	return b, nil
}

// UnpackImage is Unpack for callers that need only the path of the raw root image.
func UnpackImage(ctx context.Context, b Build, opts *UnpackOptions) (string, error) {
	b, err := Unpack(ctx, b, opts)
	if err != nil {
		return "", err
	}
	return b.Image, nil
}

func present(b Build) []string {
	var s []string
	for _, p := range [][2]string{{"kernel", b.Kernel}, {"initrd", b.Initrd}, {"image", b.Image},
		{"compressed image", b.CompressedImage}, {"md5", b.MD5}} {
		if p[1] != "" {
			s = append(s, p[0]+" "+filepath.Base(p[1]))
		}
	}
	return s
}

// stamp is the content of a .kis-unpacked file for an image checked against c.
func stamp(c Checksum, st os.FileInfo) string {
	return fmt.Sprintf("%s %d %d\n", c.Sum(), st.Size(), st.ModTime().UnixNano())
}

// uncheckedStamp is the content of a .kis-unpacked file for an image decompressed from src
// without an .md5: it can only say where the image came from.
func uncheckedStamp(src string, st os.FileInfo) (string, error) {
	sst, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("kis: %w", err)
	}
	return fmt.Sprintf("unchecked %s %d %d %d %d\n", filepath.Base(src), sst.Size(), sst.ModTime().UnixNano(),
		st.Size(), st.ModTime().UnixNano()), nil
}

// reusable says why raw may be used as the image unpacked from src: it matches c (its stamp
// says so, or a check now does), or without c its stamp says it was unpacked from src as it is
// now. "" means raw must be unpacked again.
func reusable(ctx context.Context, raw string, c *Checksum, src string, progress func(done, total int64)) (string, error) {
	st, err := os.Stat(raw)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("kis: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", nil
	}
	s, _ := os.ReadFile(raw + stampSuffix)
	if c == nil {
		want, err := uncheckedStamp(src, st)
		if err != nil {
			return "", err
		}
		if string(s) == want {
			return fmt.Sprintf("its stamp %s records that it was unpacked from %s as that file is now (size and modification time); there is no md5 to check it against",
				raw+stampSuffix, filepath.Base(src)), nil
		}
		return "", nil
	}
	if st.Size() != c.Size() {
		return "", nil
	}
	if string(s) == stamp(*c, st) {
		return fmt.Sprintf("its stamp %s records that it matched md5 %s at this size and modification time", raw+stampSuffix, c.Sum()), nil
	}
	err = verifyFile(ctx, raw, *c, false, progress)
	if errors.Is(err, ErrChecksum) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if err := writeStamp(raw, c, src); err != nil {
		return "", err
	}
	return fmt.Sprintf("it matches md5 %s (checked now)", c.Sum()), nil
}

// writeStamp records that raw matches c, or without c that it was unpacked from src.
func writeStamp(raw string, c *Checksum, src string) error {
	st, err := os.Stat(raw)
	if err != nil {
		return fmt.Errorf("kis: %w", err)
	}
	var s string
	if c != nil {
		s = stamp(*c, st)
	} else if s, err = uncheckedStamp(src, st); err != nil {
		return err
	}
	return writeAtomic(raw+stampSuffix, []byte(s))
}

// writeAtomic writes a small file through a temporary file and a rename.
func writeAtomic(path string, data []byte) error {
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("kis: %w", err)
	}
	return nil
}

// decompressImage streams the .xz image of b into raw, checking it against c (when not nil) on
// the way, and logs the outcome to o.Logger.
func decompressImage(ctx context.Context, b Build, raw string, c *Checksum, o UnpackOptions) error {
	src := b.CompressedImage
	f, in, err := openProgress(ctx, src, nil)
	if err != nil {
		return err
	}
	defer f.Close()
	total := int64(-1)
	if c != nil {
		if err := checkCompressedSize(src, in.total, *c); err != nil {
			return err
		}
		total = c.Size()
	} else if n, ok := xzUncompressedSize(f, in.total); ok {
		total = n
	}
	zr, err := newXZReader(ctx, in, src)
	if err != nil {
		return err
	}
	defer zr.Close()
	start := time.Now()
	out := &progressReader{ctx: ctx, r: zr, total: total, progress: o.Progress}
	n, err := writeImage(raw, out, c, src, src)
	if err != nil {
		return err
	}
	out.finish()
	if l := o.Logger; l != nil {
		took := time.Since(start)
		l.Info("unpacked root image", "build", b.ID(), "image", raw, "from", src, "bytes", n,
			"took", took.Round(time.Millisecond), "mb_per_s", mbPerSecond(n, took))
		if c != nil {
			l.Info("root image matches its md5", "build", b.ID(), "image", raw, "md5", c.Sum(), "md5_file", b.MD5)
		}
	}
	return nil
}

// mbPerSecond is a rate in MB/s (10^6 bytes), rounded to 0.1.
func mbPerSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)/1e6/d.Seconds()*10+0.5)) / 10
}

// writeImage writes the uncompressed image read from r to raw atomically and sparsely, checks
// its MD5 and size against c (when not nil), and records the check (or without c, that raw was
// unpacked from src) in the stamp file. from names the source in errors. It returns the size.
func writeImage(raw string, r io.Reader, c *Checksum, from, src string) (int64, error) {
	// Remove a stale stamp first, so a crash midway cannot leave a stamp over an old image.
	if err := os.Remove(raw + stampSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("kis: %w", err)
	}
	tmp, err := atomicfile.Create(raw, 0o644)
	if err != nil {
		return 0, fmt.Errorf("kis: %w", err)
	}
	defer tmp.Abort()
	h := md5.New()
	sw := &sparseWriter{f: tmp.File}
	n, err := io.CopyBuffer(io.MultiWriter(h, sw), r, make([]byte, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("kis: unpacking %s: %w", from, err)
	}
	if c != nil {
		if err := compareSum(from, h, n, *c); err != nil {
			return 0, err
		}
	}
	if err := tmp.Truncate(n); err != nil {
		return 0, fmt.Errorf("kis: %w", err)
	}
	if err := tmp.Commit(); err != nil {
		return 0, fmt.Errorf("kis: %w", err)
	}
	return n, writeStamp(raw, c, src)
}

// sparseWriter writes sequentially to f, seeking over blocks that are all zeros so that they
// become holes. The caller truncates f to the final size.
type sparseWriter struct {
	f *os.File
}

const sparseBlock = 4096

func (w *sparseWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), sparseBlock)
		if isZero(p[:n]) {
			if _, err := w.f.Seek(int64(n), io.SeekCurrent); err != nil {
				return written, err
			}
		} else if _, err := w.f.Write(p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// extractBundle extracts the files of b's bundle into o.Dir and returns the build they make.
// The image in the bundle is checked against the bundle's .md5 when it is a raw image (a
// compressed one is checked when Unpack decompresses it).
func extractBundle(ctx context.Context, b Build, o UnpackOptions) (Build, error) {
	bst, err := os.Stat(b.Bundle)
	if err != nil {
		return Build{}, fmt.Errorf("kis: %w", err)
	}
	stampPath := filepath.Join(o.Dir, b.ID()+bundleStampSuffix)
	if nb, ok := extracted(b, o.Dir, stampPath, bst); ok {
		if o.Logger != nil {
			o.Logger.Info("reusing extracted bundle", "build", b.ID(), "bundle", b.Bundle, "dir", o.Dir,
				"trusted", "its stamp "+stampPath+" records the bundle's size and modification time and the size of each file extracted from it")
		}
		return nb, nil
	}
	if err := os.Remove(stampPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Build{}, fmt.Errorf("kis: %w", err)
	}
	tr, err := openBundle(ctx, b.Bundle, o.Progress)
	if err != nil {
		return Build{}, err
	}
	defer tr.Close()
	var (
		sum   *Checksum
		names []string
		stmp  strings.Builder
	)
	fmt.Fprintf(&stmp, "%d %d\n", bst.Size(), bst.ModTime().UnixNano())
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Build{}, fmt.Errorf("kis: bundle %s: %w", b.Bundle, err)
		}
		fn, err := bundleEntry(b, hdr)
		if err != nil {
			return Build{}, err
		}
		dst := filepath.Join(o.Dir, fn.String())
		switch {
		case fn.Kind == KindChecksum:
			data, err := io.ReadAll(io.LimitReader(tr, 4096))
			if err != nil {
				return Build{}, fmt.Errorf("kis: bundle %s: %s: %w", b.Bundle, fn, err)
			}
			c, err := ParseChecksum(string(data))
			if err != nil {
				return Build{}, fmt.Errorf("%w (in bundle %s)", err, b.Bundle)
			}
			sum = &c
			if err := writeAtomic(dst, data); err != nil {
				return Build{}, err
			}
		case fn.Kind == KindImage && sum != nil:
			if _, err := writeImage(dst, tr, sum, b.Bundle+":"+fn.String(), b.Bundle); err != nil {
				return Build{}, err
			}
		default:
			if err := copyAtomic(dst, tr); err != nil {
				return Build{}, fmt.Errorf("kis: bundle %s: extracting %s: %w", b.Bundle, fn, err)
			}
		}
		names = append(names, fn.String())
		st, err := os.Stat(dst)
		if err != nil {
			return Build{}, fmt.Errorf("kis: %w", err)
		}
		fmt.Fprintf(&stmp, "%d %s\n", st.Size(), fn.String())
	}
	if err := tr.finish(); err != nil {
		return Build{}, err
	}
	nb, err := bundleBuild(b, o.Dir, names)
	if err != nil {
		return Build{}, err
	}
	if nb.Image != "" && sum != nil {
		// An image that came before its .md5 in the tar was written unchecked.
		if err := writeStampIfMatches(ctx, nb.Image, *sum); err != nil {
			return Build{}, err
		}
	}
	if err := writeAtomic(stampPath, []byte(stmp.String())); err != nil {
		return Build{}, err
	}
	return nb, nil
}

func writeStampIfMatches(ctx context.Context, raw string, c Checksum) error {
	if s, err := os.ReadFile(raw + stampSuffix); err == nil {
		if st, err := os.Stat(raw); err == nil && string(s) == stamp(c, st) {
			return nil
		}
	}
	if err := verifyFile(ctx, raw, c, false, nil); err != nil {
		return err
	}
	return writeStamp(raw, &c, "")
}

// copyAtomic copies r into path through a temporary file and a rename.
func copyAtomic(path string, r io.Reader) error {
	tmp, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return err
	}
	defer tmp.Abort()
	if _, err := io.CopyBuffer(tmp, r, make([]byte, 1<<20)); err != nil {
		return err
	}
	return tmp.Commit()
}

// extracted checks the bundle stamp: the bundle is unchanged and every file it listed is still
// there with its size.
func extracted(b Build, dir, stampPath string, bst os.FileInfo) (Build, bool) {
	data, err := os.ReadFile(stampPath)
	if err != nil {
		return Build{}, false
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) < 2 || lines[0] != fmt.Sprintf("%d %d", bst.Size(), bst.ModTime().UnixNano()) {
		return Build{}, false
	}
	var names []string
	for _, l := range lines[1:] {
		size, name, ok := strings.Cut(l, " ")
		if !ok {
			return Build{}, false
		}
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil {
			return Build{}, false
		}
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Size() != n {
			return Build{}, false
		}
		names = append(names, name)
	}
	nb, err := bundleBuild(b, dir, names)
	if err != nil {
		return Build{}, false
	}
	if nb.Image != "" {
		// A raw image from the bundle must still be the one that was checked.
		c, err := ReadChecksum(nb.MD5)
		if err != nil {
			return Build{}, false
		}
		st, err := os.Stat(nb.Image)
		if err != nil {
			return Build{}, false
		}
		if s, err := os.ReadFile(nb.Image + stampSuffix); err != nil || string(s) != stamp(c, st) {
			return Build{}, false
		}
	}
	return nb, true
}

// bundleBuild returns the build made of the named files extracted from b's bundle into dir.
func bundleBuild(b Build, dir string, names []string) (Build, error) {
	nb := b
	nb.Kernel, nb.KernelVersion, nb.Initrd, nb.Image, nb.CompressedImage, nb.MD5, nb.Append, nb.Hypervisor =
		"", "", "", "", "", "", "", ""
	found := map[Kind][]string{}
	for _, n := range names {
		f, ok := parseNameAs(n, b.Name, b.Arch)
		if !ok {
			continue
		}
		found[f.Kind] = append(found[f.Kind], n)
		p := filepath.Join(dir, n)
		switch f.Kind {
		case KindKernel:
			nb.Kernel, nb.KernelVersion = p, f.KernelVersion
		case KindInitrd:
			nb.Initrd = p
		case KindImage:
			nb.Image = p
		case KindCompressedImage:
			nb.CompressedImage = p
		case KindChecksum:
			nb.MD5 = p
		case KindAppend:
			nb.Append = p
		case KindHypervisor:
			nb.Hypervisor = p
		}
	}
	ierr := &IncompleteError{Dir: b.Bundle, ID: b.ID()}
	for k, ns := range found {
		if len(ns) > 1 {
			ierr.Ambiguous = append(ierr.Ambiguous, fmt.Sprintf("%d %ss: %s", len(ns), k, strings.Join(ns, ", ")))
		}
	}
	for _, n := range names {
		f, _ := parseNameAs(n, b.Name, b.Arch)
		ierr.Found = append(ierr.Found, f.Kind.String()+" "+n)
	}
	if nb.Kernel == "" {
		ierr.Missing = append(ierr.Missing, "kernel")
	}
	if nb.Initrd == "" {
		ierr.Missing = append(ierr.Missing, "initrd")
	}
	if nb.Image == "" && nb.CompressedImage == "" {
		ierr.Missing = append(ierr.Missing, "root image")
	}
	if nb.MD5 == "" {
		ierr.Missing = append(ierr.Missing, "md5")
	}
	if len(ierr.Missing) > 0 || len(ierr.Ambiguous) > 0 {
		return Build{}, ierr
	}
	nb.Dir = dir
	return nb, nil
}
