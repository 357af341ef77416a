// Package connlimit bounds the connections peers can hold open on a
// listener: a cap for the listener as a whole and a cap per remote address,
// so one host cannot take every slot and a flood of connections cannot take
// the process's file descriptors from the sessions already open.
//
// It counts and refuses; it does not read or write what the connections
// carry, beyond an optional fixed refusal written before closing.
package connlimit

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// Reason says why a connection was refused.
type Reason string

// Refusal reasons, as metric label values.
const (
	ReasonListenerCap Reason = "listener_cap" // the listener holds its cap of connections
	ReasonPerAddrCap  Reason = "per_ip_cap"   // the remote address holds its cap of connections
)

// Limiter counts open connections in total and per remote address. Several
// listeners may share one Limiter to share one budget. The zero value is not
// usable; use New.
type Limiter struct {
	mu           sync.Mutex
	max, perAddr int                  // guarded by mu
	total        int                  // guarded by mu
	byAddr       map[netip.Prefix]int // guarded by mu; entries with count 0 are deleted
}

// New returns a Limiter allowing max connections in total and perAddr from
// one remote address (an IPv4 address, or an IPv6 /64, which one host
// usually owns whole). A value below 1 means no cap of that kind.
func New(max, perAddr int) *Limiter {
	return &Limiter{max: max, perAddr: perAddr, byAddr: make(map[netip.Prefix]int)}
}

// Key returns the per-address key of a remote address: the IPv4 address, or
// the IPv6 /64 holding it. ok is false for addresses with no IP (Unix
// sockets), which count only against the total.
func Key(addr net.Addr) (key netip.Prefix, ok bool) {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, ok = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, ok = netip.AddrFromSlice(a.IP)
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		ip, ok = ap.Addr(), err == nil
	}
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p, true
}

// Acquire takes a slot for a connection from remote. It returns "" when the
// connection may proceed (the caller must Release it exactly once), or why
// it is refused.
func (l *Limiter) Acquire(remote net.Addr) Reason {
	key, keyed := Key(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return ReasonListenerCap
	}
	if keyed && l.perAddr > 0 && l.byAddr[key] >= l.perAddr {
		return ReasonPerAddrCap
	}
	l.total++
	if keyed {
		l.byAddr[key]++
	}
	return ""
}

// Release gives back the slot Acquire took for remote.
func (l *Limiter) Release(remote net.Addr) {
	key, keyed := Key(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if keyed {
		if l.byAddr[key] <= 1 {
			delete(l.byAddr, key)
		} else {
			l.byAddr[key]--
		}
	}
}

// SetLimits changes the caps, as New takes them. Connections already open
// keep their slots; a lower cap refuses new ones until enough have closed.
func (l *Limiter) SetLimits(max, perAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max, l.perAddr = max, perAddr
}

// Open returns the number of connections holding a slot.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Listener wraps a net.Listener so that every accepted connection holds a
// slot of a Limiter until it is closed. A connection over a cap is closed at
// once, after Refusal is written to it, and Accept goes on to the next one:
// the caller never sees it.
type Listener struct {
	net.Listener
	// Limiter is the budget the connections count against. Required.
	Limiter *Limiter
	// Refusal, if set, is written to a refused connection before it is
	// closed (e.g. a canned HTTP 503); it must fit in a socket's send buffer
	// so that writing it cannot block. Leave it nil under TLS.
	Refusal func(Reason) []byte
	// OnRefuse, if set, is called for each refused connection once it is
	// closed, e.g. to count it.
	OnRefuse func(Reason)
	// OnAccept, if set, is called for each connection accepted within the
	// caps, e.g. to count it.
	OnAccept func()
	// BytesIn and BytesOut, if set, receive the bytes read from and
	// written to accepted connections.
	BytesIn, BytesOut Adder
}

// Accept waits for a connection within the caps.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		remote := c.RemoteAddr()
		reason := l.Limiter.Acquire(remote)
		if reason == "" {
			if l.OnAccept != nil {
				l.OnAccept()
			}
			release := sync.OnceFunc(func() { l.Limiter.Release(remote) })
			if l.BytesIn != nil && l.BytesOut != nil {
				c = CountBytes(c, l.BytesIn, l.BytesOut)
			}
			return &conn{Conn: c, release: release}, nil
		}
		if l.Refusal != nil {
			if msg := l.Refusal(reason); len(msg) > 0 {
				// A fresh socket's send buffer is empty: this write does not
				// wait for the peer, whatever the peer does. Best effort: a
				// peer whose request is still unread may see a reset instead.
				c.Write(msg)
			}
		}
		c.Close()
		if l.OnRefuse != nil {
			l.OnRefuse(reason)
		}
	}
}

// conn releases its slot when closed.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// Adder receives byte counts; a prometheus.Counter is one.
type Adder interface{ Add(float64) }

// CountBytes returns c with the bytes read from it added to in and the
// bytes written to it added to out.
func CountBytes(c net.Conn, in, out Adder) net.Conn {
	return &countedConn{Conn: c, in: in, out: out}
}

// countedConn counts the bytes through a connection.
type countedConn struct {
	net.Conn
	in, out Adder
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.in.Add(float64(n))
	}
	return n, err
}

// SyscallConn is the counted connection's, for callers that look at the
// socket itself.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("the connection has no socket of its own")
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.out.Add(float64(n))
	}
	return n, err
}
