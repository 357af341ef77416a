package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's own Prometheus instruments (listeners, process),
// on the node's registry, which the gateway registers the data path's
// instruments on too. Never the global registry, so tests can run many
// nodes.
type metrics struct {
	registry *prometheus.Registry

	quicConnsActive   prometheus.Gauge
	connsRefusedTotal *prometheus.CounterVec // listener, reason
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		quicConnsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpgw_quic_connections_active", Help: "Open QUIC connections (each carries many sessions).",
		}),
		connsRefusedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_listener_connections_refused_total", Help: "Connections closed on arrival at a connection cap, by listener and cap (listener_cap, per_ip_cap).",
		}, []string{"listener", "reason"}),
	}
	m.registry.MustRegister(m.quicConnsActive, m.connsRefusedTotal,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
