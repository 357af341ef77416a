// Package atomicfile writes small files (ids, keys, certificates) so that a
// crash leaves either no file, the old one or the whole new one, never a
// torn one, and so that a file that must not be replaced is not.
package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// ErrExists is returned by Create when path already exists.
var ErrExists = fs.ErrExist

// Write replaces path with data, creating its directory (0700) if needed.
func Write(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, true)
}

// Create writes data to path unless path exists, in which case it returns an
// error wrapping ErrExists and leaves the file alone.
func Create(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm fs.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if !replace {
		// Checked early for a clear error before any work; the link below
		// is what makes the refusal race-free.
		if _, err := os.Lstat(path); err == nil {
			return &fs.PathError{Op: "create", Path: path, Err: ErrExists}
		}
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		return syncDir(dir)
	}
	// Link fails if path exists, unlike rename, which would replace it.
	switch err := os.Link(tmp, path); {
	case errors.Is(err, fs.ErrExist):
		return &fs.PathError{Op: "create", Path: path, Err: ErrExists}
	case err != nil:
		// The filesystem has no hard links: fall back to rename after the
		// check above, racy only against another writer.
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	default:
		if err := os.Remove(tmp); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
