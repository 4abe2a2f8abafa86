// Package kistest writes fake KIWI KIS build results for tests: small files with KIWI's exact
// naming, a .md5 computed over the image, xz compression and tar bundles made the way KIWI
// makes them, and kiwi.result.json.
package kistest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/netroot/netroot/kis"
	"github.com/ulikunitz/xz"
)

// Spec describes a fake build. Zero fields get small defaults.
type Spec struct {
	Name          string // default "netroot-test"
	Arch          string // default "x86_64"
	Version       string // default "1.0.0"
	KernelVersion string // default "6.1.0-13-amd64"

	Image  []byte // root image; nil means Image(64<<10, 1)
	Kernel []byte // nil means a few bytes naming the kernel version
	Initrd []byte // nil means a few bytes naming the build

	// Append is the content of the .append file; empty means none is written.
	Append string

	// Compressed writes NAME.ARCH-VERSION.xz instead of the raw image, with the five-field .md5
	// KIWI writes then (compressed="true").
	Compressed bool

	// Bundle also writes the bundle: NAME.ARCH-VERSION.tar.xz, or .tar when Compressed, as KIWI
	// does.
	Bundle bool

	// BundleOnly removes kernel, initrd, image, .md5 and .append once bundled, as when only
	// the bundle was copied from the build host. It implies Bundle.
	BundleOnly bool

	// BundleID names the bundle and the package lists as `kiwi-ng result bundle --id BundleID`
	// does: NAME.ARCH-VERSION-BUNDLEID.tar.xz.
	BundleID string

	// Result writes kiwi.result.json naming the bundle and the package lists; Packages writes
	// the .packages, .changes and .verified lists.
	Result, Packages bool

	// InitrdMode is the mode of the loose initrd; 0 means 0644. KIWI 9.24 writes dracut's
	// initrd with mode 0600.
	InitrdMode os.FileMode

	// Target also writes what else `kiwi-ng system build` leaves in its target directory:
	// kiwi.result (KIWI's pickled result, here a stand-in) and build/image-root, the root tree.
	Target bool
}

// KIWI924 returns the Spec of the target directory Debian's kiwi 9.24.56 writes for a KIS image
// with dracut (as e2e/kiwi/ builds it) whose root file system is fs, "ext4" or "squashfs":
// the initrd NAME.ARCH-VERSION.initrd gzip-compressed (dracut's default; KIWI passes no
// compression option) with mode 0600; for ext4 an .append "root=UUID=... KERNELCMDLINE" without
// a trailing newline, for squashfs none (KIWI writes it only for a file system with a UUID); an
// .md5 of block size 8192 for the ext4 image and 4096 for the squashfs one; the .tar.xz bundle,
// the package lists, kiwi.result, kiwi.result.json and build/. Kernel, initrd and image are
// small stand-ins.
func KIWI924(fs string) Spec {
	s := Spec{
		Name: "netroot-e2e", Version: "1.0.0", KernelVersion: "6.1.0-50-amd64",
		Kernel:     []byte("Linux kernel 6.1.0-50-amd64 stand-in\n"),
		Initrd:     gzipped([]byte("070701 dracut initrd stand-in\n")),
		InitrdMode: 0o600,
		Bundle:     true, Packages: true, Result: true, Target: true,
	}
	switch fs {
	case "ext4":
		// 40 blocks of 8192 bytes: KIWI's block list is "40 8192"
		s.Image = Image(40*8192, 4)
		copy(s.Image[1080:], []byte{0x53, 0xef}) // ext4 superblock magic
		s.Append = "root=UUID=" + KIWI924UUID + " console=ttyS0,115200 rd.shell=0"
	case "squashfs":
		// 21 blocks of 4096 bytes: 86016 = 2^12 * 3 * 7, so KIWI's block list is "21 4096"
		s.Image = Image(21*4096, 5)
		copy(s.Image, "hsqs")
	default:
		panic("kistest: KIWI924: file system " + fs + " is not ext4 or squashfs")
	}
	return s
}

// KIWI924UUID is the file system UUID in the .append of [KIWI924]'s ext4 build.
const KIWI924UUID = "5a1d0c4e-0b4f-4c7e-9a39-2f1e3c6d8b70"

func gzipped(data []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func (s *Spec) defaults() {
	if s.Name == "" {
		s.Name = "netroot-test"
	}
	if s.Arch == "" {
		s.Arch = "x86_64"
	}
	if s.Version == "" {
		s.Version = "1.0.0"
	}
	if s.KernelVersion == "" {
		s.KernelVersion = "6.1.0-13-amd64"
	}
	if s.Image == nil {
		s.Image = Image(64<<10, 1)
	}
	if s.Kernel == nil {
		s.Kernel = []byte("kernel " + s.KernelVersion + "\n")
	}
	if s.Initrd == nil {
		s.Initrd = []byte("initrd of " + s.Name + " " + s.Version + "\n")
	}
	if s.BundleOnly {
		s.Bundle = true
	}
}

// Image returns size bytes that look like a file system image: runs of pseudo-random data
// (from seed) between runs of zeros.
func Image(size int, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for off := 0; off < size; {
		n := min(size-off, 1024+r.IntN(16<<10))
		if r.IntN(3) != 0 {
			for i := off; i < off+n; i++ {
				b[i] = byte(r.Uint32())
			}
		}
		off += n
	}
	return b
}

// Checksum returns the .md5 line KIWI writes for image, with compressedSize the size of the .xz
// or -1 for an uncompressed image.
func Checksum(image []byte, compressedSize int64) string {
	c := kis.NewChecksum(md5.Sum(image), int64(len(image)), compressedSize)
	line, err := c.MarshalText()
	if err != nil {
		panic(err)
	}
	return string(line)
}

// XZ compresses data in the xz format.
func XZ(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Write writes the build s describes into dir and returns the Build that kis.Find should find
// for it.
func Write(dir string, s Spec) (kis.Build, error) {
	s.defaults()
	id := s.Name + "." + s.Arch + "-" + s.Version
	idSuffix := ""
	if s.BundleID != "" {
		idSuffix = "-" + s.BundleID
	}
	b := kis.Build{Dir: dir, Name: s.Name, Arch: s.Arch, Version: s.Version, KernelVersion: s.KernelVersion}
	p := func(n string) string { return filepath.Join(dir, n) }
	type file struct {
		name string
		data []byte
	}
	var files []file
	files = append(files, file{id + "-" + s.KernelVersion + ".kernel", s.Kernel})
	b.Kernel = p(files[len(files)-1].name)
	compressedSize := int64(-1)
	var imageFile file
	if s.Compressed {
		z, err := XZ(s.Image)
		if err != nil {
			return kis.Build{}, err
		}
		compressedSize = int64(len(z))
		imageFile = file{id + ".xz", z}
		b.CompressedImage = p(imageFile.name)
	} else {
		imageFile = file{id, s.Image}
		b.Image = p(imageFile.name)
	}
	// KIWI's bundle order: kernel, md5, initrd, image, append.
	files = append(files, file{id + ".md5", []byte(Checksum(s.Image, compressedSize))})
	b.MD5 = p(id + ".md5")
	files = append(files, file{id + ".initrd", s.Initrd})
	b.Initrd = p(id + ".initrd")
	files = append(files, imageFile)
	if s.Append != "" {
		files = append(files, file{id + ".append", []byte(s.Append)})
		b.Append = p(id + ".append")
	}
	if !s.BundleOnly {
		for _, f := range files {
			if err := os.WriteFile(p(f.name), f.data, 0o644); err != nil {
				return kis.Build{}, err
			}
		}
		if s.InitrdMode != 0 {
			if err := os.Chmod(b.Initrd, s.InitrdMode); err != nil {
				return kis.Build{}, err
			}
		}
	} else {
		b.Kernel, b.KernelVersion, b.MD5, b.Initrd, b.Image, b.CompressedImage, b.Append = "", "", "", "", "", "", ""
	}
	if s.Bundle {
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		for _, f := range files {
			mode := int64(0o644)
			if f.name == id+".initrd" && s.InitrdMode != 0 {
				mode = int64(s.InitrdMode)
			}
			hdr := &tar.Header{Name: f.name, Mode: mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
			if err := tw.WriteHeader(hdr); err != nil {
				return kis.Build{}, err
			}
			if _, err := tw.Write(f.data); err != nil {
				return kis.Build{}, err
			}
		}
		if err := tw.Close(); err != nil {
			return kis.Build{}, err
		}
		name, data := id+idSuffix+".tar", tb.Bytes()
		if !s.Compressed {
			z, err := XZ(data)
			if err != nil {
				return kis.Build{}, err
			}
			name, data = id+idSuffix+".tar.xz", z
		}
		if err := os.WriteFile(p(name), data, 0o644); err != nil {
			return kis.Build{}, err
		}
		b.Bundle, b.BundleID = p(name), s.BundleID
	}
	if s.Packages {
		for _, ext := range []string{".packages", ".changes", ".verified"} {
			if err := os.WriteFile(p(id+idSuffix+ext), []byte("package list of "+id+"\n"), 0o644); err != nil {
				return kis.Build{}, err
			}
		}
		b.Packages, b.Changes, b.Verified = p(id+idSuffix+".packages"), p(id+idSuffix+".changes"), p(id+idSuffix+".verified")
	}
	if s.Result {
		if err := WriteResult(dir, s, "/var/tmp/kiwi-build/"+id); err != nil {
			return kis.Build{}, err
		}
		b.Result = p(kis.ResultFile)
	}
	if s.Target {
		// kiwi.result is a Python pickle KIWI reads back with `kiwi-ng result list`.
		if err := os.WriteFile(p("kiwi.result"), []byte("\x80\x04\x95 kiwi.system.result Result stand-in\n"), 0o644); err != nil {
			return kis.Build{}, err
		}
		root := p(filepath.Join("build", "image-root"))
		if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
			return kis.Build{}, err
		}
		if err := os.WriteFile(filepath.Join(root, "etc", "os-release"), []byte("ID=debian\n"), 0o644); err != nil {
			return kis.Build{}, err
		}
	}
	return b, nil
}

// WriteResult writes the kiwi.result.json KIWI writes for a kis build, with file names under
// the directory the build ran in (buildPrefix plus the extension), as KIWI records absolute
// paths of its target directory.
func WriteResult(dir string, s Spec, buildPrefix string) error {
	s.defaults()
	type entry struct {
		Compress     bool   `json:"compress"`
		Filename     string `json:"filename"`
		Shasum       bool   `json:"shasum"`
		UseForBundle bool   `json:"use_for_bundle"`
	}
	bundle := ".tar.xz"
	if s.Compressed {
		bundle = ".tar"
	}
	var major, minor, patch int
	fmt.Sscanf(s.Version, "%d.%d.%d", &major, &minor, &patch)
	res := map[string]any{
		"bundle_format": map[string]any{
			"pattern": "%N-%M.%m.%p",
			"tags": map[string]any{"N": s.Name, "P": "", "A": s.Arch, "I": "", "T": "kis",
				"M": major, "m": minor, "p": patch},
		},
		"kis_archive":    entry{Filename: buildPrefix + bundle, Shasum: true, UseForBundle: true},
		"image_packages": entry{Filename: buildPrefix + ".packages", UseForBundle: true},
		"image_changes":  entry{Filename: buildPrefix + ".changes", Compress: true, UseForBundle: true},
		"image_verified": entry{Filename: buildPrefix + ".verified", UseForBundle: true},
	}
	data, err := json.MarshalIndent(res, "", "    ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, kis.ResultFile), append(data, '\n'), 0o644)
}
