package tftp

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// FileServerConfig configures NewFileServer. The zero value serves names exactly as sent.
type FileServerConfig struct {
	// Remap, if set, rewrites each requested name before it is checked and looked up, as
	// tftpd-hpa's -m rules do: for example SlashPath for Windows-style clients, or FoldCase.
	Remap func(name string) string
}

// FileServer returns a Handler that serves the regular files under the directory root,
// read-only. See NewFileServer.
func FileServer(root string) Handler { return NewFileServer(root, nil) }

// NewFileServer returns a Handler that serves the regular files under the directory root,
// read-only, and can never leave it: names with NUL bytes or backslashes, absolute names, names
// with "." or ".." elements and symbolic links that point outside root are refused with an
// access violation (os.Root enforces the last), and so is anything that is not a regular file
// (directories, devices, FIFOs). Write requests are refused. A nil cfg means the zero
// FileServerConfig. root is opened for each request, so it may be replaced while serving.
func NewFileServer(root string, cfg *FileServerConfig) Handler {
	fsrv := &fileServer{root: root}
	if cfg != nil {
		fsrv.cfg = *cfg
	}
	return fsrv
}

type fileServer struct {
	root string
	cfg  FileServerConfig
}

// SlashPath maps a Windows-style name to a slash-separated relative one: backslashes become
// slashes and leading slashes are dropped (GRUB and some firmware send "/boot/x").
func SlashPath(name string) string {
	return strings.TrimLeft(strings.ReplaceAll(name, `\`, "/"), "/")
}

// FoldCase lower-cases a name, for clients that do not preserve case (serve a lower-case tree).
func FoldCase(name string) string { return strings.ToLower(name) }

// cleanName applies remap, if not nil, to name and checks that the result stays under a root.
// It returns that result, or the message for the client saying why it is refused (without the
// package prefix: ErrorPacket.Error adds "tftp: access violation: ").
func cleanName(name string, remap func(string) string) (string, string) {
	if remap != nil {
		name = remap(name)
	}
	switch {
	case strings.IndexByte(name, 0) >= 0:
		return "", "name " + quoteName(name) + " contains a NUL byte"
	case strings.IndexByte(name, '\\') >= 0:
		return "", "name " + quoteName(name) + " contains a backslash"
	case strings.HasPrefix(name, "/"):
		return "", "name " + quoteName(name) + " is absolute"
	case !fs.ValidPath(name) || name == ".":
		return "", "name " + quoteName(name) + " is not a clean relative path"
	}
	return name, ""
}

func (fsrv *fileServer) ServeTFTP(w ResponseWriter, r *Request) {
	if r.Op != OpRRQ {
		w.Error(ErrAccessViolation, "read-only server")
		return
	}
	name, refusal := cleanName(r.Filename, fsrv.cfg.Remap)
	if refusal != "" {
		w.Error(ErrAccessViolation, refusal)
		return
	}
	root, err := os.OpenRoot(fsrv.root)
	if err != nil {
		w.Error(ErrNotDefined, "server root unavailable")
		return
	}
	defer root.Close()
	// O_NONBLOCK keeps a FIFO from blocking the open; it is refused below anyway.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		code, msg := openErrorCode(name, err)
		w.Error(code, msg)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		w.Error(ErrNotDefined, "stat failed")
		return
	}
	if !fi.Mode().IsRegular() {
		w.Error(ErrAccessViolation, quoteName(name)+" is not a regular file")
		return
	}
	_ = w.ServeContent(f, fi.Size())
}

// openErrorCode maps an open error to the TFTP error the client sees.
func openErrorCode(name string, err error) (ErrorCode, string) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ErrFileNotFound, quoteName(name) + " not found"
	case errors.Is(err, fs.ErrPermission):
		return ErrAccessViolation, quoteName(name) + ": permission denied"
	default:
		// Includes os.Root's "path escapes from parent" for symbolic links leading out.
		return ErrAccessViolation, quoteName(name) + ": access refused"
	}
}

// FSServer returns a Handler that serves the files of fsys read-only, for example an embed.FS.
// Names are checked as by NewFileServer (fs.ValidPath). Files that do not implement
// io.ReaderAt are read into memory for each request.
func FSServer(fsys fs.FS) Handler {
	return HandlerFunc(func(w ResponseWriter, r *Request) {
		if r.Op != OpRRQ {
			w.Error(ErrAccessViolation, "read-only server")
			return
		}
		name, refusal := cleanName(r.Filename, nil)
		if refusal != "" {
			w.Error(ErrAccessViolation, refusal)
			return
		}
		f, err := fsys.Open(name)
		if err != nil {
			code, msg := openErrorCode(name, err)
			w.Error(code, msg)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			w.Error(ErrAccessViolation, quoteName(name)+" is not a regular file")
			return
		}
		if ra, ok := f.(io.ReaderAt); ok {
			_ = w.ServeContent(ra, fi.Size())
			return
		}
		b, err := io.ReadAll(f)
		if err != nil {
			w.Error(ErrNotDefined, "read error")
			return
		}
		_ = w.ServeContent(bytes.NewReader(b), int64(len(b)))
	})
}

// DefaultMaxUploadSize is the upload limit of UploadServer when UploadConfig.MaxSize is 0.
const DefaultMaxUploadSize = 64 << 20

// UploadConfig configures UploadServer. The zero value accepts uploads of up to
// DefaultMaxUploadSize bytes that do not replace existing files.
type UploadConfig struct {
	// MaxSize is the largest upload accepted, in bytes; 0 means DefaultMaxUploadSize and a
	// negative value means no limit. A client that announces a larger tsize is refused before
	// any data moves; one that sends more is cut off with "disk full".
	MaxSize int64
	// Overwrite allows an upload to replace an existing file.
	Overwrite bool
	// Remap rewrites names as FileServerConfig.Remap does.
	Remap func(name string) string
}

// UploadServer returns a Handler for Server.WriteHandler that stores uploads under the
// directory dir, confined to it as NewFileServer is. An upload is written to a temporary file in
// the target's directory and renamed into place only when complete, so a failed upload leaves
// no partial file. Parent directories must exist. A nil cfg means the zero UploadConfig.
func UploadServer(dir string, cfg *UploadConfig) Handler {
	u := &uploadServer{dir: dir}
	if cfg != nil {
		u.cfg = *cfg
	}
	if u.cfg.MaxSize == 0 {
		u.cfg.MaxSize = DefaultMaxUploadSize
	}
	return u
}

type uploadServer struct {
	dir string
	cfg UploadConfig
}

func (u *uploadServer) ServeTFTP(w ResponseWriter, r *Request) {
	if r.Op != OpWRQ {
		w.Error(ErrIllegalOperation, "upload-only handler")
		return
	}
	name, refusal := cleanName(r.Filename, u.cfg.Remap)
	if refusal != "" {
		w.Error(ErrAccessViolation, refusal)
		return
	}
	if u.cfg.MaxSize > 0 && r.Size > u.cfg.MaxSize {
		w.Error(ErrDiskFull, fmt.Sprintf("upload of %d bytes exceeds the limit of %d", r.Size, u.cfg.MaxSize))
		return
	}
	root, err := os.OpenRoot(u.dir)
	if err != nil {
		w.Error(ErrNotDefined, "upload directory unavailable")
		return
	}
	defer root.Close()
	if !u.cfg.Overwrite {
		if _, err := root.Lstat(name); err == nil {
			w.Error(ErrFileExists, quoteName(name)+" already exists")
			return
		}
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	dir, base := path.Split(name)
	tmp := dir + "." + base + ".upload-" + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		code, msg := openErrorCode(name, err)
		w.Error(code, msg)
		return
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			_ = root.Remove(tmp)
		}
	}()
	dst := io.Writer(f)
	if u.cfg.MaxSize > 0 {
		dst = &limitWriter{w: f, left: u.cfg.MaxSize}
	}
	if _, err := w.Receive(dst); err != nil {
		return
	}
	if err := f.Close(); err != nil {
		w.Error(ErrDiskFull, "cannot store the upload")
		return
	}
	if u.cfg.Overwrite {
		err = root.Rename(tmp, name)
	} else {
		// Link fails if the name appeared meanwhile, so an existing file is never replaced.
		if err = root.Link(tmp, name); err == nil {
			_ = root.Remove(tmp)
		}
	}
	ok = err == nil
	switch {
	case errors.Is(err, fs.ErrExist):
		w.Error(ErrFileExists, quoteName(name)+" already exists")
	case err != nil:
		w.Error(ErrAccessViolation, "cannot store "+quoteName(name))
	}
}

// limitWriter fails with ErrDiskFull once more than left bytes are written.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, &ErrorPacket{Code: ErrDiskFull, Message: "upload exceeds the size limit"}
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}
