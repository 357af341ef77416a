package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the data path's Prometheus instruments, registered on the
// Registerer the gateway is given (never the global one, so tests can run
// many gateways).
type metrics struct {
	sessionsActive *prometheus.GaugeVec     // transport
	sessionsTotal  *prometheus.CounterVec   // transport, outcome
	messagesTotal  *prometheus.CounterVec   // direction
	callsTotal     *prometheus.CounterVec   // route, outcome
	callSeconds    *prometheus.HistogramVec // route
	refusalsTotal  *prometheus.CounterVec   // kind
	// unrequestedTotal counts upstream responses to no pending call, dropped.
	unrequestedTotal *prometheus.CounterVec // route
	// streamableExpired counts streamable HTTP sessions closed for want of
	// use.
	streamableExpired *prometheus.CounterVec // reason: abandoned, idle
	// consentLinks counts the authorization URLs sessions needing consent
	// were given: a new flow (issued), an open one again (reused), or none
	// (failed).
	consentLinks *prometheus.CounterVec // outcome
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcpgw_proxy_sessions_active", Help: "Open proxied MCP sessions.",
		}, []string{"transport"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_sessions_total", Help: "Proxied MCP sessions opened.",
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
		refusalsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_refusals_total", Help: "Requests and sessions refused, by kind.",
		}, []string{"kind"}),
		unrequestedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_proxy_unrequested_responses_total", Help: "Upstream responses whose id no pending call had, dropped instead of forwarded.",
		}, []string{"route"}),
		streamableExpired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_streamable_sessions_expired_total", Help: "Streamable HTTP sessions closed for want of use: abandoned (no GET stream, no request for the abandon timeout) or idle (no request for the idle timeout).",
		}, []string{"reason"}),
		consentLinks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_oauth_consent_links_total", Help: "Authorization URLs handed to sessions that need consent: issued (a new flow), reused (an open flow's) or failed (none could be started).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.sessionsActive, m.sessionsTotal, m.messagesTotal, m.callsTotal, m.callSeconds, m.refusalsTotal, m.unrequestedTotal, m.streamableExpired, m.consentLinks)
	return m
}
