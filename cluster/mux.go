package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// ALPN protocols spoken on the raft listener. One mutual-TLS port carries
// both raft's own RPCs and writes forwarded to the leader, told apart during
// the handshake, so the cluster needs one port and one trust root.
const (
	alpnRaft    = "mcpgw-raft/1"
	alpnForward = "mcpgw-forward/1"
)

// mux owns the raft listener and every connection made through it, in and
// out, so that closing it leaves nothing behind.
type mux struct {
	ln          net.Listener
	server      *tls.Config // NextProtos set to the protocols served
	client      *tls.Config
	dial        func(ctx context.Context, addr string) (net.Conn, error)
	dialTimeout time.Duration
	logger      *slog.Logger

	raftConns chan net.Conn       // accepted raft connections, for raftLayer.Accept
	forward   func(conn net.Conn) // serves one forwarding connection until it ends
	ctx       context.Context     // ends when the mux closes
	cancel    context.CancelFunc
	stopping  context.Context           // ends when the node starts closing: releases held traffic
	faults    atomic.Pointer[faultsBox] // nil unless a fault-injection test set it
	wg        sync.WaitGroup            // the accept loop and per-connection goroutines
	closeOnce sync.Once

	mu      sync.Mutex                // guards conns and contact
	conns   map[*trackedConn]struct{} // nil once closed
	contact map[string]*atomic.Int64  // by dialled address: unix nanos of the last byte read
}

func newMux(stopping context.Context, ln net.Listener, tlsConf *tls.Config, dial func(context.Context, string) (net.Conn, error), dialTimeout time.Duration, logger *slog.Logger) *mux {
	server := tlsConf.Clone()
	server.NextProtos = []string{alpnRaft, alpnForward}
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &mux{
		ln:          ln,
		server:      server,
		client:      tlsConf,
		dial:        dial,
		dialTimeout: dialTimeout,
		logger:      logger,
		raftConns:   make(chan net.Conn),
		ctx:         ctx,
		cancel:      cancel,
		stopping:    stopping,
		conns:       make(map[*trackedConn]struct{}),
		contact:     make(map[string]*atomic.Int64),
	}
}

// start accepts connections until Close; forward serves the forwarding
// protocol.
func (m *mux) start(forward func(net.Conn)) {
	m.forward = forward
	m.wg.Add(1)
	go m.accept()
}

func (m *mux) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			m.logger.Warn("raft listener accept failed", slog.Any("error", err))
			t := time.NewTimer(50 * time.Millisecond)
			select {
			case <-m.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		m.wg.Add(1)
		go m.handshake(c)
	}
}

// handshake authenticates an accepted connection and hands it to the
// protocol it negotiated. Anything that is not a TLS client with a
// certificate from the cluster CA is dropped without a byte of raft.
func (m *mux) handshake(raw net.Conn) {
	defer m.wg.Done()
	tc := tls.Server(raw, m.server)
	ctx, cancel := context.WithTimeout(m.ctx, m.dialTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		raw.Close()
		if m.ctx.Err() == nil {
			m.logger.Warn("raft connection refused", slog.String("remote", raw.RemoteAddr().String()), slog.Any("error", err))
		}
		return
	}
	proto := tc.ConnectionState().NegotiatedProtocol
	c, err := m.track(tc, "")
	if err != nil {
		return
	}
	switch proto {
	case alpnRaft:
		select {
		case m.raftConns <- c:
		case <-m.ctx.Done():
			c.Close()
		}
	case alpnForward:
		m.forward(c)
	default:
		c.Close()
	}
}

// dialTLS opens a mutual-TLS connection to addr speaking proto. The server
// must present a certificate from the cluster CA naming addr's host.
func (m *mux) dialTLS(ctx context.Context, addr, proto string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, m.dialTimeout)
	defer cancel()
	raw, err := m.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	conf := m.client.Clone()
	conf.NextProtos = []string{proto}
	if conf.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		conf.ServerName = host
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != proto {
		tc.Close()
		return nil, fmt.Errorf("%s does not speak %s", addr, proto)
	}
	return m.track(tc, addr)
}

// track registers c so Close can end it. Connections dialled to addr record
// when bytes last arrived from it, which is how this node knows which peers
// it can reach.
func (m *mux) track(c net.Conn, addr string) (*trackedConn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns == nil {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, m: m}
	if t, ok := c.(*tls.Conn); ok {
		if certs := t.ConnectionState().PeerCertificates; len(certs) > 0 {
			tc.peer = certs[0].Subject.CommonName
		}
	}
	tc.ctx, tc.cancel = context.WithCancel(m.stopping)
	if addr != "" {
		at := m.contact[addr]
		if at == nil {
			at = new(atomic.Int64)
			m.contact[addr] = at
		}
		tc.contact = at
	}
	m.conns[tc] = struct{}{}
	return tc, nil
}

// lastContact returns when bytes last arrived on a connection this node
// dialled to addr; zero if never.
func (m *mux) lastContact(addr string) time.Time {
	m.mu.Lock()
	at := m.contact[addr]
	m.mu.Unlock()
	if at == nil || at.Load() == 0 {
		return time.Time{}
	}
	return time.Unix(0, at.Load())
}

// Close closes the listener and every connection, then waits for the
// goroutines serving them.
func (m *mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.cancel()
		err = m.ln.Close()
		m.mu.Lock()
		conns := m.conns
		m.conns = nil
		m.mu.Unlock()
		for c := range conns {
			c.Conn.Close()
		}
		m.wg.Wait()
	})
	return err
}

type trackedConn struct {
	net.Conn
	m       *mux
	contact *atomic.Int64 // nil for accepted connections
	peer    string        // the peer's node id, from its certificate
	ctx     context.Context
	cancel  context.CancelFunc // ends ctx: the connection or the node is closing
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		// Bytes that arrive while the link is cut are delivered once it
		// heals, as TCP would after retransmitting them.
		if herr := c.hold(); herr != nil {
			return 0, herr
		}
		if c.contact != nil {
			c.contact.Store(time.Now().UnixNano())
		}
	}
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	if err := c.hold(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// hold waits while an injected fault cuts the link to the peer.
func (c *trackedConn) hold() error {
	f := c.m.faults.Load()
	if f == nil {
		return nil
	}
	if err := f.Hold(c.ctx, c.peer); err != nil {
		c.Close()
		return err
	}
	return nil
}

func (c *trackedConn) Close() error {
	c.cancel()
	c.m.mu.Lock()
	delete(c.m.conns, c)
	c.m.mu.Unlock()
	return c.Conn.Close()
}

// raftLayer is raft's view of the mux: a listener of raft connections and a
// dialer of them.
type raftLayer struct {
	m         *mux
	advertise net.Addr
	closed    chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftConns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.m.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops Accept; the mux owns the listener and closes it.
func (l *raftLayer) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr is the advertised address: raft takes it as this server's address.
func (l *raftLayer) Addr() net.Addr { return l.advertise }

func (l *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(l.m.ctx, timeout)
	defer cancel()
	return l.m.dialTLS(ctx, string(addr), alpnRaft)
}

// tcpAddr is an address as configured, not resolved.
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }
