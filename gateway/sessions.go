package gateway

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

// Handler serves /v1/mcp (target in the query) and /v1/mcp/<route>: a
// WebSocket upgrade becomes a WebSocket session, anything else is
// streamable HTTP. /v1/sse and /v1/sse/<route> serve the 2024-11-05
// HTTP+SSE transport to clients that speak nothing newer. Any other path
// gets a 404 naming the endpoints.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	h := func(w http.ResponseWriter, r *http.Request) {
		if err := g.checkOrigin(r); err != nil {
			g.metrics.refusalsTotal.WithLabelValues("origin").Inc()
			transport.WriteHTTPError(w, err)
			return
		}
		if transport.IsWebSocketUpgrade(r) {
			g.serveWebSocket(w, r)
			return
		}
		g.streamable.ServeHTTP(w, r)
	}
	mux.HandleFunc("/v1/mcp", h)
	mux.HandleFunc("/v1/mcp/{route}", h)
	sse := func(w http.ResponseWriter, r *http.Request) {
		if err := g.checkOrigin(r); err != nil {
			g.metrics.refusalsTotal.WithLabelValues("origin").Inc()
			transport.WriteHTTPError(w, err)
			return
		}
		g.sse.ServeHTTP(w, r)
	}
	mux.HandleFunc("/v1/sse", sse)
	mux.HandleFunc("/v1/sse/{route}", sse)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		transport.WriteHTTPError(w, &transport.HTTPError{Status: http.StatusNotFound, Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("no endpoint at %s: MCP sessions live at /v1/mcp?target=<url>&org=<org>&account=<account> or /v1/mcp/<route> (legacy HTTP+SSE clients: /v1/sse?target=… or /v1/sse/<route>)", r.URL.Path)})
	})
	return mux
}

// checkOrigin defends against DNS rebinding and cross-site use, as the MCP
// specification requires: a request reaching a loopback listener must name a
// loopback Host, and a browser Origin must be a loopback origin or on the
// allow-list.
func (g *Gateway) checkOrigin(r *http.Request) error {
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && transport.IsLoopbackAddr(la.String()) && !transport.IsLoopbackAddr(r.Host) {
		return &transport.HTTPError{Status: http.StatusForbidden, Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("Host %q refused on a loopback listener (DNS rebinding defence); connect via localhost or 127.0.0.1", r.Host)}
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	o, err := ParseOrigin(origin)
	if err == nil {
		if u, _ := url.Parse(o); transport.IsLoopbackAddr(u.Host) {
			return nil
		}
		for _, allowed := range g.opts.AllowedOrigins {
			if a, _ := ParseOrigin(allowed); a == o {
				return nil
			}
		}
	}
	return &transport.HTTPError{Status: http.StatusForbidden, Code: jsonrpc.CodeInvalidRequest,
		Message: fmt.Sprintf("Origin %q is not allowed; the operator can add it to the allowed origins", origin)}
}

// ParseOrigin canonicalizes a browser Origin, scheme://host[:port]; its
// error says what an origin looks like.
func ParseOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return "", errors.New("an origin is scheme://host[:port], e.g. https://app.example.com")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// sessionRequest is what a downstream asks for, whatever its transport.
type sessionRequest struct {
	token   string // service token
	target  string // upstream URL, or
	route   string // a route name
	org     string
	account string
	framed  bool   // from an open frame rather than an HTTP request
	modern  bool   // a stateless 2026-07-28 request (streamable HTTP)
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
func (g *Gateway) resolve(req sessionRequest) (sessionSpec, error) {
	spec := sessionSpec{org: req.org, account: req.account}
	bad := func(msg string) error {
		g.metrics.refusalsTotal.WithLabelValues("bad_request").Inc()
		return &transport.Refusal{Code: jsonrpc.CodeInvalidParams, Message: msg}
	}
	if err := ValidName("org", spec.org); err != nil {
		return spec, bad(err.Error() + req.hint("; pass ?org=<org>", `; set "org" in the open frame`))
	}
	if err := ValidName("account", spec.account); err != nil {
		return spec, bad(err.Error() + req.hint("; pass ?account=<account>", `; set "account" in the open frame`))
	}
	st, err := g.policy()
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
			g.metrics.refusalsTotal.WithLabelValues("no_route").Inc()
			return spec, &transport.Refusal{Code: transport.CodeNoRoute, Message: err.Error()}
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
func (g *Gateway) routeParamHeaders(route storage.Route) *transport.ParamHeaders {
	key := route.Name + "\x00" + route.URL
	if p, ok := g.paramHeaders.Load(key); ok {
		return p.(*transport.ParamHeaders)
	}
	p, _ := g.paramHeaders.LoadOrStore(key, &transport.ParamHeaders{})
	return p.(*transport.ParamHeaders)
}

// dial opens the upstream connection for a session, with the account's
// credential injected: as headers on every HTTP request (read afresh each
// time, so a rotated credential applies from the next request) or as
// environment variables of a stdio command.
func (g *Gateway) dial(ctx context.Context, spec sessionSpec, creds *credentialSource) (mcp.Connection, error) {
	env, err := creds.environ()
	if err != nil {
		return nil, g.credentialRefusal(ctx, spec, err)
	}
	if spec.route.Transport == storage.TransportStdio {
		if err := g.procs.take(spec.route.Name); err != nil {
			g.metrics.refusalsTotal.WithLabelValues("upstream_processes").Inc()
			return nil, err
		}
		up, err := g.dialUpstream(ctx, spec, creds, env)
		if err != nil {
			g.procs.release(spec.route.Name)
			return nil, err
		}
		return &processConn{Connection: up, release: func() { g.procs.release(spec.route.Name) }}, nil
	}
	return g.dialUpstream(ctx, spec, creds, env)
}

// dialUpstream is dial once the credential is read.
func (g *Gateway) dialUpstream(ctx context.Context, spec sessionSpec, creds *credentialSource, env []string) (mcp.Connection, error) {
	ctx, cancel := context.WithTimeout(ctx, g.opts.ConnectTimeout)
	defer cancel()
	up, err := transport.Dial(ctx, transport.Upstream{
		Transport:       string(spec.route.Transport),
		URL:             spec.dialURL,
		Command:         spec.route.Command,
		Header:          creds.header,
		Reauthorize:     creds.reauthorize,
		Env:             env,
		MaxMessageBytes: g.opts.MaxMessageBytes,
		Client:          g.upstreamClient,
		Logger:          g.logger.With(slog.String("route", spec.route.Name)),
		Route:           spec.route.Name,
		ParamHeaders:    g.routeParamHeaders(spec.route),
	})
	var coe *transport.CrossOriginError
	if errors.As(err, &coe) {
		g.metrics.refusalsTotal.WithLabelValues("upstream_cross_origin").Inc()
		g.metrics.route(spec.route.Name).upstreamError("cross_origin")
		g.logger.Warn("upstream pointed the session at another origin; refused", slog.String("route", spec.route.Name),
			slog.String("route_origin", coe.Route), slog.String("target", coe.Target))
		return nil, &transport.Refusal{Code: transport.CodeUpstreamError,
			Message: fmt.Sprintf("upstream of route %q named a message endpoint on another origin (%s); the gateway only talks to the route's origin (%s): fix the server or the route URL (`mcpgw route list`)", spec.route.Name, coe.Target, coe.Route)}
	}
	if err != nil {
		g.metrics.refusalsTotal.WithLabelValues("upstream_error").Inc()
		g.metrics.route(spec.route.Name).upstreamError("connect")
		g.logger.Warn("upstream connect failed", slog.String("route", spec.route.Name), slog.Any("error", err))
		return nil, &transport.Refusal{Code: transport.CodeUpstreamError,
			Message: fmt.Sprintf("upstream of route %q is unreachable: %v; check the server is up and the route is right (`mcpgw route list`)", spec.route.Name, err)}
	}
	return up, nil
}

// credentialRefusal turns a credential lookup failure into the refusal a
// caller sees before its session starts.
func (g *Gateway) credentialRefusal(ctx context.Context, spec sessionSpec, err error) error {
	if cr := g.consentRefusal(ctx, spec, err); cr != nil {
		return cr
	}
	var ref *transport.Refusal
	switch {
	case errors.As(err, &ref):
		g.metrics.refusalsTotal.WithLabelValues("credential_broken").Inc()
		return ref
	case errors.Is(err, errNoCredential):
		g.metrics.refusalsTotal.WithLabelValues("no_credential").Inc()
		return &transport.Refusal{Code: transport.CodeNoCredential, Message: err.Error()}
	}
	return err
}

// prepare is prepareSession for an HTTP request.
func (g *Gateway) prepare(r *http.Request, transportName string) (*session, error) {
	req := httpSessionRequest(r)
	// A 2026-07-28 request names its method in a header; a stateless one
	// is anything but initialize.
	m := r.Header.Get(transport.HeaderMethod)
	req.modern = m != "" && m != "initialize"
	s, err := g.prepareSession(r.Context(), req, transportName)
	if err != nil {
		return nil, err
	}
	s.traceCtx = g.headerTraceContext(context.Background(), r.Header)
	return s, nil
}

// prepareSession authenticates, resolves, takes a session slot and dials:
// everything that can refuse a session before it starts, for every
// transport. The session holds its slot until run returns or discard is
// called.
func (g *Gateway) prepareSession(ctx context.Context, req sessionRequest, transportName string) (_ *session, err error) {
	var claims *policy.Claims
	var spec sessionSpec
	defer func() {
		if err != nil {
			g.auditRefusal(req, claims, spec, err)
		}
	}()
	if g.opts.Admit != nil {
		if err := g.opts.Admit(ctx); err != nil {
			g.metrics.refusalsTotal.WithLabelValues("not_ready").Inc()
			return nil, err
		}
	}
	if req.token == "" && req.framed && !g.opts.InsecureDev {
		g.metrics.refusalsTotal.WithLabelValues("token_missing").Inc()
		return nil, &transport.Refusal{Code: transport.CodeUnauthorized,
			Message: `no service token: set "token" in the open frame; get one with ` + "`mcpgw token issue`"}
	}
	claims, err = g.verifyToken(req.token)
	if err != nil {
		return nil, err
	}
	spec, err = g.resolve(req)
	if err != nil {
		return nil, err
	}
	if err := g.authorizeSession(claims, spec); err != nil {
		return nil, err
	}
	if !g.takeSessionSlot() {
		g.metrics.refusalsTotal.WithLabelValues("overloaded").Inc()
		return nil, &transport.Refusal{Code: transport.CodeOverloaded, RetryAfter: 1,
			Message: fmt.Sprintf("this gateway node is at its limit of %d concurrent sessions; retry shortly or connect to another node", g.opts.MaxSessions)}
	}
	creds := g.credentialSource(spec)
	// Stamped before the dial: a credential replaced while it runs then
	// looks changed at the first call, which re-establishes the connection
	// on it, rather than unchanged.
	var stamp credStamp
	if rotates(spec.route) {
		stamp, _ = stampFor(spec.route, creds)
	}
	up, err := g.dial(ctx, spec, creds)
	var consent *consentWait
	var cr *consentRequired
	if err != nil && errors.As(err, &cr) && holdsForConsent(transportName, req.modern) {
		// The client may be able to take the link as an elicitation: the
		// session starts without its upstream, dialed once consent arrives.
		consent, err = &consentWait{spec: spec, cr: cr}, nil
	}
	if err != nil {
		g.releaseSessionSlot()
		return nil, err
	}
	id := rand.Text()
	s := &session{
		g: g, id: id, transport: transportName, route: spec.route, rm: g.metrics.route(spec.route.Name),
		org: spec.org, account: spec.account, claims: claims,
		remote: req.remote, creds: creds,
		up:       up,
		consent:  consent,
		pending:  make(map[jsonrpc.ID]pendingCall),
		finished: make(map[jsonrpc.ID]context.CancelFunc),
		logger: g.logger.With(slog.String("session", id), slog.String("transport", transportName), slog.String("service", claims.Service),
			slog.String("route", spec.route.Name), slog.String("org", spec.org), slog.String("account", spec.account)),
	}
	if rotates(spec.route) {
		s.up = newReconnectConn(up, stamp, reconnectConfig{
			dial:          func(ctx context.Context) (mcp.Connection, error) { return g.dial(ctx, spec, creds) },
			stamp:         func() (credStamp, error) { return stampFor(spec.route, creds) },
			reestablished: s.reestablished,
			route:         spec.route.Name,
			drain:         g.opts.RotationDrainTimeout,
			wait:          g.opts.RotationDrainTimeout + 2*g.opts.ConnectTimeout,
			handshake:     g.opts.ConnectTimeout,
		})
	}
	return s, nil
}

// takeSessionSlot counts a session against MaxSessions, reporting false
// when the node is full.
func (g *Gateway) takeSessionSlot() bool {
	if g.activeSessions.Add(1) > int64(g.opts.MaxSessions) {
		g.activeSessions.Add(-1)
		return false
	}
	return true
}

func (g *Gateway) releaseSessionSlot() { g.activeSessions.Add(-1) }

// discard drops a prepared session that never ran.
func (s *session) discard() {
	if s.up != nil {
		s.up.Close()
	}
	s.g.releaseSessionSlot()
}

func (g *Gateway) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	s, err := g.prepare(r, "websocket")
	if err != nil {
		transport.WriteHTTPError(w, err)
		return
	}
	down, err := transport.AcceptWebSocket(w, r, transport.WebSocketOptions{MaxMessageBytes: g.opts.MaxMessageBytes})
	if err != nil {
		s.discard()
		return // Accept has written the HTTP error
	}
	s.down = down
	// The session runs on a goroutine of its own and the handler returns:
	// the HTTP server's state for the hijacked connection (its buffers
	// among it) is freed rather than held for the session's life.
	g.sessions.Add(1)
	go func() {
		defer g.sessions.Done()
		s.run(g.ctx)
	}()
}

// openStreamable starts a streamable HTTP session for the transport layer.
func (g *Gateway) openStreamable(r *http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
	s, err := g.prepare(r, "streamable")
	if err != nil {
		return nil, nil, err
	}
	g.sessions.Add(1)
	return s.authorizeDriver, func(down mcp.Connection) {
		defer g.sessions.Done()
		s.down = down
		if o, ok := down.(interface{ OneShot() bool }); ok {
			s.oneShot = o.OneShot()
		}
		s.run(g.ctx)
	}, nil
}

// openSSE starts a legacy HTTP+SSE session for the transport layer. Its
// POSTs are authorized as streamable HTTP requests are: by a token that
// could have opened the session.
func (g *Gateway) openSSE(r *http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
	s, err := g.prepare(r, "sse")
	if err != nil {
		return nil, nil, err
	}
	g.sessions.Add(1)
	return s.authorizeDriver, func(down mcp.Connection) {
		defer g.sessions.Done()
		s.down = down
		s.run(g.ctx)
	}, nil
}
