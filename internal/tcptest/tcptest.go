// Package tcptest gives tests loopback TCP peers that misbehave in the
// plainest ways: an address nothing listens on, and a listener whose
// connections nobody reads or answers.
package tcptest

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback address nothing listens on (it was free a
// moment ago: a port for a server the test starts later, or one a client
// finds closed).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Silent listens on loopback and hands over the connections it accepts,
// which it never reads from or writes to: a peer that takes a connection
// and then says nothing. The listener closes when the test ends; the
// connections are the test's to close.
func Silent(t testing.TB) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case conns <- c:
			default:
				c.Close()
			}
		}
	}()
	return ln.Addr().String(), conns
}
