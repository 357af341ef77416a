package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/quic-go/quic-go"

	"github.com/mcpgw/mcpgw/transport"
)

// framedOpener returns how to open sessions through a quic:// or unix://
// gateway address. ok is false for other addresses.
func framedOpener(addr, target, org, account string, o options) (open func(context.Context) (mcp.Connection, error), ok bool, err error) {
	scheme, rest, found := strings.Cut(addr, "://")
	if !found {
		return nil, false, nil
	}
	frame := transport.OpenFrame{Target: target, Org: org, Account: account, Token: o.token}
	lineOpts := transport.LineOptions{MaxMessageBytes: o.maxMessage}
	switch strings.ToLower(scheme) {
	case "quic":
		u, err := url.Parse(addr)
		if err != nil || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return nil, true, fmt.Errorf("mcpgw: gateway address %q is not quic://host:port", addr)
		}
		key := poolKey{addr: u.Host, roots: o.rootCAs}
		if key.roots == nil {
			key.caFile = o.caFile
		}
		return func(ctx context.Context) (mcp.Connection, error) {
			st, err := quicConns.openStream(ctx, key)
			if err != nil {
				return nil, err
			}
			return transport.OpenFramed(ctx, transport.QUICStream(st), frame, lineOpts)
		}, true, nil
	case "unix":
		if rest == "" {
			return nil, true, fmt.Errorf("mcpgw: gateway address %q names no socket; use unix:///path/to.sock", addr)
		}
		return func(ctx context.Context) (mcp.Connection, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", rest)
			if err != nil {
				return nil, fmt.Errorf("mcpgw: connect to unix socket %s: %w", rest, err)
			}
			return transport.OpenFramed(ctx, c.(*net.UnixConn), frame, lineOpts)
		}, true, nil
	}
	return nil, false, nil
}

// A QUIC connection counts as dead once its gateway has been silent for
// quicIdleTimeout; keepalives every quicKeepAlive make a live gateway
// answer. UDP brings no reset when a node dies, so this is how soon a
// QUIC session notices and moves to another node, as a WebSocket session
// does on a TCP reset.
const (
	quicIdleTimeout = 2500 * time.Millisecond
	quicKeepAlive   = 500 * time.Millisecond
)

// quicConns holds this process's QUIC connections to gateways: one per
// gateway address and trust setting, each carrying a stream per session.
var quicConns = &quicPool{conns: make(map[poolKey]*pooledConn)}

// CloseConnections closes this process's QUIC connections to gateways,
// ending the sessions they carry; later sessions dial anew. Call it before
// the process exits: UDP has no connection the kernel would close, so a
// gateway would otherwise hold those sessions, and their upstreams, until
// its idle timeout.
func CloseConnections() { quicConns.closeAll() }

// poolKey names a pooled connection. Callers that pass WithRootCAs share a
// connection only when they pass the same pool.
type poolKey struct {
	addr   string
	roots  *x509.CertPool
	caFile string // used when roots is nil
}

type quicPool struct {
	mu    sync.Mutex
	conns map[poolKey]*pooledConn // guarded by mu
}

type pooledConn struct {
	mu      sync.Mutex // held while dialing, so concurrent sessions share one handshake
	conn    *quic.Conn // guarded by mu; nil or closed means dial again
	removed bool       // guarded by mu; the entry left the pool, look up a new one
}

// get returns the live connection for key, dialing one if there is none.
func (p *quicPool) get(ctx context.Context, key poolKey) (*quic.Conn, error) {
	for {
		p.mu.Lock()
		e := p.conns[key]
		if e == nil {
			e = &pooledConn{}
			p.conns[key] = e
		}
		p.mu.Unlock()

		e.mu.Lock()
		if e.removed {
			e.mu.Unlock()
			continue
		}
		conn, err := p.dialLocked(ctx, key, e)
		e.mu.Unlock()
		return conn, err
	}
}

// dialLocked returns e's connection, dialing if it has none or it ended.
// e.mu is held.
func (p *quicPool) dialLocked(ctx context.Context, key poolKey, e *pooledConn) (*quic.Conn, error) {
	if e.conn != nil && e.conn.Context().Err() == nil {
		return e.conn, nil
	}
	tlsConf, err := key.tlsConfig()
	if err != nil {
		return nil, err
	}
	conn, err := transport.DialQUICTimeouts(ctx, key.addr, tlsConf, quicIdleTimeout, quicKeepAlive)
	if err != nil {
		return nil, explainTLS(fmt.Errorf("mcpgw: QUIC connection to %s: %w", key.addr, err))
	}
	e.conn = conn
	// Drop the entry once its connection ends, so the pool holds only
	// gateways in use. Lock order: an entry's mu before the pool's.
	context.AfterFunc(conn.Context(), func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.conn != conn {
			return // already replaced
		}
		e.removed = true
		p.mu.Lock()
		if p.conns[key] == e {
			delete(p.conns, key)
		}
		p.mu.Unlock()
	})
	return conn, nil
}

// closeAll closes every pooled connection, telling the gateways.
func (p *quicPool) closeAll() {
	p.mu.Lock()
	entries := make([]*pooledConn, 0, len(p.conns))
	for _, e := range p.conns {
		entries = append(entries, e)
	}
	p.mu.Unlock()
	for _, e := range entries {
		e.mu.Lock()
		conn := e.conn
		e.mu.Unlock()
		if conn != nil {
			conn.CloseWithError(transport.ConnCodeClosed, "client process closing")
		}
	}
}

// openStream opens a stream for a new session, waiting while the gateway's
// per-connection stream limit is reached. A connection found dead (idle
// timeout, gateway restart) is replaced once.
func (p *quicPool) openStream(ctx context.Context, key poolKey) (*quic.Stream, error) {
	for attempt := 0; ; attempt++ {
		conn, err := p.get(ctx, key)
		if err != nil {
			return nil, err
		}
		st, err := conn.OpenStreamSync(ctx)
		if err == nil {
			return st, nil
		}
		if attempt > 0 || ctx.Err() != nil || conn.Context().Err() == nil {
			return nil, fmt.Errorf("mcpgw: open a QUIC stream to %s: %w", key.addr, err)
		}
	}
}

// tlsConfig returns the TLS settings the key stands for.
func (k poolKey) tlsConfig() (*tls.Config, error) {
	roots, err := loadRoots(k.roots, k.caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}, nil
}
