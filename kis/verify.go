package kis

import (
	"archive/tar"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
)

// ErrChecksum is wrapped by the errors of Verify and Unpack when an image does not match its
// .md5 file, in content or in size.
var ErrChecksum = errors.New("kis: image does not match its md5 file")

// ErrNoChecksum is wrapped by the errors of Verify and Unpack for a build that has no .md5 file
// to check its root image against. UnpackOptions.NoVerify unpacks and serves such a build
// unchecked.
var ErrNoChecksum = errors.New("kis: no md5 file to check the root image against")

// kindError is an error of a kind a sentinel names (errors.Is(err, ErrChecksum)) whose
// message already starts with "kis: ": wrapping the sentinel with %w would repeat the prefix.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

func kindErrorf(kind error, format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// noChecksum is the error for a build without its .md5.
func noChecksum(b Build) error {
	return kindErrorf(ErrNoChecksum, "kis: build %s in %s has no md5 file %s: its root image cannot be checked (skip the check to use it unverified)",
		b.ID(), b.Dir, b.ID()+".md5")
}

// progressEvery is how many bytes pass between two progress reports (the last one is always
// reported).
const progressEvery = 4 << 20

// progressReader counts the bytes read from r, reports them and stops when ctx is done.
type progressReader struct {
	ctx      context.Context
	r        io.Reader
	done     int64
	total    int64
	reported int64
	progress func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.done += int64(n)
	if err == io.EOF && p.total < 0 {
		p.total = p.done // the last report says the total once it is known
	}
	if p.progress != nil && (p.done-p.reported >= progressEvery || (err == io.EOF && p.done != p.reported)) {
		p.reported = p.done
		p.progress(p.done, p.total)
	}
	return n, err
}

// finish reports the final count if it has not been reported yet. An unknown total becomes
// the count.
func (p *progressReader) finish() {
	if p.total < 0 {
		p.total = p.done
	}
	if p.progress != nil && p.done != p.reported {
		p.reported = p.done
		p.progress(p.done, p.total)
	}
}

// openProgress opens path for a streaming read that reports progress over its size.
func openProgress(ctx context.Context, path string, progress func(done, total int64)) (*os.File, *progressReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("kis: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("kis: %w", err)
	}
	return f, &progressReader{ctx: ctx, r: f, total: st.Size(), progress: progress}, nil
}

// Verify checks the build's root image against its .md5 file: the MD5 and the size the block
// counts give, and for a compressed image also the compressed size when the .md5 records it.
// It reads the raw image when there is one, else decompresses the .xz as a stream, else reads
// the image out of the bundle. progress, when not nil, is called now and then with the bytes
// read so far of the file being read and its size. A mismatch wraps ErrChecksum.
func Verify(ctx context.Context, b Build, progress func(done, total int64)) error {
	if b.MD5 == "" {
		if b.Bundle != "" {
			return verifyBundle(ctx, b, progress)
		}
		return noChecksum(b)
	}
	c, err := ReadChecksum(b.MD5)
	if err != nil {
		return err
	}
	switch {
	case b.Image != "":
		return verifyFile(ctx, b.Image, c, false, progress)
	case b.CompressedImage != "":
		return verifyFile(ctx, b.CompressedImage, c, true, progress)
	case b.Bundle != "":
		return verifyBundle(ctx, b, progress)
	}
	return fmt.Errorf("kis: build %s in %s has an md5 file but no root image %s or %s.xz", b.ID(), b.Dir, b.ID(), b.ID())
}

func verifyFile(ctx context.Context, file string, c Checksum, compressed bool, progress func(done, total int64)) error {
	// A compressed image reports progress in uncompressed bytes, as Unpack does.
	fileProgress := progress
	if compressed {
		fileProgress = nil
	}
	f, pr, err := openProgress(ctx, file, fileProgress)
	if err != nil {
		return err
	}
	defer f.Close()
	if compressed {
		if err := checkCompressedSize(file, pr.total, c); err != nil {
			return err
		}
	} else if pr.total != c.Size() {
		return kindErrorf(ErrChecksum, "kis: %s is %d bytes, its md5 file says %d*%d = %d",
			file, pr.total, c.Blocks, c.BlockSize, c.Size())
	}
	r := pr
	if compressed {
		zr, err := newXZReader(ctx, pr, file)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = &progressReader{ctx: ctx, r: zr, total: c.Size(), progress: progress}
	}
	h := md5.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("kis: reading %s: %w", file, err)
	}
	r.finish()
	return compareSum(file, h, n, c)
}

// checkCompressedSize checks the size of the compressed file against c, when c records one.
func checkCompressedSize(file string, size int64, c Checksum) error {
	if cs := c.CompressedSize(); cs >= 0 && cs != size {
		return kindErrorf(ErrChecksum, "kis: %s is %d bytes, its md5 file says %d*%d = %d",
			file, size, c.CompressedBlocks, c.CompressedBlockSize, cs)
	}
	return nil
}

// compareSum checks the MD5 and size of the uncompressed data read from file.
func compareSum(file string, h hash.Hash, n int64, c Checksum) error {
	if n != c.Size() {
		return kindErrorf(ErrChecksum, "kis: %s holds %d bytes of image, its md5 file says %d*%d = %d",
			file, n, c.Blocks, c.BlockSize, c.Size())
	}
	var got [16]byte
	h.Sum(got[:0])
	if got != c.MD5 {
		return kindErrorf(ErrChecksum, "kis: %s has md5 %x, its md5 file says %s", file, got, c.Sum())
	}
	return nil
}

// bundleReader reads a build's bundle as a tar stream, decompressing a .tar.xz.
type bundleReader struct {
	*tar.Reader
	name string
	f    *os.File
	pr   *progressReader
	zr   io.ReadCloser // the decoder of a .tar.xz, else nil
}

// openBundle opens a build's bundle. The caller closes it.
func openBundle(ctx context.Context, bundle string, progress func(done, total int64)) (*bundleReader, error) {
	f, pr, err := openProgress(ctx, bundle, progress)
	if err != nil {
		return nil, err
	}
	br := &bundleReader{name: bundle, f: f, pr: pr}
	if !strings.HasSuffix(bundle, ".xz") {
		br.Reader = tar.NewReader(pr)
		return br, nil
	}
	if br.zr, err = newXZReader(ctx, pr, bundle); err != nil {
		f.Close()
		return nil, err
	}
	br.Reader = tar.NewReader(br.zr)
	return br, nil
}

// finish reads what follows the tar archive to its end, so that a .tar.xz is checked whole
// (the xz check and index come after the tar's last block), and reports the final progress.
func (br *bundleReader) finish() error {
	if br.zr != nil {
		if _, err := io.Copy(io.Discard, br.zr); err != nil {
			return fmt.Errorf("kis: bundle %s: %w", br.name, err)
		}
	}
	br.pr.finish()
	return nil
}

func (br *bundleReader) Close() error {
	var err error
	if br.zr != nil {
		err = br.zr.Close()
	}
	return errors.Join(err, br.f.Close())
}

// bundleEntry checks a tar entry of the bundle of b and returns its file name. Only regular
// files of the build itself, without directories, are accepted.
func bundleEntry(b Build, hdr *tar.Header) (FileName, error) {
	name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
	if hdr.Typeflag != tar.TypeReg || strings.Contains(name, "/") || name == "." || name == ".." {
		return FileName{}, fmt.Errorf("kis: bundle %s: entry %q (type %q) is not a plain file of the build",
			b.Bundle, clip(hdr.Name), hdr.Typeflag)
	}
	f, ok := parseNameAs(name, b.Name, b.Arch)
	if !ok || f.ID() != b.ID() {
		return FileName{}, fmt.Errorf("kis: bundle %s: entry %q is not a file of build %s", b.Bundle, clip(name), b.ID())
	}
	return f, nil
}

// verifyBundle reads the .md5 and the image out of the bundle and checks one against the other.
func verifyBundle(ctx context.Context, b Build, progress func(done, total int64)) error {
	tr, err := openBundle(ctx, b.Bundle, progress)
	if err != nil {
		return err
	}
	defer tr.Close()
	var (
		sum                       *Checksum
		h                               = md5.New()
		n, compressedSize         int64 = 0, -1
		imageName, kernel, initrd string
	)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("kis: bundle %s: %w", b.Bundle, err)
		}
		fn, err := bundleEntry(b, hdr)
		if err != nil {
			return err
		}
		switch fn.Kind {
		case KindChecksum:
			data, err := io.ReadAll(io.LimitReader(tr, 4096))
			if err != nil {
				return fmt.Errorf("kis: bundle %s: %s: %w", b.Bundle, fn, err)
			}
			c, err := ParseChecksum(string(data))
			if err != nil {
				return fmt.Errorf("%w (in bundle %s)", err, b.Bundle)
			}
			sum = &c
		case KindImage, KindCompressedImage:
			if imageName != "" {
				return fmt.Errorf("kis: bundle %s holds two root images, %s and %s", b.Bundle, imageName, fn)
			}
			imageName = fn.String()
			var r io.Reader = tr
			if fn.Kind == KindCompressedImage {
				compressedSize = hdr.Size
				zr, err := newXZReader(ctx, tr, b.Bundle+":"+imageName)
				if err != nil {
					return err
				}
				defer zr.Close()
				r = zr
			}
			if n, err = io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
				return fmt.Errorf("kis: bundle %s: reading %s: %w", b.Bundle, imageName, err)
			}
		case KindKernel:
			kernel = fn.String()
		case KindInitrd:
			initrd = fn.String()
		}
	}
	if err := tr.finish(); err != nil {
		return err
	}
	var missing []string
	if sum == nil {
		missing = append(missing, "md5 "+b.ID()+".md5")
	}
	if imageName == "" {
		missing = append(missing, "root image "+b.ID()+" or "+b.ID()+".xz")
	}
	if kernel == "" {
		missing = append(missing, "kernel")
	}
	if initrd == "" {
		missing = append(missing, "initrd")
	}
	if len(missing) > 0 {
		return fmt.Errorf("kis: bundle %s is missing %s", b.Bundle, strings.Join(missing, ", "))
	}
	if cs := sum.CompressedSize(); compressedSize >= 0 && cs >= 0 && cs != compressedSize {
		return kindErrorf(ErrChecksum, "kis: bundle %s: %s is %d bytes, its md5 file says %d",
			b.Bundle, imageName, compressedSize, cs)
	}
	return compareSum(b.Bundle+":"+imageName, h, n, *sum)
}
