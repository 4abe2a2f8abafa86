package store

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/netroot/netroot/kis"
)

// DefaultParallel is the number of uploads Push keeps in flight when PushOptions.Parallel is
// zero.
const DefaultParallel = 4

// PushOptions select the build Push uploads and how. The zero value pushes the newest build of
// the only image in the directory, tags it, in DefaultChunkSize chunks.
type PushOptions struct {
	// Name and Version select the build among those in the directory; empty Name means the
	// only image name there, empty Version the newest version of it.
	Name, Version string
	// Tag is the tag to move to the new manifest; empty means NAME.ARCH of the build.
	Tag string
	// NoTag uploads chunks and manifest but moves no tag (Promote does that later).
	NoTag bool
	// ChunkSize is the chunk size in bytes; 0 means DefaultChunkSize.
	ChunkSize int64
	// Parallel is the number of uploads in flight; 0 means DefaultParallel.
	Parallel int
	// UnpackDir receives the raw image of a compressed or bundled build (see kis.Unpack); empty
	// means a temporary directory removed when Push returns.
	UnpackDir string
	// Progress, when not nil, is called now and then with the bytes of the build read so far and
	// their total.
	Progress func(done, total int64)
}

// PushResult describes a finished push.
type PushResult struct {
	ID       Hash      // the manifest's ID
	Manifest *Manifest // what was stored
	Tag      string    // the tag moved to it; "" with NoTag
	// Uploaded counts the chunks written and their bytes; Reused the chunks that were in the
	// store already (from earlier versions, or repeated within this build).
	Uploaded, Reused           int
	UploadedBytes, ReusedBytes int64
}

// ErrVerify is wrapped by Push's error when the build fails its .md5 check.
var ErrVerify = errors.New("store: build fails verification")

// Push uploads a KIS build from dir: it verifies the root image against the build's .md5
// (unpacking a compressed image or a bundle first) and refuses a build that fails, stores the
// image, kernel and initrd as chunks by content (chunks already in the store are not uploaded
// again), then the manifest, and last the tag. A push that stops halfway leaves chunks, maybe a
// manifest, but no tag naming them; GC removes what no manifest needs.
func (s *Store) Push(ctx context.Context, dir string, opts *PushOptions) (*PushResult, error) {
	var o PushOptions
	if opts != nil {
		o = *opts
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize < MinChunkSize || o.ChunkSize > MaxChunkSize || o.ChunkSize&(o.ChunkSize-1) != 0 {
		return nil, fmt.Errorf("store: chunk size %d is not a power of two in [%d, %d]", o.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	b, err := selectBuild(dir, o.Name, o.Version)
	if err != nil {
		return nil, err
	}
	tag := o.Tag
	if tag == "" {
		tag = b.Name + "." + b.Arch
	}
	if err := ValidTagName(tag); err != nil {
		return nil, err
	}
	if b.Loose() && b.CompressedImage == "" {
		if err := kis.Verify(ctx, b, o.Progress); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrVerify, err)
		}
	} else {
		if o.UnpackDir == "" {
			tmp, err := os.MkdirTemp("", "netroot-push-")
			if err != nil {
				return nil, fmt.Errorf("store: %w", err)
			}
			defer os.RemoveAll(tmp)
			o.UnpackDir = tmp
		}
		// Unpack checks what it writes or reuses against the .md5.
		if b, err = kis.Unpack(ctx, b, &kis.UnpackOptions{Dir: o.UnpackDir, Progress: o.Progress}); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrVerify, err)
		}
	}
	sum, err := kis.ReadChecksum(b.MD5)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	m := &Manifest{
		Format:        ManifestFormat,
		Build:         b.ID(),
		Name:          b.Name,
		Arch:          b.Arch,
		Version:       b.Version,
		KernelVersion: b.KernelVersion,
		MD5:           sum.Sum(),
		Created:       time.Now().UTC(),
		ChunkSize:     o.ChunkSize,
	}
	if b.Append != "" {
		a, err := os.ReadFile(b.Append)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		m.Append = strings.TrimSpace(string(a))
	}

	up := &uploader{s: s, cs: o.ChunkSize, parallel: o.Parallel, seen: make(map[Hash]bool), progress: o.Progress}
	for _, f := range []string{b.Image, b.Kernel, b.Initrd} {
		if st, err := os.Stat(f); err == nil {
			up.total += st.Size()
		}
	}
	// The image is read once more here; its MD5 is taken again on the way so that what is
	// uploaded is what was verified, even if the file changed in between.
	md := md5.New()
	if m.Image, err = up.blob(ctx, b.Image, md); err != nil {
		return nil, err
	}
	if got := hex.EncodeToString(md.Sum(nil)); got != m.MD5 || m.Image.Size != sum.Size() {
		return nil, fmt.Errorf("%w: image %s changed during the push: md5 %s and %d bytes, .md5 says %s and %d",
			ErrVerify, b.Image, got, m.Image.Size, m.MD5, sum.Size())
	}
	if m.Kernel, err = up.blob(ctx, b.Kernel, nil); err != nil {
		return nil, err
	}
	if m.Initrd, err = up.blob(ctx, b.Initrd, nil); err != nil {
		return nil, err
	}
	data, id, err := MarshalManifest(m)
	if err != nil {
		return nil, err
	}
	if err := s.put(ctx, s.manifestKey(id), data, "application/json"); err != nil {
		return nil, err
	}
	// Chunks found in the store rather than uploaded may be old; make sure a garbage
	// collection that ran meanwhile (before this manifest existed) did not take them.
	if err := up.recheck(ctx); err != nil {
		return nil, err
	}
	res := &PushResult{ID: id, Manifest: m, Uploaded: int(up.uploaded.Load()), Reused: int(up.reused.Load()),
		UploadedBytes: up.uploadedBytes.Load(), ReusedBytes: up.reusedBytes.Load()}
	if !o.NoTag {
		if err := s.writeTag(ctx, Tag{Name: tag, Manifest: id, Build: m.Build}); err != nil {
			return nil, err
		}
		res.Tag = tag
	}
	return res, nil
}

// selectBuild finds the build to push in dir.
func selectBuild(dir, name, version string) (kis.Build, error) {
	builds, findErr := kis.Find(dir)
	var names []string
	var match []kis.Build
	for _, b := range builds {
		if !slices.Contains(names, b.Name) {
			names = append(names, b.Name)
		}
		if (name == "" || b.Name == name) && (version == "" || b.Version == version) {
			match = append(match, b)
		}
	}
	switch {
	case len(builds) == 0 && findErr != nil:
		return kis.Build{}, fmt.Errorf("store: %w", findErr)
	case name == "" && len(names) > 1:
		return kis.Build{}, fmt.Errorf("store: %s holds builds of %d images (%s): name one", dir, len(names), strings.Join(names, ", "))
	case len(match) == 0:
		if findErr != nil {
			return kis.Build{}, fmt.Errorf("store: no usable build of %q version %q in %s: %w", name, version, dir, findErr)
		}
		return kis.Build{}, fmt.Errorf("store: no build of %q version %q in %s (images: %s)", name, version, dir, strings.Join(names, ", "))
	}
	// Find sorts newest first.
	return match[0], nil
}

// ValidTagName checks that name can be a tag: 1 to 128 of the characters KIWI allows in image
// names and architectures (letters, digits, '.', '_', '+', '-'), not starting with '.'.
func ValidTagName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' {
		return fmt.Errorf("store: tag name %q: want 1 to 128 characters, not starting with '.'", clip(name))
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._+-", c)) {
			return fmt.Errorf("store: tag name %q: character %q not allowed (letters, digits, . _ + -)", clip(name), c)
		}
	}
	return nil
}

// uploader stores files as chunks, each chunk once.
type uploader struct {
	s        *Store
	cs       int64
	parallel int
	progress func(done, total int64)
	total    int64
	done     atomic.Int64

	mu        sync.Mutex
	seen      map[Hash]bool // chunk → found in the store rather than uploaded
	uploading map[Hash]struct{}

	uploaded, reused           atomic.Int64
	uploadedBytes, reusedBytes atomic.Int64
}

// blob reads path in chunks, uploads the chunks the store lacks, and feeds the data to h (when
// not nil).
func (u *uploader) blob(ctx context.Context, path string, h hash.Hash) (Blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return Blob{}, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(u.parallel)
	var b Blob
	for {
		buf := make([]byte, u.cs)
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			buf = buf[:n]
			if h != nil {
				h.Write(buf)
			}
			sum := Sum(buf)
			b.Chunks = append(b.Chunks, sum)
			b.Size += int64(n)
			if u.claim(sum, int64(n)) {
				g.Go(func() error { return u.upload(gctx, sum, buf) })
			}
			if u.progress != nil {
				u.progress(u.done.Add(int64(n)), u.total)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			g.Wait()
			return Blob{}, fmt.Errorf("store: %w", err)
		}
		if gctx.Err() != nil {
			break
		}
	}
	if err := g.Wait(); err != nil {
		return Blob{}, err
	}
	if err := ctx.Err(); err != nil {
		return Blob{}, err
	}
	return b, nil
}

// claim reports whether this is the push's first sight of the chunk, and counts repeats.
func (u *uploader) claim(h Hash, n int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.uploading == nil {
		u.uploading = make(map[Hash]struct{})
	}
	if _, ok := u.uploading[h]; ok {
		u.reused.Add(1)
		u.reusedBytes.Add(n)
		return false
	}
	u.uploading[h] = struct{}{}
	return true
}

func (u *uploader) upload(ctx context.Context, h Hash, data []byte) error {
	key := u.s.chunkKey(h)
	ok, err := u.s.exists(ctx, key, int64(len(data)))
	if err != nil {
		return err
	}
	if ok {
		u.mu.Lock()
		u.seen[h] = true
		u.mu.Unlock()
		u.reused.Add(1)
		u.reusedBytes.Add(int64(len(data)))
		return nil
	}
	if err := u.s.put(ctx, key, data, "application/octet-stream"); err != nil {
		return err
	}
	u.uploaded.Add(1)
	u.uploadedBytes.Add(int64(len(data)))
	return nil
}

// recheck checks that the chunks found in the store are still there.
func (u *uploader) recheck(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(u.parallel)
	for h := range u.seen {
		g.Go(func() error {
			ok, err := u.s.exists(gctx, u.s.chunkKey(h), -1)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("store: chunk %s vanished during the push (a concurrent gc?); push again", h)
			}
			return nil
		})
	}
	return g.Wait()
}
