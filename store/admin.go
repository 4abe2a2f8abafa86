package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

func (s *Store) writeTag(ctx context.Context, t Tag) error {
	if err := ValidTagName(t.Name); err != nil {
		return err
	}
	if t.Time.IsZero() {
		t.Time = time.Now().UTC().Truncate(time.Second)
	}
	data, err := MarshalTag(t)
	if err != nil {
		return err
	}
	return s.put(ctx, s.tagKey(t.Name), data, "application/json")
}

// Tag returns the tag name; a missing tag gives an error wrapping ErrNotFound.
func (s *Store) Tag(ctx context.Context, name string) (Tag, error) {
	if err := ValidTagName(name); err != nil {
		return Tag{}, err
	}
	data, err := s.get(ctx, s.tagKey(name), MaxTagSize)
	if err != nil {
		return Tag{}, err
	}
	return ParseTag(name, data)
}

// Tags returns every tag, sorted by name. Tags that cannot be read or parsed are left out and
// reported in the joined error next to the others.
func (s *Store) Tags(ctx context.Context) ([]Tag, error) {
	objs, err := s.list(ctx, "tags")
	if err != nil {
		return nil, err
	}
	tags := make([]Tag, len(objs))
	errs := make([]error, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, o := range objs {
		g.Go(func() error {
			data, err := s.get(gctx, s.tagKey(o.name), MaxTagSize)
			if err == nil {
				tags[i], err = ParseTag(o.name, data)
			}
			errs[i] = err
			return nil
		})
	}
	g.Wait()
	var out []Tag
	for i := range tags {
		if errs[i] == nil {
			out = append(out, tags[i])
		}
	}
	slices.SortFunc(out, func(a, b Tag) int { return strings.Compare(a.Name, b.Name) })
	return out, errors.Join(errs...)
}

// Manifest reads and checks the manifest id: its bytes must hash to id.
func (s *Store) Manifest(ctx context.Context, id Hash) (*Manifest, error) {
	data, err := s.get(ctx, s.manifestKey(id), MaxManifestSize)
	if err != nil {
		return nil, err
	}
	if Sum(data) != id {
		return nil, fmt.Errorf("store: manifest %s: content hashes to %s", id, Sum(data))
	}
	return ParseManifest(data)
}

// ManifestInfo is one manifest of a listing.
type ManifestInfo struct {
	ID       Hash
	Manifest *Manifest
	Stored   time.Time // when the object was written
	Tags     []string  // the tags naming it
}

// Listing is the content of a store.
type Listing struct {
	Tags      []Tag
	Manifests []ManifestInfo // newest first (by Created)
	Chunks    int            // chunk objects
	Bytes     int64          // their bytes
}

// List returns the tags, manifests and chunk totals of the store.
func (s *Store) List(ctx context.Context) (*Listing, error) {
	tags, err := s.Tags(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := s.manifests(ctx)
	if err != nil {
		return nil, err
	}
	for i := range infos {
		for _, t := range tags {
			if t.Manifest == infos[i].ID {
				infos[i].Tags = append(infos[i].Tags, t.Name)
			}
		}
	}
	chunks, err := s.list(ctx, "chunks")
	if err != nil {
		return nil, err
	}
	l := &Listing{Tags: tags, Manifests: infos, Chunks: len(chunks)}
	for _, c := range chunks {
		l.Bytes += c.size
	}
	return l, nil
}

// manifests reads every manifest, newest first. One that cannot be read or checked is an
// error: callers (GC above all) must not act on a partial view.
func (s *Store) manifests(ctx context.Context) ([]ManifestInfo, error) {
	objs, err := s.list(ctx, "manifests")
	if err != nil {
		return nil, err
	}
	infos := make([]ManifestInfo, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, o := range objs {
		g.Go(func() error {
			id, err := ParseHash(o.name)
			if err != nil {
				return fmt.Errorf("store: foreign object %s in manifests/: %w", o.name, err)
			}
			m, err := s.Manifest(gctx, id)
			if err != nil {
				return err
			}
			infos[i] = ManifestInfo{ID: id, Manifest: m, Stored: o.modified}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.SortFunc(infos, func(a, b ManifestInfo) int {
		if c := b.Manifest.Created.Compare(a.Manifest.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
	return infos, nil
}

// Resolve finds the manifest ref names: its full ID, a unique prefix of at least 8 hex digits
// of it, or a build ID NAME.ARCH-VERSION (the newest manifest of that build).
func (s *Store) Resolve(ctx context.Context, ref string) (Hash, error) {
	if h, err := ParseHash(ref); err == nil {
		if ok, err := s.exists(ctx, s.manifestKey(h), -1); err != nil {
			return Hash{}, err
		} else if !ok {
			return Hash{}, fmt.Errorf("store: manifest %s: %w", h, ErrNotFound)
		}
		return h, nil
	}
	infos, err := s.manifests(ctx)
	if err != nil {
		return Hash{}, err
	}
	var found []Hash
	for _, in := range infos {
		if in.Manifest.Build == ref {
			return in.ID, nil // newest first
		}
		if len(ref) >= 8 && strings.HasPrefix(in.ID.String(), ref) {
			found = append(found, in.ID)
		}
	}
	switch len(found) {
	case 0:
		return Hash{}, fmt.Errorf("store: no manifest %q (neither an ID, an ID prefix of 8+ digits nor a build): %w", clip(ref), ErrNotFound)
	case 1:
		return found[0], nil
	}
	return Hash{}, fmt.Errorf("store: manifest prefix %q is ambiguous: %d manifests", clip(ref), len(found))
}

// Promote moves tag to the manifest ref names (see Resolve) after checking that the manifest
// reads and that all its chunks are in the store.
func (s *Store) Promote(ctx context.Context, tag, ref string) (Tag, error) {
	if err := ValidTagName(tag); err != nil {
		return Tag{}, err
	}
	id, err := s.Resolve(ctx, ref)
	if err != nil {
		return Tag{}, err
	}
	m, err := s.Manifest(ctx, id)
	if err != nil {
		return Tag{}, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for h := range m.Chunks() {
		g.Go(func() error {
			ok, err := s.exists(gctx, s.chunkKey(h), -1)
			if err == nil && !ok {
				err = fmt.Errorf("store: manifest %s (%s) misses chunk %s: %w", id, m.Build, h, ErrNotFound)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return Tag{}, err
	}
	t := Tag{Name: tag, Manifest: id, Build: m.Build, Time: time.Now().UTC().Truncate(time.Second)}
	if err := s.writeTag(ctx, t); err != nil {
		return Tag{}, err
	}
	return t, nil
}

// DefaultGrace is GCOptions.Grace when zero.
const DefaultGrace = time.Hour

// GCOptions tune GC.
type GCOptions struct {
	// Grace protects objects younger than it: the chunks of a push in progress (written before
	// its manifest) and, with PruneManifests, recent manifests. 0 means DefaultGrace.
	Grace time.Duration
	// PruneManifests also deletes manifests that no tag names and that are older than Grace,
	// and then the chunks only they needed. Without it every manifest keeps its chunks, so
	// any version can be promoted again.
	PruneManifests bool
	// DryRun reports what would be deleted without deleting it.
	DryRun bool
	// Now is the time ages are measured from; zero means time.Now().
	Now time.Time
}

// GCResult says what GC removed (or, with DryRun, would remove).
type GCResult struct {
	Manifests     []Hash // manifests deleted
	Chunks        int    // chunks deleted
	Bytes         int64  // their bytes
	KeptChunks    int    // chunks a manifest needs
	YoungChunks   int    // unreferenced chunks kept because they are younger than Grace
	MissingChunks int    // chunks a manifest needs that are not in the store
}

// GC deletes the chunks that no manifest references and that are older than the grace age, and
// with PruneManifests first the untagged manifests older than it. It never deletes a chunk that
// a tagged manifest or a manifest younger than the grace age needs. It reads every manifest
// first and stops without deleting anything if one cannot be read.
//
// GC takes no lock: a push running at the same time is protected by the grace age for the
// chunks it uploads, and checks the chunks it reuses once more before it moves its tag.
func (s *Store) GC(ctx context.Context, opts *GCOptions) (*GCResult, error) {
	var o GCOptions
	if opts != nil {
		o = *opts
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	// Chunks are listed before the manifests, so a chunk written after this listing is not a
	// candidate, and a manifest written before the chunk listing is seen.
	chunks, err := s.list(ctx, "chunks")
	if err != nil {
		return nil, err
	}
	tags, err := s.Tags(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: gc stops: %w", err)
	}
	infos, err := s.manifests(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: gc stops: %w", err)
	}
	tagged := make(map[Hash]bool)
	for _, t := range tags {
		tagged[t.Manifest] = true
	}
	res := &GCResult{}
	need := make(map[Hash]struct{})
	for _, in := range infos {
		if o.PruneManifests && !tagged[in.ID] && o.Now.Sub(in.Stored) > o.Grace {
			if !o.DryRun {
				if err := s.delete(ctx, s.manifestKey(in.ID)); err != nil {
					return res, err
				}
			}
			res.Manifests = append(res.Manifests, in.ID)
			continue
		}
		for h := range in.Manifest.Chunks() {
			need[h] = struct{}{}
		}
	}
	present := make(map[Hash]bool, len(chunks))
	for _, c := range chunks {
		h, err := ParseHash(c.name)
		if err != nil {
			continue // not ours
		}
		present[h] = true
		if _, ok := need[h]; ok {
			res.KeptChunks++
			continue
		}
		if o.Now.Sub(c.modified) <= o.Grace {
			res.YoungChunks++
			continue
		}
		if !o.DryRun {
			if err := s.delete(ctx, s.chunkKey(h)); err != nil {
				return res, err
			}
		}
		res.Chunks++
		res.Bytes += c.size
	}
	for h := range need {
		if !present[h] {
			res.MissingChunks++
		}
	}
	return res, nil
}
