package bootserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/kis"
)

// KISSource serves the KIS builds KIWI NG wrote into one or more output folders. Open unpacks
// a compressed image or a bundle (into CacheDir), checks the root image against its .md5 and
// opens it read-only; the Image's Close closes it and Discard removes what Open unpacked.
type KISSource struct {
	// Dirs are the KIWI output folders.
	Dirs []string
	// CacheDir is where compressed images and bundles are unpacked; "" means next to the build.
	CacheDir string
	// NoVerify skips the MD5 check of a raw image that needed no unpacking (unpacking always
	// checks an image against its .md5), and serves a build that has no .md5 unchecked, with a
	// warning; without it such a build is refused (kis.ErrNoChecksum).
	NoVerify bool
	// Mmap serves root images through a memory mapping instead of pread.
	Mmap bool
	// Progress, when not nil, is called now and then while a build is unpacked or verified:
	// step is "unpacking" or "verifying", done of total bytes.
	Progress func(id BuildID, step string, done, total int64)
	// Logger receives what Open did; nil means silent.
	Logger *slog.Logger

	mu    sync.Mutex
	found map[BuildID]kis.Build
}

var _ Source = (*KISSource)(nil)

// Builds implements Source: the complete builds in Dirs. Incomplete ones are reported in the
// error next to the others.
func (k *KISSource) Builds(ctx context.Context) ([]BuildInfo, error) {
	if len(k.Dirs) == 0 {
		return nil, errors.New("bootserver: KISSource has no folders")
	}
	var (
		infos []BuildInfo
		errs  []error
		found = map[BuildID]kis.Build{}
	)
	for _, dir := range k.Dirs {
		builds, err := kis.Find(dir)
		if err != nil && (len(builds) > 0 || !errors.Is(err, kis.ErrNotFound) || len(k.Dirs) == 1) {
			errs = append(errs, err)
		}
		for _, b := range builds {
			id := BuildID{Name: b.Name, Arch: b.Arch, Version: b.Version}
			if _, dup := found[id]; dup {
				errs = append(errs, fmt.Errorf("bootserver: build %s is in %s and in %s; using the first", id, found[id].Dir, b.Dir))
				continue
			}
			found[id] = b
			infos = append(infos, BuildInfo{ID: id, Stamp: kisStamp(b)})
		}
	}
	k.mu.Lock()
	k.found = found
	k.mu.Unlock()
	return infos, errors.Join(errs...)
}

// kisStamp sums up the sizes and modification times of a build's files.
func kisStamp(b kis.Build) string {
	var s []byte
	for _, p := range []string{b.Kernel, b.Initrd, b.Image, b.CompressedImage, b.MD5, b.Append, b.Bundle} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			s = strconv.AppendInt(s, fi.Size(), 10)
			s = append(s, '@')
			s = strconv.AppendInt(s, fi.ModTime().UnixNano(), 36)
			s = append(s, ' ')
		}
	}
	return string(s)
}

// Open implements Source.
func (k *KISSource) Open(ctx context.Context, info BuildInfo) (*Image, error) {
	k.mu.Lock()
	b, ok := k.found[info.ID]
	k.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("bootserver: build %s is not in %v", info.ID, k.Dirs)
	}
	progress := func(step string) func(done, total int64) {
		if k.Progress == nil {
			return nil
		}
		return func(done, total int64) { k.Progress(info.ID, step, done, total) }
	}
	// Unpack checks the MD5 while it decompresses an .xz image, so only an image that was not
	// decompressed needs reading again.
	decompressed := b.CompressedImage != "" || b.Image == ""
	u, err := kis.Unpack(ctx, b, &kis.UnpackOptions{Dir: k.CacheDir, Progress: progress("unpacking"), NoVerify: k.NoVerify, Logger: k.Logger})
	if err != nil {
		return nil, err
	}
	if !k.NoVerify && !decompressed {
		if err := kis.Verify(ctx, u, progress("verifying")); err != nil {
			return nil, err
		}
	}
	_, opts, err := kis.ReadAppend(u)
	if err != nil {
		return nil, err
	}
	var dev backend.Device
	if k.Mmap {
		dev, err = backend.OpenMmap(u.Image, &backend.MmapOptions{ReadOnly: true})
	} else {
		dev, err = backend.OpenFile(u.Image, &backend.FileOptions{ReadOnly: true})
	}
	if err != nil {
		return nil, err
	}
	if k.Logger != nil {
		k.Logger.Info("opened KIS build", "build", info.ID.String(), "kernel_version", u.KernelVersion, "image", u.Image, "size", dev.Size())
	}
	// What Unpack made (a decompressed image, files out of a bundle) goes with the build.
	var made []string
	for _, p := range [][2]string{{b.Image, u.Image}, {b.Kernel, u.Kernel}, {b.Initrd, u.Initrd}, {b.MD5, u.MD5}, {b.Append, u.Append}} {
		if p[1] != "" && p[0] != p[1] {
			made = append(made, p[1])
		}
	}
	if b.Image != u.Image && u.Image != "" {
		made = append(made, u.Image+".kis-unpacked")
	}
	return &Image{
		ID:            info.ID,
		KernelVersion: u.KernelVersion,
		Kernel:        Content{Path: u.Kernel},
		Initrd:        Content{Path: u.Initrd},
		Options:       opts,
		Root:          dev,
		Close: func() error {
			if c, ok := dev.(interface{ Close() error }); ok {
				return c.Close()
			}
			return nil
		},
		Discard: func() error {
			var errs []error
			for _, p := range made {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		},
	}, nil
}
