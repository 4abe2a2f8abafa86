package kis

import (
	"fmt"
	"strings"
)

// Kind is the role a file plays in a KIS build.
type Kind int

// The kinds of file KIWI writes for a KIS build.
const (
	KindUnknown         Kind = iota
	KindImage                // NAME.ARCH-VERSION: raw root filesystem image
	KindCompressedImage      // NAME.ARCH-VERSION.xz
	KindChecksum             // NAME.ARCH-VERSION.md5
	KindKernel               // NAME.ARCH-VERSION-KERNELVERSION.kernel
	KindInitrd               // NAME.ARCH-VERSION.initrd or .initrd.xz
	KindHypervisor           // NAME.ARCH-VERSION-xen.gz
	KindAppend               // NAME.ARCH-VERSION.append
	KindBundle               // NAME.ARCH-VERSION.tar.xz or .tar
	KindPackages             // NAME.ARCH-VERSION.packages
	KindChanges              // NAME.ARCH-VERSION.changes
	KindVerified             // NAME.ARCH-VERSION.verified
)

var kindNames = [...]string{
	KindUnknown:         "unknown",
	KindImage:           "image",
	KindCompressedImage: "compressed image",
	KindChecksum:        "md5",
	KindKernel:          "kernel",
	KindInitrd:          "initrd",
	KindHypervisor:      "hypervisor",
	KindAppend:          "append",
	KindBundle:          "bundle",
	KindPackages:        "packages",
	KindChanges:         "changes",
	KindVerified:        "verified",
}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// knownArches are the architecture names KIWI uses (uname -m, with ix86 for 32-bit x86). They
// only break ties when a name could be split in more than one way; other arches are accepted.
var knownArches = map[string]bool{
	"x86_64": true, "ix86": true, "aarch64": true, "armv7l": true, "armv6l": true,
	"armv8l": true, "ppc64le": true, "ppc64": true, "s390x": true, "riscv64": true,
	"loongarch64": true,
}

// FileName is the name of a file of a KIS build, split into its parts. Its String method
// returns the name it was parsed from.
type FileName struct {
	Name          string // image name (<image name="..."> in config.xml); may contain dots
	Arch          string // architecture, as KIWI names it: x86_64, ix86, aarch64, ...
	Version       string // image version, digits separated by dots: 1.15.3
	KernelVersion string // for KindKernel only: the kernel release, 6.1.0-13-amd64
	BundleID      string // for bundles and package lists copied by `kiwi-ng result bundle --id ID`
	Kind          Kind
	Suffix        string // everything after NAME.ARCH-VERSION: "", ".xz", "-6.1.0.kernel", ...
}

// ID returns NAME.ARCH-VERSION, the stem every file of the build starts with.
func (f FileName) ID() string { return f.Name + "." + f.Arch + "-" + f.Version }

// String returns the file name.
func (f FileName) String() string { return f.ID() + f.Suffix }

// ParseName splits the base name of a KIS result file into name, arch, version and kind. Since
// an image name, a kernel version and a bundle ID may contain dots and dashes, more than one
// split may yield a known suffix: a known architecture wins, then the rightmost split (image
// names are more likely than suffixes to look like NAME.ARCH-VERSION). kiwi.result.json, when
// present, settles the question for Find.
func ParseName(file string) (FileName, error) {
	var first FileName
	found := false
	for i := len(file) - 1; i > 0; i-- {
		if file[i] != '.' {
			continue
		}
		f, ok := splitAt(file, i)
		if !ok {
			continue
		}
		if knownArches[f.Arch] {
			return f, nil
		}
		if !found {
			first, found = f, true
		}
	}
	if !found {
		return FileName{}, fmt.Errorf("kis: file name %q is not NAME.ARCH-VERSION[suffix] with a known suffix", file)
	}
	return first, nil
}

// parseNameAs parses file as a file of the build with the given name and arch, as
// kiwi.result.json tells them.
func parseNameAs(file, name, arch string) (FileName, bool) {
	i := len(name)
	if !strings.HasPrefix(file, name+"."+arch+"-") {
		return FileName{}, false
	}
	f, ok := splitAt(file, i)
	if !ok || f.Arch != arch {
		return FileName{}, false
	}
	return f, true
}

// splitAt tries the dot at file[i] as the one between NAME and ARCH.
func splitAt(file string, i int) (FileName, bool) {
	name, rest := file[:i], file[i+1:]
	if strings.ContainsAny(name, "/ \t\n\x00") {
		return FileName{}, false
	}
	dash := strings.IndexByte(rest, '-')
	if dash <= 0 {
		return FileName{}, false
	}
	arch := rest[:dash]
	if !validArch(arch) {
		return FileName{}, false
	}
	rest = rest[dash+1:]
	n := versionLen(rest)
	if n == 0 {
		return FileName{}, false
	}
	f := FileName{Name: name, Arch: arch, Version: rest[:n], Suffix: rest[n:]}
	f.Kind, f.KernelVersion, f.BundleID = classify(f.Suffix)
	if f.Kind == KindUnknown {
		return FileName{}, false
	}
	return f, true
}

func validArch(s string) bool {
	digits := true
	for _, c := range []byte(s) {
		switch {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
			digits = false
		default:
			return false
		}
	}
	return s != "" && !digits
}

// versionLen returns the length of the version (digits separated by single dots) that s
// starts with.
func versionLen(s string) int {
	n := 0
	for {
		j := n
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == n {
			// a dot not followed by a digit belongs to the suffix
			if n > 0 {
				return n - 1
			}
			return 0
		}
		n = j
		if n < len(s) && s[n] == '.' {
			n++
			continue
		}
		return n
	}
}

// classify returns the kind of file that suffix names, the kernel version for a kernel, and
// the ID `kiwi-ng result bundle --id ID` inserts after the version of the files it copies.
func classify(suffix string) (kind Kind, kernelVersion, bundleID string) {
	switch suffix {
	case "":
		return KindImage, "", ""
	case ".xz":
		return KindCompressedImage, "", ""
	case ".md5":
		return KindChecksum, "", ""
	case ".append":
		return KindAppend, "", ""
	case ".initrd", ".initrd.xz":
		return KindInitrd, "", ""
	case ".tar.xz", ".tar":
		return KindBundle, "", ""
	case ".packages":
		return KindPackages, "", ""
	case ".changes":
		return KindChanges, "", ""
	case ".verified":
		return KindVerified, "", ""
	}
	if len(suffix) < 2 || suffix[0] != '-' || strings.ContainsAny(suffix, "/ \t\n\x00") {
		return KindUnknown, "", ""
	}
	if strings.HasPrefix(suffix, "-xen") && strings.HasSuffix(suffix, ".gz") && len(suffix) >= len("-xen.gz") {
		return KindHypervisor, "", ""
	}
	if kv, ok := strings.CutSuffix(suffix[1:], ".kernel"); ok && kv != "" {
		return KindKernel, kv, ""
	}
	for _, k := range []struct {
		ext  string
		kind Kind
	}{{".tar.xz", KindBundle}, {".tar", KindBundle}, {".packages", KindPackages}, {".changes", KindChanges},
		{".verified", KindVerified}} {
		if id, ok := strings.CutSuffix(suffix[1:], k.ext); ok && id != "" {
			return k.kind, "", id
		}
	}
	return KindUnknown, "", ""
}

// CompareVersions compares two dotted versions part by part as numbers, so that
// 1.15.3 < 1.15.10, and returns -1, 0 or +1. Parts that are not numbers compare as strings; a
// version with more parts is newer when the common parts are equal.
func CompareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if c := comparePart(as[i], bs[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return 0
}

func comparePart(a, b string) int {
	if isDigits(a) && isDigits(b) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

func isDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
