//go:build unix

package transport

import (
	"errors"
	"net"
	"syscall"
)

// connOpen reports whether an idle connection is still open with nothing
// unread on it: the server may have closed it while it was idle (Node's
// servers close idle connections after 5 s). It peeks without waiting.
func connOpen(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true // cannot tell; a write that fails is sent again on a new connection
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	open := false
	var b [1]byte
	if err := rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read yet is an open, quiet connection; end of stream,
		// an error or unsolicited bytes are not reusable.
		open = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
		return true
	}); err != nil {
		return false
	}
	return open
}
