package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/connlimit"
	"github.com/mcpgw/mcpgw/transport"
)

// framedListeners are the listeners whose sessions speak the framed wire
// format: QUIC (a session per stream) and a Unix socket (a session per
// connection).
type framedListeners struct {
	quic     *transport.QUICListener
	unix     *net.UnixListener
	unixFile os.FileInfo    // the socket file as created, to remove it only while it is ours
	wg       sync.WaitGroup // accept loops, connections and their streams
}

// listenFramed opens the QUIC and Unix socket listeners that are enabled.
func (n *Node) listenFramed(ctx context.Context) error {
	if n.cfg.QUICAddr != "" {
		cert, err := servingCertificate(n.cfg.TLSCertFile, n.cfg.TLSKeyFile, n.cfg.clusterTLSDir())
		if err != nil {
			return err
		}
		resetKey, err := statelessResetKey(cert)
		if err != nil {
			return err
		}
		n.servingCert.Store(&cert)
		ln, err := transport.ListenQUIC(ctx, n.cfg.QUICAddr, cert, &transport.QUICOptions{
			MaxStreamsPerConn: n.cfg.MaxStreamsPerConn,
			IdleTimeout:       n.cfg.QUICIdleTimeout,
			StatelessResetKey: resetKey,
			GetCertificate:    n.getServingCert,
		})
		if err != nil {
			return fmt.Errorf("listen --quic %s: %w", n.cfg.QUICAddr, err)
		}
		n.framed.quic = ln
		n.logger.Debug("QUIC listener uses TLS certificate; clients trust it through the cluster CA file "+cluster.CACertFile, slog.String("cert", n.cfg.servingCertFile()))
	}
	if n.cfg.UnixPath != "" {
		ln, fi, err := listenUnix(n.cfg.UnixPath)
		if err != nil {
			if n.framed.quic != nil {
				n.framed.quic.Close()
				n.framed.quic = nil
			}
			return err
		}
		n.framed.unix, n.framed.unixFile = ln, fi
	}
	return nil
}

// serveFramed starts the accept loops of the open framed listeners.
func (n *Node) serveFramed() {
	if n.framed.quic != nil {
		n.framed.wg.Add(1)
		go n.acceptQUIC()
	}
	if n.framed.unix != nil {
		n.framed.wg.Add(1)
		go n.acceptUnix()
	}
}

// closeFramed releases the framed listeners once their sessions are done.
func (n *Node) closeFramed() {
	if n.framed.quic != nil {
		n.framed.quic.Close()
	}
	if n.framed.unix != nil {
		n.framed.unix.Close()
		removeSocket(n.cfg.UnixPath, n.framed.unixFile)
	}
}

// QUICAddr returns the QUIC listener's UDP address, or "" when QUIC is off.
func (n *Node) QUICAddr() string {
	if n.framed.quic == nil {
		return ""
	}
	return n.framed.quic.Addr().String()
}

func (n *Node) acceptQUIC() {
	defer n.framed.wg.Done()
	for {
		conn, err := n.framed.quic.Accept(n.ctx)
		if err != nil {
			if n.ctx.Err() == nil {
				n.logger.Error("QUIC listener failed; no new QUIC sessions", slog.Any("error", err))
			}
			return
		}
		if reason := n.lns.quic.Acquire(conn.RemoteAddr()); reason != "" {
			n.countRefusedConn("quic")(reason)
			conn.CloseWithError(transport.ConnCodeRefused, capMessage(reason, "--max-conns", n.lns.caps.sessions, n.lns.caps.perIP))
			continue
		}
		n.framed.wg.Add(1)
		go n.serveQUICConn(conn)
	}
}

// serveQUICConn serves a session on each stream the client opens until the
// connection or the node ends. A stream that ends takes only its own
// session along; a connection that ends takes all of them.
func (n *Node) serveQUICConn(conn *quic.Conn) {
	defer n.framed.wg.Done()
	defer n.lns.quic.Release(conn.RemoteAddr())
	n.metrics.connsAcceptedTotal.WithLabelValues("quic").Inc()
	n.metrics.quicConnsActive.Inc()
	defer n.metrics.quicConnsActive.Dec()
	logger := n.logger.With(slog.String("remote", conn.RemoteAddr().String()))
	logger.Debug("QUIC connection opened")

	quicIn, quicOut := n.metrics.listenerBytes.WithLabelValues("quic", "in"), n.metrics.listenerBytes.WithLabelValues("quic", "out")
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		st, err := conn.AcceptStream(n.ctx)
		if err != nil {
			if n.ctx.Err() != nil {
				conn.CloseWithError(transport.ConnCodeShutdown, "gateway node shutting down; reconnect to another node")
			} else {
				logger.Debug("QUIC connection ended", slog.Any("error", err))
			}
			return
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			n.gw.ServeFramed(&countedStream{FramedStream: transport.QUICStream(st), in: quicIn, out: quicOut}, "quic", conn.RemoteAddr().String())
		}()
	}
}

func (n *Node) acceptUnix() {
	defer n.framed.wg.Done()
	ln := n.framed.unix
	stop := context.AfterFunc(n.ctx, func() { ln.Close() })
	defer stop()
	// Unix peers have no address to cap them by; they share the session
	// listener's budget of descriptors.
	capped := n.countedListener(&connlimit.Listener{Listener: ln, Limiter: n.lns.sessions, OnRefuse: n.countRefusedConn("unix"),
		Refusal: framedRefusals(n.lns.caps.sessions, n.lns.caps.perIP)}, "unix")
	for {
		c, err := capped.Accept()
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, then retry.
			n.logger.Warn("unix socket accept failed", slog.Any("error", err))
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-n.ctx.Done():
				return
			}
		}
		n.framed.wg.Add(1)
		go func() {
			defer n.framed.wg.Done()
			n.gw.ServeFramed(c, "unix", "unix:"+n.cfg.UnixPath)
		}()
	}
}

// countedStream counts the bytes of a QUIC stream as the QUIC listener's
// (stream payload: QUIC's own framing and encryption are not counted).
type countedStream struct {
	transport.FramedStream
	in, out prometheus.Counter
}

func (s *countedStream) Read(p []byte) (int, error) {
	n, err := s.FramedStream.Read(p)
	if n > 0 {
		s.in.Add(float64(n))
	}
	return n, err
}

func (s *countedStream) Write(p []byte) (int, error) {
	n, err := s.FramedStream.Write(p)
	if n > 0 {
		s.out.Add(float64(n))
	}
	return n, err
}
