package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// unixSocketMode lets the node's user and group connect.
const unixSocketMode = 0o660

// listenUnix listens on a Unix socket at path with mode 0660. A stale
// socket file left by a node that died is removed; a socket another process
// still serves, or a file that is not a socket, is left alone and refused.
// It returns the socket file's info, to tell it apart from a successor's.
func listenUnix(path string) (*net.UnixListener, os.FileInfo, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, nil, fmt.Errorf("--unix %s exists and is not a socket; remove it or choose another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, nil, fmt.Errorf("--unix %s is in use by another process; stop it or choose another path", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("remove stale socket --unix %s: %w", path, err)
		}
	}
	// Bind inside a private directory and move the socket into place once
	// its mode is set, so nobody can connect while it has the umask's mode.
	dir, err := os.MkdirTemp(filepath.Dir(path), ".mcpgw-")
	if err != nil {
		return nil, nil, fmt.Errorf("listen --unix %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen --unix %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // the file moves; removeSocket deletes it
	if err := os.Chmod(tmp, unixSocketMode); err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("listen --unix %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("listen --unix %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("listen --unix %s: %w", path, err)
	}
	return ln, fi, nil
}

// removeSocket deletes the socket file at path if it is still the one
// listenUnix created.
func removeSocket(path string, created os.FileInfo) {
	if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, created) {
		os.Remove(path)
	}
}
