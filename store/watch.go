package store

import (
	"context"
	"time"
)

// DefaultWatchInterval is Watcher.Interval when zero.
const DefaultWatchInterval = 10 * time.Second

// TagChange reports that a tag appeared, moved or went away.
type TagChange struct {
	Tag      Tag  // the tag now (for a removed tag: as it was)
	Previous Hash // the manifest it named before; zero for a new tag
	Removed  bool
}

// Watcher polls a store's tags and reports each change, so that a replica boots new machines
// from a promoted version without a restart while the connections it has keep the manifest
// they attached to (a Device never changes its manifest).
type Watcher struct {
	Store *Store
	// Interval between polls; 0 means DefaultWatchInterval.
	Interval time.Duration
	// Tags limits the watch to these tag names; nil means all.
	Tags []string
	// OnChange is called, from Run's goroutine, for every tag found at the first poll and for
	// every change after. When it returns an error the change is reported again at the next
	// poll (a manifest that could not be read, say).
	OnChange func(TagChange) error
	// OnError, when not nil, is called when a poll fails; the watch goes on with what it knew.
	OnError func(error)
}

// Run polls until ctx ends and returns ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	iv := w.Interval
	if iv <= 0 {
		iv = DefaultWatchInterval
	}
	known := make(map[string]Tag)
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		w.poll(ctx, known)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (w *Watcher) poll(ctx context.Context, known map[string]Tag) {
	var tags []Tag
	var err error
	if w.Tags == nil {
		tags, err = w.Store.Tags(ctx)
	} else {
		for _, name := range w.Tags {
			tag, terr := w.Store.Tag(ctx, name)
			switch {
			case terr == nil:
				tags = append(tags, tag)
			case isNotFound(terr):
				// gone (or not yet there): reported as absent below
			default:
				err = terr
			}
		}
	}
	if err != nil {
		if ctx.Err() == nil && w.OnError != nil {
			w.OnError(err)
		}
		// A failed poll proves nothing about absence: report no removals.
		for _, tag := range tags {
			w.report(known, tag)
		}
		return
	}
	seen := make(map[string]bool, len(tags))
	for _, tag := range tags {
		seen[tag.Name] = true
		w.report(known, tag)
	}
	for name, old := range known {
		if !seen[name] {
			if w.OnChange == nil || w.OnChange(TagChange{Tag: old, Previous: old.Manifest, Removed: true}) == nil {
				delete(known, name)
			}
		}
	}
}

func (w *Watcher) report(known map[string]Tag, tag Tag) {
	old, ok := known[tag.Name]
	if ok && old.Manifest == tag.Manifest {
		return
	}
	if w.OnChange != nil && w.OnChange(TagChange{Tag: tag, Previous: old.Manifest}) != nil {
		return
	}
	known[tag.Name] = tag
}
