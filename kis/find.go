package kis

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ResultFile is the name of the portable summary KIWI writes into a build's target directory.
const ResultFile = "kiwi.result.json"

// Build is one KIS build result: the files of NAME.ARCH-VERSION in a directory. Paths are
// absolute or relative as the directory given to [Find] was; an empty path means the file is
// not there.
type Build struct {
	Dir           string // directory the build was found in (or its bundle extracted to)
	Name          string // image name
	Arch          string // architecture, as KIWI names it
	Version       string // image version, 1.15.3
	KernelVersion string // kernel release from the kernel's file name; "" without loose kernel
	BundleID      string // ID `kiwi-ng result bundle --id` put into the bundle's name, if any

	Kernel          string // NAME.ARCH-VERSION-KERNELVERSION.kernel
	Initrd          string // NAME.ARCH-VERSION.initrd (.initrd.xz from KIWI's legacy initrd)
	Image           string // NAME.ARCH-VERSION: the raw root image
	CompressedImage string // NAME.ARCH-VERSION.xz
	MD5             string // NAME.ARCH-VERSION.md5
	Append          string // NAME.ARCH-VERSION.append; optional
	Hypervisor      string // NAME.ARCH-VERSION-xen.gz; optional
	Bundle          string // NAME.ARCH-VERSION.tar.xz (or .tar); optional
	Packages        string // NAME.ARCH-VERSION.packages; optional
	Changes         string // NAME.ARCH-VERSION.changes; optional
	Verified        string // NAME.ARCH-VERSION.verified; optional
	Result          string // kiwi.result.json, when it names this build
}

// ID returns NAME.ARCH-VERSION, the stem of all the build's file names.
func (b Build) ID() string { return b.Name + "." + b.Arch + "-" + b.Version }

func (b Build) String() string { return b.ID() }

// Loose reports whether the kernel, initrd and root image (raw or compressed) are present as
// files of their own, so the build is usable without its bundle. The .md5 is not needed for
// that: without it the image cannot be checked, which [Verify] and [Unpack] refuse unless told
// not to check (UnpackOptions.NoVerify); they fail with an error wrapping ErrNoChecksum.
func (b Build) Loose() bool {
	return b.Kernel != "" && b.Initrd != "" && (b.Image != "" || b.CompressedImage != "")
}

// IncompleteError describes a build whose files do not make up a usable build: pieces are
// missing, or there is more than one candidate for a piece.
type IncompleteError struct {
	Dir       string
	ID        string   // NAME.ARCH-VERSION
	Found     []string // "kernel foo.x86_64-1.2.3-6.1.0.kernel", ...
	Missing   []string // "initrd (foo.x86_64-1.2.3.initrd)", ...
	Ambiguous []string // "2 kernels: a, b"
}

func (e *IncompleteError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kis: build %s in %s is not usable: found %s", e.ID, e.Dir, listOrNone(e.Found))
	if len(e.Missing) > 0 {
		fmt.Fprintf(&b, "; missing %s", strings.Join(e.Missing, ", "))
	}
	if len(e.Ambiguous) > 0 {
		fmt.Fprintf(&b, "; ambiguous: %s", strings.Join(e.Ambiguous, "; "))
	}
	return b.String()
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

// ErrNotFound is returned (wrapped) by Find when a directory holds no KIS build at all, and by
// Newest when no build matches.
var ErrNotFound = errors.New("kis: no KIS build found")

// Find returns the KIS builds in dir, newest version first (versions compare as numbers,
// 1.15.3 < 1.15.10; ties by name and arch). A build is usable when it has its kernel, initrd and
// root image (raw or .xz) as loose files, or its bundle. A loose build without its .md5 is
// found too (see [Build.Loose]); only a check of its image fails.
//
// When kiwi.result.json is present, the image name and architecture it records decide how file
// names are split, and files it names but that are absent are reported as missing. Otherwise
// the naming rules of [ParseName] apply.
//
// A build that is not usable (missing pieces, two kernels, ...) yields an *IncompleteError that
// lists what was found and what is missing; Find still returns the usable builds next to the
// joined errors, so a caller may decide to go on with them. A directory without any build
// gives an error wrapping ErrNotFound that lists the files it holds.
func Find(dir string) ([]Build, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("kis: %w", err)
	}
	var res *result
	if _, err := os.Stat(filepath.Join(dir, ResultFile)); err == nil {
		res, err = readResult(filepath.Join(dir, ResultFile))
		if err != nil {
			return nil, err
		}
	}

	type group struct {
		files map[Kind][]FileName
		named bool // kiwi.result.json names it
	}
	groups := map[string]*group{}
	var all []string
	for _, e := range entries {
		all = append(all, e.Name())
		if !isRegular(dir, e) {
			continue
		}
		f, ok := res.parse(e.Name())
		if !ok {
			continue
		}
		g := groups[f.ID()]
		if g == nil {
			g = &group{files: map[Kind][]FileName{}}
			groups[f.ID()] = g
		}
		g.files[f.Kind] = append(g.files[f.Kind], f)
	}
	if res != nil {
		for _, f := range res.files {
			if f.Kind == KindPackages || f.Kind == KindChanges || f.Kind == KindVerified {
				// every image type names its package lists; only KIS files make a KIS build
				continue
			}
			g := groups[f.ID()]
			if g == nil {
				g = &group{files: map[Kind][]FileName{}}
				groups[f.ID()] = g
			}
			g.named = true
		}
	}

	var builds []Build
	var errs []error
	ids := make([]string, 0, len(groups))
	for id := range groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		g := groups[id]
		b, ierr := assemble(dir, id, g.files, g.named, res)
		switch {
		case ierr != nil:
			errs = append(errs, ierr)
		case b != nil:
			builds = append(builds, *b)
		}
	}
	sortBuilds(builds)
	if len(builds) == 0 && len(errs) == 0 {
		return nil, kindErrorf(ErrNotFound, "kis: %s holds no kernel, initrd, root image or bundle of a KIS build (found %s)",
			dir, listOrNone(clipList(all)))
	}
	return builds, errors.Join(errs...)
}

// assemble makes a Build from the files of one ID. It returns nil, nil for a group that only
// holds package lists (other image types write those too).
func assemble(dir, id string, files map[Kind][]FileName, named bool, res *result) (*Build, *IncompleteError) {
	var first FileName
	for _, fl := range files {
		first = fl[0]
		break
	}
	meta := len(files[KindPackages]) + len(files[KindChanges]) + len(files[KindVerified])
	total := 0
	for _, fl := range files {
		total += len(fl)
	}
	if total == meta && !named {
		return nil, nil
	}

	ierr := &IncompleteError{Dir: dir, ID: id}
	b := &Build{Dir: dir}
	if total > 0 {
		b.Name, b.Arch, b.Version = first.Name, first.Arch, first.Version
	} else if f, ok := res.byID(id); ok {
		b.Name, b.Arch, b.Version = f.Name, f.Arch, f.Version
	}
	for _, k := range []Kind{KindKernel, KindInitrd, KindImage, KindCompressedImage, KindChecksum, KindAppend,
		KindHypervisor, KindBundle, KindPackages, KindChanges, KindVerified} {
		for _, f := range files[k] {
			ierr.Found = append(ierr.Found, k.String()+" "+f.String())
		}
	}
	one := func(k Kind, plural string) string {
		fl := files[k]
		switch len(fl) {
		case 0:
			return ""
		case 1:
			return filepath.Join(dir, fl[0].String())
		}
		names := make([]string, len(fl))
		for i, f := range fl {
			names[i] = f.String()
		}
		ierr.Ambiguous = append(ierr.Ambiguous, fmt.Sprintf("%d %s: %s", len(fl), plural, strings.Join(names, ", ")))
		return ""
	}
	b.Kernel = one(KindKernel, "kernels")
	if b.Kernel != "" {
		b.KernelVersion = files[KindKernel][0].KernelVersion
	}
	b.Initrd = one(KindInitrd, "initrds")
	b.Image = one(KindImage, "images")
	b.CompressedImage = one(KindCompressedImage, "compressed images")
	b.MD5 = one(KindChecksum, "md5 files")
	b.Append = one(KindAppend, "append files")
	b.Hypervisor = one(KindHypervisor, "hypervisors")
	b.Bundle = one(KindBundle, "bundles")
	if b.Bundle != "" {
		b.BundleID = files[KindBundle][0].BundleID
	}
	b.Packages = one(KindPackages, "package lists")
	b.Changes = one(KindChanges, "change lists")
	b.Verified = one(KindVerified, "verification lists")
	if named {
		b.Result = filepath.Join(dir, ResultFile)
	}
	if (b.Loose() || b.Bundle != "") && len(ierr.Ambiguous) == 0 {
		return b, nil
	}
	if named {
		for _, f := range res.files {
			if f.ID() == id && !slices.ContainsFunc(files[f.Kind], func(g FileName) bool { return g == f }) {
				ierr.Missing = append(ierr.Missing, fmt.Sprintf("%s %s (named in %s)", f.Kind, f, ResultFile))
			}
		}
	}
	if len(ierr.Ambiguous) == 0 {
		if len(files[KindKernel]) == 0 {
			ierr.Missing = append(ierr.Missing, "kernel ("+id+"-KERNELVERSION.kernel)")
		}
		if len(files[KindInitrd]) == 0 {
			ierr.Missing = append(ierr.Missing, "initrd ("+id+".initrd)")
		}
		if len(files[KindImage]) == 0 && len(files[KindCompressedImage]) == 0 {
			ierr.Missing = append(ierr.Missing, "root image ("+id+" or "+id+".xz)")
		}
		ierr.Missing = append(ierr.Missing, "or instead of them all the bundle ("+id+".tar.xz)")
	}
	return nil, ierr
}

func isRegular(dir string, e fs.DirEntry) bool {
	if e.Type().IsRegular() {
		return true
	}
	if e.Type()&fs.ModeSymlink != 0 {
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		return err == nil && st.Mode().IsRegular()
	}
	return false
}

func sortBuilds(builds []Build) {
	slices.SortStableFunc(builds, func(a, b Build) int {
		if c := CompareVersions(b.Version, a.Version); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Arch, b.Arch)
	})
}

func clipList(s []string) []string {
	if len(s) > 20 {
		return append(s[:20:20], fmt.Sprintf("and %d more", len(s)-20))
	}
	return s
}

// Newest returns the newest of builds (as sorted by Find) whose image name is name, or the
// newest of all when name is "".
func Newest(builds []Build, name string) (Build, error) {
	var ids []string
	for _, b := range builds {
		ids = append(ids, b.ID())
	}
	best := -1
	for i, b := range builds {
		if name != "" && b.Name != name {
			continue
		}
		if best < 0 || CompareVersions(b.Version, builds[best].Version) > 0 {
			best = i
		}
	}
	if best < 0 {
		if name == "" {
			return Build{}, ErrNotFound
		}
		return Build{}, kindErrorf(ErrNotFound, "kis: no build of image %q among %s", name, listOrNone(ids))
	}
	return builds[best], nil
}

// result is what Find uses of kiwi.result.json.
type result struct {
	path  string
	hints [][2]string // name, arch pairs
	files []FileName  // KIS files it names
}

// resultJSON is the portable dump of KIWI's Result: a map from key (kis_archive, image_packages,
// xen_hypervisor, ...) to {"filename": ..., "use_for_bundle": ..., "compress": ..., "shasum": ...},
// plus "bundle_format" with name tags.
type resultEntry struct {
	Filename string `json:"filename"`
}

type bundleFormat struct {
	Tags struct {
		N string `json:"N"`
		A string `json:"A"`
	} `json:"tags"`
}

// ParseResult parses kiwi.result.json and returns the KIS files it names, split as the image
// name and architecture it records say (or by [ParseName] when it records none). Entries that
// are not KIS files are left out.
func ParseResult(data []byte) ([]FileName, error) {
	r, err := parseResult(data)
	if err != nil {
		return nil, err
	}
	return r.files, nil
}

func parseResult(data []byte) (*result, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("kis: %s: %w", ResultFile, err)
	}
	r := &result{}
	if bf, ok := raw["bundle_format"]; ok {
		var v bundleFormat
		// an array form of the tags carries no names; naming rules decide then
		if json.Unmarshal(bf, &v) == nil && v.Tags.N != "" && v.Tags.A != "" {
			r.hints = append(r.hints, [2]string{v.Tags.N, v.Tags.A})
		}
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var names []string
	for _, k := range keys {
		if k == "bundle_format" {
			continue
		}
		var e resultEntry
		if err := json.Unmarshal(raw[k], &e); err != nil {
			// KIWI's result tuple may also appear as a JSON array: [filename, ...]
			var arr []json.RawMessage
			if json.Unmarshal(raw[k], &arr) != nil || len(arr) == 0 || json.Unmarshal(arr[0], &e.Filename) != nil {
				return nil, fmt.Errorf("kis: %s: entry %q has no file name", ResultFile, clip(k))
			}
		}
		if e.Filename != "" {
			names = append(names, filepath.Base(e.Filename))
		}
	}
	if len(r.hints) == 0 {
		// The bundle's name, NAME.ARCH-VERSION.tar.xz, splits least ambiguously.
		for _, n := range names {
			if f, err := ParseName(n); err == nil && f.Kind == KindBundle {
				r.hints = append(r.hints, [2]string{f.Name, f.Arch})
				break
			}
		}
	}
	for _, n := range names {
		if f, ok := r.parse(n); ok {
			r.files = append(r.files, f)
		}
	}
	return r, nil
}

func readResult(path string) (*result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kis: %w", err)
	}
	r, err := parseResult(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	r.path = path
	return r, nil
}

// parse splits a file name, preferring the names kiwi.result.json records. r may be nil.
func (r *result) parse(file string) (FileName, bool) {
	if r != nil {
		for _, h := range r.hints {
			if f, ok := parseNameAs(file, h[0], h[1]); ok {
				return f, true
			}
		}
	}
	f, err := ParseName(file)
	return f, err == nil
}

func (r *result) byID(id string) (FileName, bool) {
	if r == nil {
		return FileName{}, false
	}
	for _, f := range r.files {
		if f.ID() == id {
			return f, true
		}
	}
	return FileName{}, false
}
