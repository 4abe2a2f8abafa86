package store

import (
	"context"
	"fmt"
	"sync"
)

// Version is one manifest of a tag, opened for serving: its image, kernel and initrd as
// devices that never change, so a connection that attached to it keeps it after the tag moves.
type Version struct {
	Tag                   Tag
	Manifest              *Manifest
	Image, Kernel, Initrd *Device
}

// Images is a replica's view of a store: for each tag, the Version of the manifest it names
// now. Feed it the changes a Watcher reports (Apply), or let it run its own (Watch). It is
// safe for concurrent use.
type Images struct {
	cache *Cache

	mu  sync.RWMutex
	cur map[string]*Version
}

// NewImages returns an empty view that opens devices through c.
func NewImages(c *Cache) *Images { return &Images{cache: c, cur: make(map[string]*Version)} }

// Get returns the current version of tag.
func (im *Images) Get(tag string) (*Version, bool) {
	im.mu.RLock()
	defer im.mu.RUnlock()
	v, ok := im.cur[tag]
	return v, ok
}

// All returns the current version of every tag.
func (im *Images) All() map[string]*Version {
	im.mu.RLock()
	defer im.mu.RUnlock()
	out := make(map[string]*Version, len(im.cur))
	for k, v := range im.cur {
		out[k] = v
	}
	return out
}

// Apply installs a change: it reads the tag's new manifest and opens its devices (the old
// version stays with whoever holds it), or forgets a removed tag. On error the previous version
// stays current.
func (im *Images) Apply(ctx context.Context, ch TagChange) error {
	if ch.Removed {
		im.mu.Lock()
		delete(im.cur, ch.Tag.Name)
		im.mu.Unlock()
		return nil
	}
	m, err := im.cache.Store().Manifest(ctx, ch.Tag.Manifest)
	if err != nil {
		return fmt.Errorf("store: tag %s: %w", ch.Tag.Name, err)
	}
	v := &Version{Tag: ch.Tag, Manifest: m}
	for _, b := range []struct {
		name string
		dev  **Device
	}{{"image", &v.Image}, {"kernel", &v.Kernel}, {"initrd", &v.Initrd}} {
		if *b.dev, err = im.cache.Open(ch.Tag.Manifest, m, b.name); err != nil {
			return err
		}
	}
	im.mu.Lock()
	im.cur[ch.Tag.Name] = v
	im.mu.Unlock()
	return nil
}

// Watch follows the store's tags with a Watcher until ctx ends. Each change is applied, then
// passed to onChange (when not nil) with the error of applying it (a change that failed is
// tried again at the next poll); poll errors go to onChange
// too, as a change with an empty tag name.
func (im *Images) Watch(ctx context.Context, w Watcher, onChange func(TagChange, error)) error {
	w.Store = im.cache.Store()
	w.OnChange = func(ch TagChange) error {
		err := im.Apply(ctx, ch)
		if onChange != nil {
			onChange(ch, err)
		}
		return err
	}
	if onChange != nil {
		w.OnError = func(err error) { onChange(TagChange{}, err) }
	}
	return w.Run(ctx)
}
