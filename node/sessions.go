package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// Downstream request parameters.
const (
	paramTarget  = "target"
	paramOrg     = "org"
	paramAccount = "account"
	headerOrg    = "Mcpgw-Org"
	headerAcct   = "Mcpgw-Account"
)

// sessionSpec is what a downstream request asks for, resolved against the
// routes.
type sessionSpec struct {
	route   storage.Route
	dialURL string
	org     string
	account string
}

// sessionHandler serves /v1/mcp (target in the query) and /v1/mcp/<route>:
// a WebSocket upgrade becomes a WebSocket session, anything else is
// streamable HTTP.
func (n *Node) sessionHandler() http.Handler {
	mux := http.NewServeMux()
	h := func(w http.ResponseWriter, r *http.Request) {
		if err := n.checkOrigin(r); err != nil {
			n.metrics.refusalsTotal.WithLabelValues("origin").Inc()
			transport.WriteHTTPError(w, err)
			return
		}
		if isWebSocketUpgrade(r) {
			n.serveWebSocket(w, r)
			return
		}
		n.streamable.ServeHTTP(w, r)
	}
	mux.HandleFunc("/v1/mcp", h)
	mux.HandleFunc("/v1/mcp/{route}", h)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		transport.WriteHTTPError(w, &transport.HTTPError{Status: http.StatusNotFound, Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("no endpoint at %s: MCP sessions live at /v1/mcp?target=<url>&org=<org>&account=<account> or /v1/mcp/<route>", r.URL.Path)})
	})
	return mux
}

func isWebSocketUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// checkOrigin defends against DNS rebinding and cross-site use, as the MCP
// specification requires: a request reaching a loopback listener must name a
// loopback Host, and a browser Origin must be a loopback origin or on the
// allow-list.
func (n *Node) checkOrigin(r *http.Request) error {
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && isLoopbackAddr(la.String()) && !isLoopbackAddr(r.Host) {
		return &transport.HTTPError{Status: http.StatusForbidden, Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("Host %q refused on a loopback listener (DNS rebinding defence); connect via localhost or 127.0.0.1", r.Host)}
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	o, err := parseOrigin(origin)
	if err == nil {
		if u, _ := url.Parse(o); isLoopbackAddr(u.Host) {
			return nil
		}
		for _, allowed := range n.cfg.AllowedOrigins {
			if a, _ := parseOrigin(allowed); a == o {
				return nil
			}
		}
	}
	return &transport.HTTPError{Status: http.StatusForbidden, Code: jsonrpc.CodeInvalidRequest,
		Message: fmt.Sprintf("Origin %q is not allowed; the operator can add it with --allowed-origin", origin)}
}

// parseOrigin canonicalizes scheme://host[:port].
func parseOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return "", errors.New("an origin is scheme://host[:port], e.g. https://app.example.com")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

func isLoopbackAddr(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sessionRequest is what a downstream asks for, whatever its transport.
type sessionRequest struct {
	token   string // service token
	target  string // upstream URL, or
	route   string // a route name
	org     string
	account string
	framed  bool   // from an open frame rather than an HTTP request
	remote  string // the caller's network address, for the audit log
}

// hint picks the advice that matches where the request came from.
func (req sessionRequest) hint(httpHint, frameHint string) string {
	if req.framed {
		return frameHint
	}
	return httpHint
}

// httpSessionRequest reads a session request from r.
func httpSessionRequest(r *http.Request) sessionRequest {
	q := r.URL.Query()
	req := sessionRequest{
		remote: r.RemoteAddr,
		token:  bearerToken(r),
		target: q.Get(paramTarget), route: r.PathValue("route"),
		org: q.Get(paramOrg), account: q.Get(paramAccount),
	}
	if req.org == "" {
		req.org = r.Header.Get(headerOrg)
	}
	if req.account == "" {
		req.account = r.Header.Get(headerAcct)
	}
	return req
}

// resolve finds the route that allows what the request asks for.
func (n *Node) resolve(req sessionRequest) (sessionSpec, error) {
	spec := sessionSpec{org: req.org, account: req.account}
	bad := func(msg string) error {
		n.metrics.refusalsTotal.WithLabelValues("bad_request").Inc()
		return &transport.HTTPError{Status: http.StatusBadRequest, Code: jsonrpc.CodeInvalidParams, Message: msg}
	}
	if err := validName("org", spec.org); err != nil {
		return spec, bad(err.Error() + req.hint("; pass ?org=<org>", `; set "org" in the open frame`))
	}
	if err := validName("account", spec.account); err != nil {
		return spec, bad(err.Error() + req.hint("; pass ?account=<account>", `; set "account" in the open frame`))
	}
	st, err := n.policy()
	if err != nil {
		return spec, err
	}
	table := st.routes
	switch {
	case req.route != "":
		spec.route, spec.dialURL, err = table.byRouteName(req.route)
	case req.target != "":
		spec.route, spec.dialURL, err = table.match(req.target)
	default:
		return spec, bad(req.hint("no target: pass ?target=<upstream MCP URL> or use /v1/mcp/<route>",
			`no target: set "target" (the upstream MCP URL) or "route" in the open frame`))
	}
	if err != nil {
		if errors.Is(err, ErrNoRoute) {
			n.metrics.refusalsTotal.WithLabelValues("no_route").Inc()
			return spec, &transport.HTTPError{Status: http.StatusNotFound, Code: CodeNoRoute, Message: err.Error()}
		}
		return spec, bad(err.Error())
	}
	return spec, nil
}

// routeParamHeaders returns the Mcp-Param-* bindings learned for route,
// shared by all its sessions (a 2026-07-28 client lists tools and calls
// them in different stateless sessions). Keyed by the route's configured
// URL too, so a route pointed elsewhere starts afresh; routes are few, so
// the map stays small.
func (n *Node) routeParamHeaders(route storage.Route) *transport.ParamHeaders {
	key := route.Name + "\x00" + route.URL
	if p, ok := n.paramHeaders.Load(key); ok {
		return p.(*transport.ParamHeaders)
	}
	p, _ := n.paramHeaders.LoadOrStore(key, &transport.ParamHeaders{})
	return p.(*transport.ParamHeaders)
}

// dial opens the upstream connection for a session, with the account's
// credential injected: as headers on every HTTP request (read afresh each
// time, so a rotated credential applies from the next request) or as
// environment variables of a stdio command.
func (n *Node) dial(ctx context.Context, spec sessionSpec, creds *credentialSource) (mcp.Connection, error) {
	env, err := creds.environ()
	if err != nil {
		return nil, n.credentialRefusal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ConnectTimeout)
	defer cancel()
	up, err := transport.Dial(ctx, transport.Upstream{
		Kind:            string(spec.route.Transport),
		URL:             spec.dialURL,
		Command:         spec.route.Command,
		Header:          creds.header,
		Env:             env,
		MaxMessageBytes: n.cfg.MaxMessageBytes,
		Logger:          n.logger.With(slog.String("route", spec.route.Name)),
		Route:           spec.route.Name,
		ParamHeaders:    n.routeParamHeaders(spec.route),
	})
	var coe *transport.CrossOriginError
	if errors.As(err, &coe) {
		n.metrics.refusalsTotal.WithLabelValues("upstream_cross_origin").Inc()
		n.logger.Warn("upstream pointed the session at another origin; refused", slog.String("route", spec.route.Name),
			slog.String("route_origin", coe.Route), slog.String("target", coe.Target))
		return nil, &transport.HTTPError{Status: http.StatusBadGateway, Code: CodeUpstreamError,
			Message: fmt.Sprintf("upstream of route %q named a message endpoint on another origin (%s); the gateway only talks to the route's origin (%s): fix the server or the route URL (`mcpgw route list`)", spec.route.Name, coe.Target, coe.Route)}
	}
	if err != nil {
		n.metrics.refusalsTotal.WithLabelValues("upstream_error").Inc()
		n.logger.Warn("upstream connect failed", slog.String("route", spec.route.Name), slog.Any("error", err))
		return nil, &transport.HTTPError{Status: http.StatusBadGateway, Code: CodeUpstreamError,
			Message: fmt.Sprintf("upstream of route %q is unreachable: %v; check the server is up and the route is right (`mcpgw route list`)", spec.route.Name, err)}
	}
	return up, nil
}

// credentialRefusal turns a credential lookup failure into the refusal a
// caller sees before its session starts.
func (n *Node) credentialRefusal(err error) error {
	var he *transport.HTTPError
	switch {
	case errors.As(err, &he):
		n.metrics.refusalsTotal.WithLabelValues("credential_broken").Inc()
		return he
	case errors.Is(err, errNoCredential):
		n.metrics.refusalsTotal.WithLabelValues("no_credential").Inc()
		return &transport.HTTPError{Status: http.StatusForbidden, Code: CodeNoCredential, Message: err.Error()}
	}
	return err
}

// prepare is prepareSession for an HTTP request.
func (n *Node) prepare(r *http.Request, transportName string) (*session, error) {
	return n.prepareSession(r.Context(), httpSessionRequest(r), transportName)
}

// prepareSession authenticates, resolves, takes a session slot and dials:
// everything that can refuse a session before it starts, for every
// transport. The session holds its slot until run returns or discard is
// called.
func (n *Node) prepareSession(ctx context.Context, req sessionRequest, transportName string) (_ *session, err error) {
	var claims *policy.Claims
	var spec sessionSpec
	defer func() {
		if err != nil {
			n.auditRefusal(req, claims, spec, err)
		}
	}()
	if req.token == "" && req.framed && !n.cfg.InsecureDev {
		n.metrics.refusalsTotal.WithLabelValues("token_missing").Inc()
		return nil, &transport.HTTPError{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
			Message: `no service token: set "token" in the open frame; get one with ` + "`mcpgw token issue`"}
	}
	claims, err = n.verifyToken(req.token)
	if err != nil {
		return nil, err
	}
	spec, err = n.resolve(req)
	if err != nil {
		return nil, err
	}
	if err := n.authorizeSession(claims, spec); err != nil {
		return nil, err
	}
	if !n.takeSessionSlot() {
		n.metrics.refusalsTotal.WithLabelValues("overloaded").Inc()
		return nil, &transport.HTTPError{Status: http.StatusServiceUnavailable, Code: CodeOverloaded, RetryAfter: 1,
			Message: fmt.Sprintf("this gateway node is at its limit of %d concurrent sessions; retry shortly or connect to another node", n.cfg.MaxSessions)}
	}
	creds := n.credentialSource(spec)
	up, err := n.dial(ctx, spec, creds)
	if err != nil {
		n.releaseSessionSlot()
		return nil, err
	}
	id := rand.Text()
	return &session{
		n: n, id: id, transport: transportName, route: spec.route,
		org: spec.org, account: spec.account, claims: claims,
		remote: req.remote, creds: creds,
		up:       up,
		pending:  make(map[jsonrpc.ID]pendingCall),
		finished: make(map[jsonrpc.ID]context.CancelFunc),
		logger: n.logger.With(slog.String("session", id), slog.String("transport", transportName), slog.String("service", claims.Service),
			slog.String("route", spec.route.Name), slog.String("org", spec.org), slog.String("account", spec.account)),
	}, nil
}

// takeSessionSlot counts a session against MaxSessions, reporting false
// when the node is full.
func (n *Node) takeSessionSlot() bool {
	if n.activeSessions.Add(1) > int64(n.cfg.MaxSessions) {
		n.activeSessions.Add(-1)
		return false
	}
	return true
}

func (n *Node) releaseSessionSlot() { n.activeSessions.Add(-1) }

// Sessions returns the number of sessions open on this node, across
// transports.
func (n *Node) Sessions() int { return int(n.activeSessions.Load()) }

// discard drops a prepared session that never ran.
func (s *session) discard() {
	s.up.Close()
	s.n.releaseSessionSlot()
}

func (n *Node) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	s, err := n.prepare(r, "websocket")
	if err != nil {
		transport.WriteHTTPError(w, err)
		return
	}
	down, err := transport.AcceptWebSocket(w, r, transport.WebSocketOptions{MaxMessageBytes: n.cfg.MaxMessageBytes})
	if err != nil {
		s.discard()
		return // Accept has written the HTTP error
	}
	s.down = down
	n.sessions.Add(1)
	defer n.sessions.Done()
	s.run(n.ctx)
}

// openStreamable starts a streamable HTTP session for the transport layer.
func (n *Node) openStreamable(r *http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
	s, err := n.prepare(r, "streamable")
	if err != nil {
		return nil, nil, err
	}
	n.sessions.Add(1)
	return s.authorizeDriver, func(down mcp.Connection) {
		defer n.sessions.Done()
		s.down = down
		s.run(n.ctx)
	}, nil
}
