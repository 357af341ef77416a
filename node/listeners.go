package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgw/mcpgw/internal/connlimit"
	"github.com/mcpgw/mcpgw/transport"
)

// TLSMode says which of the session and admin listeners serve TLS.
type TLSMode string

// TLS modes (--tls).
const (
	TLSAuto TLSMode = "auto" // TLS on listeners not on loopback
	TLSOn   TLSMode = "on"   // TLS on both listeners, loopback included
	TLSOff  TLSMode = "off"  // plain HTTP; off loopback only with InsecurePlaintext
)

// fdReserveMax is the most file descriptors kept out of the downstream
// connection caps' reach, for upstream connections, raft, storage files and
// logs: a quarter of the open-file limit, at most this many.
const fdReserveMax = 1024

func (c *Config) validateListeners() error {
	switch c.TLS {
	case TLSAuto, TLSOn, TLSOff:
	default:
		return fmt.Errorf("--tls %q: use auto (TLS off loopback), on or off", c.TLS)
	}
	if c.TLS == TLSOn && c.InsecurePlaintext {
		return errors.New("--tls=on and --insecure-plaintext contradict each other: drop one")
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("--max-conns %d: use a positive cap, or 0 to size it from the open-file limit", c.MaxConns)
	}
	if c.MaxConnsPerIP < 1 {
		return fmt.Errorf("--max-conns-per-ip %d: use at least 1", c.MaxConnsPerIP)
	}
	if c.AdminMaxConns < 1 {
		return fmt.Errorf("--admin-max-conns %d: use at least 1", c.AdminMaxConns)
	}
	if c.IdleTimeout <= 0 || c.ReadTimeout <= 0 {
		return fmt.Errorf("--idle-timeout %v and --read-timeout %v must be positive", c.IdleTimeout, c.ReadTimeout)
	}
	for _, l := range []struct{ flag, addr string }{{"--http", c.HTTPAddr}, {"--admin", c.AdminAddr}} {
		if !c.listenerTLS(l.addr) && !transport.IsLoopbackAddr(l.addr) && !c.InsecurePlaintext {
			return fmt.Errorf("%s %s is not a loopback address, and plain HTTP there sends service and admin tokens in the clear: "+
				"drop --tls=off to serve TLS with the node's cluster certificate (or --tls-cert and --tls-key), "+
				"or pass --insecure-plaintext if something else protects the network", l.flag, l.addr)
		}
	}
	return nil
}

// listenerTLS reports whether the session or admin listener at addr serves
// TLS.
func (c *Config) listenerTLS(addr string) bool {
	switch {
	case c.InsecurePlaintext, c.TLS == TLSOff:
		return false
	case c.TLS == TLSOn:
		return true
	}
	return !transport.IsLoopbackAddr(addr)
}

// certHosts returns the hosts a certificate this node creates for itself
// names: the raft advertise host, which other nodes dial, and the hosts the
// session, admin and QUIC listeners bind, which clients dial.
func (c *Config) certHosts() []string {
	hosts := c.advertiseHosts()
	for _, addr := range []string{c.HTTPAddr, c.AdminAddr, c.QUICAddr} {
		host, _, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() || slices.Contains(hosts, host) {
			continue
		}
		hosts = append(hosts, host)
	}
	return hosts
}

// connCaps are the connection caps in force, resolved at start.
type connCaps struct {
	sessions, admin, perIP int
}

// resolveConnCaps sizes the connection caps against the open-file limit
// nofile (0: unknown). Every downstream connection may carry a session that
// needs an upstream connection as well, so by default the session listener
// gets half of what the admin cap and the reserve leave; whatever a flood of
// connections does, sessions already open can still dial upstreams and raft
// can still reach its peers.
func (c *Config) resolveConnCaps(nofile int) (connCaps, error) {
	caps := connCaps{sessions: c.MaxConns, admin: c.AdminMaxConns, perIP: c.MaxConnsPerIP}
	reserve := min(fdReserveMax, nofile/4)
	switch {
	case nofile <= 0:
		if caps.sessions == 0 {
			caps.sessions = 2 * c.MaxSessions
		}
	case caps.sessions == 0:
		caps.sessions = min(2*c.MaxSessions, (nofile-reserve-caps.admin)/2)
		if caps.sessions < 1 {
			return caps, fmt.Errorf("the open-file limit %d leaves no descriptors for connections once --admin-max-conns %d and %d reserved for upstreams, raft and storage are set aside: raise it (ulimit -n, LimitNOFILE= in a systemd unit)",
				nofile, caps.admin, reserve)
		}
	case caps.sessions+caps.admin+reserve > nofile:
		return caps, fmt.Errorf("--max-conns %d and --admin-max-conns %d leave fewer than %d of the %d file descriptors this process may open for upstream connections, raft and storage: lower the caps, or raise the open-file limit (ulimit -n, LimitNOFILE= in a systemd unit)",
			caps.sessions, caps.admin, reserve, nofile)
	}
	return caps, nil
}

// listeners holds the connection budgets of the node's listeners.
type listeners struct {
	caps                  connCaps
	sessions, admin, quic *connlimit.Limiter // sessions: the session listener and the Unix socket
	tlsConf               *tls.Config        // nil when neither HTTP listener serves TLS
}

// setupListeners resolves the connection caps and loads the certificate the
// HTTP listeners present when they serve TLS.
func (n *Node) setupListeners() error {
	nofile := openFileLimit()
	caps, err := n.cfg.resolveConnCaps(nofile)
	if err != nil {
		return err
	}
	n.lns.caps = caps
	n.lns.sessions = connlimit.New(caps.sessions, caps.perIP)
	n.lns.admin = connlimit.New(caps.admin, caps.perIP)
	n.lns.quic = connlimit.New(caps.sessions, caps.perIP)
	for name, l := range map[string]*connlimit.Limiter{"session": n.lns.sessions, "admin": n.lns.admin, "quic": n.lns.quic} {
		n.metrics.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mcpgw_listener_connections_open", Help: "Connections holding a slot of a listener's connection cap.",
			ConstLabels: prometheus.Labels{"listener": name},
		}, func() float64 { return float64(l.Open()) }))
	}
	n.logger.Debug("connection caps", slog.Int("max_conns", caps.sessions), slog.Int("admin_max_conns", caps.admin),
		slog.Int("max_conns_per_ip", caps.perIP), slog.Int("open_file_limit", nofile))

	if !n.cfg.listenerTLS(n.cfg.HTTPAddr) && !n.cfg.listenerTLS(n.cfg.AdminAddr) {
		return nil
	}
	cert, err := servingCertificate(n.cfg.TLSCertFile, n.cfg.TLSKeyFile, n.cfg.clusterTLSDir())
	if err != nil {
		return err
	}
	for _, l := range []struct{ flag, addr string }{{"--http", n.cfg.HTTPAddr}, {"--admin", n.cfg.AdminAddr}} {
		host, _, _ := net.SplitHostPort(l.addr)
		if ip := net.ParseIP(host); !n.cfg.listenerTLS(l.addr) || host == "" || ip != nil && ip.IsUnspecified() {
			continue
		}
		if err := cert.Leaf.VerifyHostname(host); err != nil {
			n.logger.Warn("the TLS certificate does not name the host a listener binds, so clients dialing that host will not verify it: issue one naming it (mcpgw init --host) or pass --tls-cert and --tls-key",
				slog.String("flag", l.flag), slog.String("host", host), slog.String("cert", n.cfg.servingCertFile()))
		}
	}
	n.servingCert.Store(&cert)
	n.lns.tlsConf = &tls.Config{
		GetCertificate: n.getServingCert,
		MinVersion:     tls.VersionTLS12,
		// WebSocket sessions upgrade an HTTP/1.1 connection, and each
		// connection counts once against the caps.
		NextProtos: []string{"http/1.1"},
	}
	return nil
}

// listenHTTP opens a session or admin listener at addr: capped, and under
// TLS when the configuration says so.
func (n *Node) listenHTTP(ctx context.Context, flag, addr, name string, limiter *connlimit.Limiter, capFlag string, capN int) (net.Listener, bool, error) {
	var lc net.ListenConfig
	raw, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("listen %s %s: %w", flag, addr, err)
	}
	useTLS := n.cfg.listenerTLS(addr)
	ln := n.countedListener(&connlimit.Listener{Listener: raw, Limiter: limiter, OnRefuse: n.countRefusedConn(name)}, name)
	if !useTLS {
		ln.Refusal = httpRefusals(capFlag, capN, n.lns.caps.perIP)
		return ln, false, nil
	}
	// Refused before the handshake, a TLS peer gets no answer it could read.
	return tls.NewListener(ln, n.lns.tlsConf), true, nil
}

// countedListener has l count the connections it accepts and their bytes
// as listener's.
func (n *Node) countedListener(l *connlimit.Listener, listener string) *connlimit.Listener {
	accepted := n.metrics.connsAcceptedTotal.WithLabelValues(listener)
	l.OnAccept = accepted.Inc
	l.BytesIn = n.metrics.listenerBytes.WithLabelValues(listener, "in")
	l.BytesOut = n.metrics.listenerBytes.WithLabelValues(listener, "out")
	return l
}

func (n *Node) countRefusedConn(listener string) func(connlimit.Reason) {
	return func(r connlimit.Reason) {
		n.metrics.connsRefusedTotal.WithLabelValues(listener, string(r)).Inc()
	}
}

// capMessage is what a peer refused at a connection cap is told.
func capMessage(r connlimit.Reason, capFlag string, capN, perIP int) string {
	if r == connlimit.ReasonPerAddrCap {
		return fmt.Sprintf("too many connections from your address (--max-conns-per-ip %d): close idle connections or reuse them, or ask the operator to raise the cap", perIP)
	}
	return fmt.Sprintf("gateway node at its connection cap (%s %d): retry shortly or use another node", capFlag, capN)
}

// httpRefusals returns the canned HTTP 503 answers of a plain HTTP
// listener, a JSON-RPC error body like every other refusal.
func httpRefusals(capFlag string, capN, perIP int) func(connlimit.Reason) []byte {
	answers := map[connlimit.Reason][]byte{}
	for _, r := range []connlimit.Reason{connlimit.ReasonListenerCap, connlimit.ReasonPerAddrCap} {
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil,
			"error": jsonrpc.Error{Code: transport.CodeOverloaded, Message: capMessage(r, capFlag, capN, perIP)}})
		answers[r] = fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	return func(r connlimit.Reason) []byte { return answers[r] }
}

// framedRefusals returns the open replies of the Unix socket at its cap.
func framedRefusals(capN, perIP int) func(connlimit.Reason) []byte {
	answers := map[connlimit.Reason][]byte{}
	for _, r := range []connlimit.Reason{connlimit.ReasonListenerCap, connlimit.ReasonPerAddrCap} {
		b, _ := json.Marshal(transport.OpenReply{Code: transport.CodeOverloaded, Error: capMessage(r, "--max-conns", capN, perIP)})
		answers[r] = append(b, '\n')
	}
	return func(r connlimit.Reason) []byte { return answers[r] }
}

// newHTTPServer returns the server of a session or admin listener: headers
// and bodies must arrive within ReadTimeout and an idle keep-alive
// connection closes after IdleTimeout. There is no write timeout: event
// streams, WebSocket sessions and backups last as long as they need, and
// the connection caps bound what slow readers can hold.
func (n *Node) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           readDeadline(n.cfg.ReadTimeout, h),
		ReadHeaderTimeout: n.cfg.ReadTimeout,
		IdleTimeout:       n.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(n.logger.Handler(), slog.LevelWarn),
	}
}

// readDeadline bounds reading a request body. http.Server's ReadTimeout
// would do it too, but its deadline outlives the body and cancels the
// request's context while its response still streams; this one is lifted
// once the body has been read.
func readDeadline(timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || transport.IsWebSocketUpgrade(r) {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(timeout)) == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { rc.SetReadDeadline(time.Time{}) }}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline once the body is read to its end.
type deadlineBody struct {
	io.ReadCloser
	lift   func()
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.lifted {
		b.lifted = true
		b.lift()
	}
	return n, err
}
