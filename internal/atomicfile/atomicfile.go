// Package atomicfile replaces files in one step: the new content is written to a temporary
// file in the same folder, synced, renamed over the old name, and the folder is synced, so a
// reader (a TFTP client fetching a boot config, a server opening an image) sees either the old
// file or the whole new one, also after a crash.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// File is a temporary file that replaces its destination when committed. Write to it through
// the embedded *os.File; then call Commit, or Abort to leave the destination as it was. Abort
// after Commit does nothing, so `defer f.Abort()` is the usual cleanup.
type File struct {
	*os.File
	dst     string
	perm    fs.FileMode
	modTime time.Time
	done    bool
}

// Create starts replacing path with a new file of permission perm (0 means 0644). The
// temporary file is hidden and named after path (".NAME.tmp-*"), in path's folder.
func Create(path string, perm fs.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	if perm == 0 {
		perm = 0o644
	}
	return &File{File: f, dst: path, perm: perm}, nil
}

// SetModTime makes Commit give the file this modification time (for instance the source's, so
// that a copy can be recognised later).
func (f *File) SetModTime(t time.Time) { f.modTime = t }

// Commit syncs the file, renames it over its destination and syncs the folder.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("atomicfile: %s: already committed or aborted", f.dst)
	}
	f.done = true
	err := f.Chmod(f.perm)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !f.modTime.IsZero() {
		err = os.Chtimes(f.Name(), f.modTime, f.modTime)
	}
	if err == nil {
		err = os.Rename(f.Name(), f.dst)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return SyncDir(filepath.Dir(f.dst))
}

// Abort removes the temporary file, leaving the destination untouched. It does nothing after
// Commit or a previous Abort.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.Name())
}

// WriteFile replaces path with data, atomically and durably. perm 0 means 0644.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

// Link makes path a hard link to src, replacing whatever path was in one step (a link to a
// temporary name, then a rename), and syncs the folder.
func Link(src, path string) error {
	tmp, err := Create(path, 0)
	if err != nil {
		return err
	}
	// Only a free name is wanted: the link is made under it.
	name := tmp.Name()
	tmp.Abort()
	if err := os.Link(src, name); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the entries of dir (a rename or removal in it) durable. File systems that
// cannot sync a folder (EINVAL) are not an error: there is nothing more to do on them.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) && !isEINVAL(err) {
		return err
	}
	return nil
}
