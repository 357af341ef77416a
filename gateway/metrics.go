package gateway

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Transports are the downstream transport names sessions are labelled
// with; their series exist from the start.
var Transports = []string{"websocket", "streamable", "sse", "quic", "unix"}

// RefusalKinds are the values of mcpgw_proxy_refusals_total's kind label,
// every one present (zero) from the start.
var RefusalKinds = []string{
	"not_ready", "origin", "bad_request", "bad_open_frame", "no_route",
	"token_missing", "token_invalid", "token_expired", "token_revoked", "token_signature",
	"token_malformed", "token_audience", "token_unknown_key",
	"org_forbidden", "session_forbidden", "rule_denied", "rate_limited", "overloaded",
	"session_inflight", "bad_message", "no_credential", "credential_broken",
	"upstream_error", "upstream_cross_origin", "upstream_processes",
}

// UpstreamErrorKinds are the values of mcpgw_upstream_errors_total's kind
// label: connect (the upstream could not be reached), cross_origin (it
// pointed the session at another origin), request (a call's request
// failed without a JSON-RPC answer), unusable_message (it sent a message
// the gateway cannot use), bad_result (a result the gateway refuses to
// decide on), closed (it ended the session with calls unanswered).
var UpstreamErrorKinds = []string{"connect", "cross_origin", "request", "unusable_message", "bad_result", "closed"}

// metrics are the data path's Prometheus instruments, registered on the
// Registerer the gateway is given (never the global one, so tests can run
// many gateways). What a call touches is resolved once (per session for
// per-route series, at start for the rest), so a call costs atomic adds,
// not label lookups.
type metrics struct {
	sessionsActive *prometheus.GaugeVec   // transport
	sessionsTotal  *prometheus.CounterVec // transport
	messagesTotal  *prometheus.CounterVec // direction
	callsTotal     *prometheus.CounterVec // route, outcome
	// callSeconds is a tools/call's whole time in the gateway;
	// gatewaySeconds and upstreamSeconds split every call (any method)
	// into the time spent waiting on the upstream and the rest.
	callSeconds     *prometheus.HistogramVec // route
	gatewaySeconds  *prometheus.HistogramVec // route
	upstreamSeconds *prometheus.HistogramVec // route
	refusalsTotal   *prometheus.CounterVec   // kind
	// sessionRefusals counts sessions refused before they opened, by the
	// reason their audit record gives.
	sessionRefusals *prometheus.CounterVec // reason
	// unrequestedTotal counts upstream responses to no pending call, dropped.
	unrequestedTotal *prometheus.CounterVec // route
	upstreamErrors   *prometheus.CounterVec // route, kind
	// streamableExpired counts streamable HTTP sessions closed for want of
	// use.
	streamableExpired  *prometheus.CounterVec // reason: abandoned, idle
	upstreamBytes      *prometheus.CounterVec // direction: in (read from upstreams), out
	tokenVerifications *prometheus.CounterVec // cache (hit, miss), outcome (ok, refused)
	limiterRefusals    *prometheus.CounterVec // limit: the operator's limit id
	// reestablished counts stdio and WebSocket upstream connections
	// re-established (or closed) because their credential changed.
	reestablished *prometheus.CounterVec // route, reason, outcome
	// consentLinks counts the authorization URLs sessions needing consent
	// were given: a new flow (issued), an open one again (reused), or none
	// (failed).
	consentLinks *prometheus.CounterVec // outcome

	// Cached children, created with the vectors.
	msgClientToServer, msgServerToClient prometheus.Counter
	upIn, upOut                          prometheus.Counter
	tokenHit, tokenMissOK, tokenRefused  prometheus.Counter
	transports                           map[string]transportMetrics // read-only after newMetrics

	routes sync.Map // route name → *routeMetrics

	limitsMu sync.Mutex
	limits   map[string]bool // limit ids with series; guarded by limitsMu
}

// transportMetrics are one downstream transport's cached series.
type transportMetrics struct {
	active prometheus.Gauge
	opened prometheus.Counter
}

// routeMetrics are one route's cached series, shared by its sessions.
type routeMetrics struct {
	ok, err, toolErr, refused prometheus.Counter
	call, gateway, upstream   prometheus.Observer
	unrequested               prometheus.Counter
	upErrors                  map[string]prometheus.Counter // by kind; read-only
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcpgw_proxy_sessions_active", Help: "Open proxied MCP sessions, by downstream transport.",
		}, []string{"transport"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_sessions_total", Help: "Proxied MCP sessions opened, by downstream transport (refused ones are in mcpgw_proxy_refusals_total).",
		}, []string{"transport"}),
		messagesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_messages_total", Help: "JSON-RPC messages forwarded.",
		}, []string{"direction"}),
		callsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_tool_calls_total", Help: "tools/call requests by outcome (ok, error, tool_error, refused).",
		}, []string{"route", "outcome"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcpgw_proxy_tool_call_duration_seconds",
			Help:    "Time from a tools/call reaching the gateway to its response leaving it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		gatewaySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcpgw_proxy_gateway_duration_seconds",
			Help:    "Time the gateway adds to a call (any method): its whole time in the gateway minus the time waiting on the upstream.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18),
		}, []string{"route"}),
		upstreamSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcpgw_proxy_upstream_duration_seconds",
			Help:    "Time a call (any method) waited on the upstream: from being sent to its response arriving.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		refusalsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_refusals_total", Help: "Requests and sessions refused, by kind.",
		}, []string{"kind"}),
		sessionRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_session_refusals_total", Help: "Sessions refused before they opened, by reason (as in their audit record: unauthorized, forbidden, no_route, no_credential, overloaded, upstream_error, bad_request, ...); mcpgw_proxy_refusals_total has the finer kind.",
		}, []string{"reason"}),
		unrequestedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_unrequested_responses_total", Help: "Upstream responses whose id no pending call had, dropped instead of forwarded.",
		}, []string{"route"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_upstream_errors_total", Help: "Upstream failures by route and kind (connect, cross_origin, request, unusable_message, bad_result, closed).",
		}, []string{"route", "kind"}),
		streamableExpired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_streamable_sessions_expired_total", Help: "Streamable HTTP sessions closed for want of use: abandoned (no GET stream, no request for the abandon timeout) or idle (no request for the idle timeout).",
		}, []string{"reason"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_upstream_bytes_total", Help: "Bytes on the upstream network connections (TLS included; stdio upstreams are not counted), by direction: in (from upstreams), out.",
		}, []string{"direction"}),
		tokenVerifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_token_verifications_total", Help: "Service-token checks: cache hit (verified before under the same policy view) or miss (signature checked), by outcome (ok, refused).",
		}, []string{"cache", "outcome"}),
		limiterRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_limiter_refusals_total", Help: "tools/call requests refused by a rate limit, by the limit's id.",
		}, []string{"limit"}),
		reestablished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_upstream_reestablished_total", Help: "Open stdio and WebSocket upstream connections re-established on a rotated credential (reason credential_rotated) or closed because it was removed (credential_removed), by outcome (ok, error).",
		}, []string{"route", "reason", "outcome"}),
		consentLinks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_oauth_consent_links_total", Help: "Authorization URLs handed to sessions that need consent: issued (a new flow), reused (an open flow's) or failed (none could be started).",
		}, []string{"outcome"}),
		transports: make(map[string]transportMetrics, len(Transports)),
		limits:     map[string]bool{},
	}
	m.msgClientToServer = m.messagesTotal.WithLabelValues("client_to_server")
	m.msgServerToClient = m.messagesTotal.WithLabelValues("server_to_client")
	m.upIn = m.upstreamBytes.WithLabelValues("in")
	m.upOut = m.upstreamBytes.WithLabelValues("out")
	m.tokenHit = m.tokenVerifications.WithLabelValues("hit", "ok")
	m.tokenMissOK = m.tokenVerifications.WithLabelValues("miss", "ok")
	m.tokenRefused = m.tokenVerifications.WithLabelValues("miss", "refused")
	for _, t := range Transports {
		m.transports[t] = transportMetrics{active: m.sessionsActive.WithLabelValues(t), opened: m.sessionsTotal.WithLabelValues(t)}
	}
	for _, k := range RefusalKinds {
		m.refusalsTotal.WithLabelValues(k)
	}
	for _, r := range sessionRefusalReasons() {
		m.sessionRefusals.WithLabelValues(r)
	}
	for _, r := range []string{"abandoned", "idle"} {
		m.streamableExpired.WithLabelValues(r)
	}
	reg.MustRegister(m.sessionsActive, m.sessionsTotal, m.messagesTotal, m.refusalsTotal, m.sessionRefusals, m.streamableExpired,
		m.upstreamBytes, m.tokenVerifications, m.reestablished, m.consentLinks)
	return m
}

// perRoute are the vectors whose series are per route (or per limit):
// they are registered behind a collector that brings the policy view up to
// date first, so a route's series exist from the first scrape after it is
// added, before any session uses it.
func (m *metrics) perRoute() []prometheus.Collector {
	return []prometheus.Collector{m.callsTotal, m.callSeconds, m.gatewaySeconds, m.upstreamSeconds,
		m.unrequestedTotal, m.upstreamErrors, m.limiterRefusals}
}

// transport returns the cached series of a downstream transport.
func (m *metrics) transport(name string) transportMetrics {
	if t, ok := m.transports[name]; ok {
		return t
	}
	return transportMetrics{active: m.sessionsActive.WithLabelValues(name), opened: m.sessionsTotal.WithLabelValues(name)}
}

// route returns route's series, creating them the first time.
func (m *metrics) route(name string) *routeMetrics {
	if rm, ok := m.routes.Load(name); ok {
		return rm.(*routeMetrics)
	}
	rm := &routeMetrics{
		ok:          m.callsTotal.WithLabelValues(name, "ok"),
		err:         m.callsTotal.WithLabelValues(name, "error"),
		toolErr:     m.callsTotal.WithLabelValues(name, "tool_error"),
		refused:     m.callsTotal.WithLabelValues(name, "refused"),
		call:        m.callSeconds.WithLabelValues(name),
		gateway:     m.gatewaySeconds.WithLabelValues(name),
		upstream:    m.upstreamSeconds.WithLabelValues(name),
		unrequested: m.unrequestedTotal.WithLabelValues(name),
		upErrors:    make(map[string]prometheus.Counter, len(UpstreamErrorKinds)),
	}
	for _, k := range UpstreamErrorKinds {
		rm.upErrors[k] = m.upstreamErrors.WithLabelValues(name, k)
	}
	actual, _ := m.routes.LoadOrStore(name, rm)
	return actual.(*routeMetrics)
}

// keepRoutes drops the series of routes and limits no longer configured,
// so that churn in routes does not grow /metrics for ever. A session still
// open on a removed route counts into series no longer exported.
func (m *metrics) keepRoutes(routes, limits map[string]bool) {
	m.routes.Range(func(k, _ any) bool {
		name := k.(string)
		if !routes[name] {
			m.routes.Delete(name)
			for _, c := range []interface {
				DeletePartialMatch(prometheus.Labels) int
			}{m.callsTotal, m.callSeconds, m.gatewaySeconds, m.upstreamSeconds, m.unrequestedTotal, m.upstreamErrors} {
				c.DeletePartialMatch(prometheus.Labels{"route": name})
			}
		}
		return true
	})
	m.limitsMu.Lock()
	defer m.limitsMu.Unlock()
	for id := range m.limits {
		if !limits[id] {
			m.limiterRefusals.DeleteLabelValues(id)
			delete(m.limits, id)
		}
	}
	for id := range limits {
		if !m.limits[id] {
			m.limiterRefusals.WithLabelValues(id)
			m.limits[id] = true
		}
	}
}

// outcome returns the tools/call counter of a call outcome label.
func (rm *routeMetrics) outcome(label string) prometheus.Counter {
	switch label {
	case "ok":
		return rm.ok
	case "tool_error":
		return rm.toolErr
	case "refused":
		return rm.refused
	}
	return rm.err
}

// upstreamError counts one upstream failure of kind (one of
// UpstreamErrorKinds).
func (rm *routeMetrics) upstreamError(kind string) {
	if c, ok := rm.upErrors[kind]; ok {
		c.Inc()
	}
}

// routeCollector collects the per-route vectors after bringing the policy
// view (and so the route and limit series) up to date.
type routeCollector struct {
	g  *Gateway
	cs []prometheus.Collector
}

func (c *routeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, col := range c.cs {
		col.Describe(ch)
	}
}

func (c *routeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.g.ctx.Err() == nil {
		// An error is the data path's to report; the scrape shows what
		// exists.
		c.g.policy()
	}
	for _, col := range c.cs {
		col.Collect(ch)
	}
}

// sessionRefusalReasons are the values of
// mcpgw_proxy_session_refusals_total's reason label.
func sessionRefusalReasons() []string {
	seen := map[string]bool{"rpc_error": true, "internal_error": true}
	for _, r := range auditReasons {
		seen[r] = true
	}
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}
