package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ManifestFormat names the manifest layout this package writes and reads.
const ManifestFormat = "netroot-manifest/1"

const (
	// DefaultChunkSize is the chunk size Push uses when PushOptions.ChunkSize is zero.
	DefaultChunkSize = 1 << 20
	// MinChunkSize and MaxChunkSize bound the chunk size a manifest may name; it is a power of
	// two between them.
	MinChunkSize = 4 << 10
	MaxChunkSize = 64 << 20
	// MaxManifestSize bounds the manifests this package reads and writes: at 1 MiB chunks it
	// describes images of a few TiB.
	MaxManifestSize = 64 << 20
	// MaxTagSize bounds a tag object.
	MaxTagSize = 4 << 10
)

// ErrInvalid is wrapped by the errors of ParseManifest and ParseTag.
var ErrInvalid = errors.New("store: invalid")

// Hash is the SHA-256 of a chunk or a manifest; chunks and manifests are stored under its hex
// form.
type Hash [sha256.Size]byte

// Sum returns the Hash of b.
func Sum(b []byte) Hash { return sha256.Sum256(b) }

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes h as 64 lowercase hex digits.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText accepts exactly 64 lowercase hex digits.
func (h *Hash) UnmarshalText(text []byte) error {
	v, err := ParseHash(string(text))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// ParseHash parses 64 lowercase hex digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("%w hash %q: want %d hex digits", ErrInvalid, clip(s), 2*len(h))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return h, fmt.Errorf("%w hash %q: want lowercase hex digits", ErrInvalid, clip(s))
		}
	}
	_, err := hex.Decode(h[:], []byte(s))
	return h, err
}

// Blob is a file stored as a run of chunks: every chunk holds ChunkSize bytes of it except the
// last, which holds the rest.
type Blob struct {
	Size   int64  `json:"size"`
	Chunks []Hash `json:"chunks"`
}

// Manifest describes one pushed KIS build: its files as chunk lists, and what identifies the
// build. It is stored as JSON under the hash of its bytes, so a manifest never changes once
// written; a Tag names the manifest an image name currently boots.
type Manifest struct {
	Format        string    `json:"format"`
	Build         string    `json:"build"` // NAME.ARCH-VERSION
	Name          string    `json:"name"`
	Arch          string    `json:"arch"`
	Version       string    `json:"version"`
	KernelVersion string    `json:"kernel_version,omitempty"`
	MD5           string    `json:"md5"`              // the build's .md5 sum of the raw image
	Append        string    `json:"append,omitempty"` // the build's .append file
	Created       time.Time `json:"created"`
	ChunkSize     int64     `json:"chunk_size"`
	Image         Blob      `json:"image"`
	Kernel        Blob      `json:"kernel"`
	Initrd        Blob      `json:"initrd"`
}

// ChunkCount returns how many chunks a blob of size bytes has at chunk size cs.
func ChunkCount(size, cs int64) int64 {
	if size <= 0 || cs <= 0 {
		return 0
	}
	return (size + cs - 1) / cs
}

// Blobs returns the manifest's blobs with their names, image first.
func (m *Manifest) Blobs() []NamedBlob {
	return []NamedBlob{{"image", &m.Image}, {"kernel", &m.Kernel}, {"initrd", &m.Initrd}}
}

// NamedBlob is a blob of a manifest with the name of its role ("image", "kernel", "initrd").
type NamedBlob struct {
	Name string
	*Blob
}

// Chunks returns the distinct chunks the manifest references.
func (m *Manifest) Chunks() map[Hash]struct{} {
	set := make(map[Hash]struct{})
	for _, b := range m.Blobs() {
		for _, h := range b.Chunks {
			set[h] = struct{}{}
		}
	}
	return set
}

// Validate checks that m is complete and consistent: known format, a chunk size that is a
// power of two within bounds, chunk lists whose lengths match the sizes, an MD5 of 32 hex
// digits and a build ID made of name, arch and version.
func (m *Manifest) Validate() error {
	if m.Format != ManifestFormat {
		return fmt.Errorf("%w manifest: format %q, want %q", ErrInvalid, clip(m.Format), ManifestFormat)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize&(m.ChunkSize-1) != 0 {
		return fmt.Errorf("%w manifest: chunk size %d is not a power of two in [%d, %d]", ErrInvalid, m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if m.Name == "" || m.Arch == "" || m.Version == "" {
		return fmt.Errorf("%w manifest: name %q, arch %q and version %q must all be set", ErrInvalid, clip(m.Name), clip(m.Arch), clip(m.Version))
	}
	if want := m.Name + "." + m.Arch + "-" + m.Version; m.Build != want {
		return fmt.Errorf("%w manifest: build %q, want %q", ErrInvalid, clip(m.Build), clip(want))
	}
	if !isHex(m.MD5, 32) {
		return fmt.Errorf("%w manifest: md5 %q is not 32 lowercase hex digits", ErrInvalid, clip(m.MD5))
	}
	for _, b := range m.Blobs() {
		if b.Size < 0 {
			return fmt.Errorf("%w manifest: %s size %d", ErrInvalid, b.Name, b.Size)
		}
		if n := ChunkCount(b.Size, m.ChunkSize); int64(len(b.Chunks)) != n {
			return fmt.Errorf("%w manifest: %s of %d bytes has %d chunks, want %d", ErrInvalid, b.Name, b.Size, len(b.Chunks), n)
		}
	}
	if m.Image.Size == 0 {
		return fmt.Errorf("%w manifest: empty image", ErrInvalid)
	}
	return nil
}

// MarshalManifest returns the stored form of m (indented JSON) and its ID, the hash of those
// bytes.
func MarshalManifest(m *Manifest) ([]byte, Hash, error) {
	if err := m.Validate(); err != nil {
		return nil, Hash{}, err
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, Hash{}, fmt.Errorf("store: %w", err)
	}
	b = append(b, '\n')
	if len(b) > MaxManifestSize {
		return nil, Hash{}, fmt.Errorf("%w manifest: %d bytes, more than %d", ErrInvalid, len(b), MaxManifestSize)
	}
	return b, Sum(b), nil
}

// ParseManifest parses and validates a stored manifest. Unknown fields are an error, so a
// manifest from a newer format is not half-understood.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("%w manifest: %d bytes, more than %d", ErrInvalid, len(data), MaxManifestSize)
	}
	var m Manifest
	if err := decodeStrict(data, &m); err != nil {
		return nil, fmt.Errorf("%w manifest: %v", ErrInvalid, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Tag names the manifest an image name currently boots. It is the only mutable object in a
// store: Push and Promote overwrite it, and it is written after everything it names.
type Tag struct {
	Name     string    `json:"-"`        // the image name, from the object's key
	Manifest Hash      `json:"manifest"` // ID of the manifest
	Build    string    `json:"build"`    // the manifest's build ID, for people reading lists
	Time     time.Time `json:"time"`     // when the tag was written
}

// MarshalTag returns the stored form of t.
func MarshalTag(t Tag) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseTag parses a stored tag; name is the tag's name from its key.
func ParseTag(name string, data []byte) (Tag, error) {
	if len(data) > MaxTagSize {
		return Tag{}, fmt.Errorf("%w tag %q: %d bytes, more than %d", ErrInvalid, clip(name), len(data), MaxTagSize)
	}
	var t Tag
	if err := decodeStrict(data, &t); err != nil {
		return Tag{}, fmt.Errorf("%w tag %q: %v", ErrInvalid, clip(name), err)
	}
	if t.Manifest == (Hash{}) {
		return Tag{}, fmt.Errorf("%w tag %q: no manifest", ErrInvalid, clip(name))
	}
	t.Name = name
	return t, nil
}

func decodeStrict(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// clip shortens untrusted strings that go into error messages.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
