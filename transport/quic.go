package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the TLS application protocol of QUIC MCP connections.
const ALPN = "mcp"

// QUIC connection defaults.
const (
	// DefaultMaxStreamsPerConn caps the concurrent sessions (bidirectional
	// streams) one QUIC connection may carry unless configured.
	DefaultMaxStreamsPerConn = 1000
	// DefaultQUICIdleTimeout closes a connection silent for this long.
	DefaultQUICIdleTimeout = 60 * time.Second
	// QUICKeepAlive is how often clients send a keepalive, well inside the
	// idle timeout.
	QUICKeepAlive = 15 * time.Second
)

// Stream error codes sent when a side abandons a stream.
const (
	// StreamCodeClosed: the session ended normally.
	StreamCodeClosed quic.StreamErrorCode = 0
)

// Connection error codes sent when a side closes a QUIC connection.
const (
	// ConnCodeClosed: the peer is done with the connection.
	ConnCodeClosed quic.ApplicationErrorCode = 0
	// ConnCodeShutdown: the gateway node is shutting down.
	ConnCodeShutdown quic.ApplicationErrorCode = 1
	// ConnCodeRefused: the gateway node is at a connection cap (its total,
	// or the caller's address's); the reason says which.
	ConnCodeRefused quic.ApplicationErrorCode = 2
)

// QUICOptions tune a QUIC listener. A nil *QUICOptions means all
// defaults.
type QUICOptions struct {
	// MaxStreamsPerConn caps concurrent sessions on one connection; a
	// client opening more waits for one to end. Default
	// DefaultMaxStreamsPerConn.
	MaxStreamsPerConn int64
	// IdleTimeout closes a connection without packets for this long.
	// Default DefaultQUICIdleTimeout.
	IdleTimeout time.Duration
	// StatelessResetKey, kept across restarts, lets a listener that lost a
	// connection's state (a crash) reset it when the client next sends, so
	// the client reconnects at once. Default: none; such clients learn only
	// by their idle timeout.
	StatelessResetKey *quic.StatelessResetKey
	// GetCertificate, when set, picks the certificate for each handshake
	// instead of the fixed one, so a renewed certificate is served without
	// a restart.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// QUICListener accepts QUIC connections that carry MCP sessions, one per
// bidirectional stream.
type QUICListener struct {
	pc *net.UDPConn
	tr *quic.Transport
	ln *quic.Listener
}

// ListenQUIC listens on the UDP address addr, presenting cert. Close stops
// it.
func ListenQUIC(ctx context.Context, addr string, cert tls.Certificate, o *QUICOptions) (*QUICListener, error) {
	var opts QUICOptions
	if o != nil {
		opts = *o
	}
	if opts.MaxStreamsPerConn <= 0 {
		opts.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultQUICIdleTimeout
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	udp := pc.(*net.UDPConn)
	tr := &quic.Transport{Conn: udp, StatelessResetKey: opts.StatelessResetKey}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ALPN},
		MinVersion:   tls.VersionTLS13,
	}
	if opts.GetCertificate != nil {
		tlsConf.Certificates, tlsConf.GetCertificate = nil, opts.GetCertificate
	}
	ln, err := tr.Listen(tlsConf, &quic.Config{
		MaxIncomingStreams:    opts.MaxStreamsPerConn,
		MaxIncomingUniStreams: -1, // sessions are bidirectional
		MaxIdleTimeout:        opts.IdleTimeout,
	})
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, err
	}
	return &QUICListener{pc: udp, tr: tr, ln: ln}, nil
}

// Accept returns the next connection.
func (l *QUICListener) Accept(ctx context.Context) (*quic.Conn, error) {
	return l.ln.Accept(ctx)
}

// Addr returns the listener's UDP address.
func (l *QUICListener) Addr() net.Addr { return l.pc.LocalAddr() }

// Close stops accepting and closes the UDP socket, which ends every
// connection still open without telling its peer: close connections with
// CloseWithError first.
func (l *QUICListener) Close() error {
	l.ln.Close()
	err := l.tr.Close()
	if cerr := l.pc.Close(); err == nil {
		err = cerr
	}
	return err
}

// DialQUIC opens a QUIC connection to a gateway at addr (host:port). tlsConf
// sets the roots to trust; ALPN and the server name are filled in.
func DialQUIC(ctx context.Context, addr string, tlsConf *tls.Config) (*quic.Conn, error) {
	return DialQUICTimeouts(ctx, addr, tlsConf, DefaultQUICIdleTimeout, QUICKeepAlive)
}

// DialQUICTimeouts is DialQUIC with the client's idle timeout (how long a
// gateway may stay silent before the connection counts as dead: UDP brings
// no reset when a node dies) and keepalive period (a PING the gateway
// acknowledges, well inside idle). An idle timeout applies at the lower of
// both sides' values.
func DialQUICTimeouts(ctx context.Context, addr string, tlsConf *tls.Config, idle, keepAlive time.Duration) (*quic.Conn, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13}
	if tlsConf != nil {
		conf = tlsConf.Clone()
	}
	conf.NextProtos = []string{ALPN}
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("QUIC gateway address %q is not host:port", addr)
		}
		conf.ServerName = host
	}
	return quic.DialAddr(ctx, addr, conf, &quic.Config{
		MaxIdleTimeout:        idle,
		KeepAlivePeriod:       keepAlive,
		MaxIncomingStreams:    -1, // the gateway never opens streams
		MaxIncomingUniStreams: -1,
	})
}

// QUICStream adapts a QUIC stream to a FramedStream.
func QUICStream(s *quic.Stream) FramedStream { return &quicStream{Stream: s} }

type quicStream struct {
	*quic.Stream
	wmu       sync.Mutex // held by Write: quic-go forbids Close during a Write
	closeOnce sync.Once
}

func (s *quicStream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.Stream.Write(p)
}

// Close ends both directions: it stops receiving, so a blocked Read
// returns, and finishes sending, after the buffered data unless a Write is
// still under way (a peer that stopped reading), which it aborts.
func (s *quicStream) Close() error {
	s.closeOnce.Do(func() {
		s.CancelRead(StreamCodeClosed)
		if s.wmu.TryLock() {
			s.Stream.Close()
			s.wmu.Unlock()
		} else {
			s.CancelWrite(StreamCodeClosed)
		}
	})
	return nil
}
