package node

import (
	"cmp"
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/vault"
)

// listenerNames are the values of the listener label of the connection
// metrics, each present from the start.
var listenerNames = []string{"session", "admin", "unix", "quic"}

// oauthFlowEvents are the values of mcpgw_oauth_flows_total's event label:
// started (an authorization URL was handed out), completed (its callback
// stored the tokens), failed (starting or completing a flow failed).
// Refreshes and step-ups have their own counters (oauthMetrics).
var oauthFlowEvents = []string{admin.ConsentStarted, admin.ConsentCompleted, oauthFlowFailed}

// oauthFlowFailed is the event of a consent flow that failed to start or
// complete.
const oauthFlowFailed = "failed"

// metrics are the node's own Prometheus instruments (listeners, process),
// on the node's registry, which the gateway registers the data path's
// instruments on too. Never the global registry, so tests can run many
// nodes.
type metrics struct {
	registry *prometheus.Registry

	quicConnsActive    prometheus.Gauge
	connsRefusedTotal  *prometheus.CounterVec   // listener, reason
	connsAcceptedTotal *prometheus.CounterVec   // listener
	listenerBytes      *prometheus.CounterVec   // listener, direction
	vaultSeconds       *prometheus.HistogramVec // op: seal, unseal
	vaultErrors        *prometheus.CounterVec   // op
	oauthFlows         *prometheus.CounterVec   // event, one of oauthFlowEvents
	raft               *raftCollector
}

func newMetrics(version, revision string) *metrics {
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mcpgw_build_info", Help: "Always 1; the labels name the running build.",
	}, []string{"version", "go_version", "revision"})
	buildInfo.WithLabelValues(cmp.Or(version, "dev"), runtime.Version(), cmp.Or(revision, "unknown")).Set(1)
	m := &metrics{
		registry: prometheus.NewRegistry(),
		quicConnsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpgw_quic_connections_active", Help: "Open QUIC connections (each carries many sessions).",
		}),
		connsRefusedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_listener_connections_refused_total", Help: "Connections closed on arrival at a connection cap, by listener and cap (listener_cap, per_ip_cap).",
		}, []string{"listener", "reason"}),
		connsAcceptedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_listener_connections_accepted_total", Help: "Connections accepted within the connection caps, by listener (the QUIC listener counts QUIC connections).",
		}, []string{"listener"}),
		listenerBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_listener_bytes_total", Help: "Bytes on the downstream connections of a listener (TLS included; for QUIC, the streams' payload), by direction: in (from clients), out.",
		}, []string{"listener", "direction"}),
		vaultSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mcpgw_vault_operation_duration_seconds", Help: "Time to seal or unseal one credential or key (op: seal, unseal), failures included; the count is the number of operations.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
		}, []string{"op"}),
		vaultErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_vault_operation_errors_total", Help: "Seal and unseal operations that failed (op: seal, unseal).",
		}, []string{"op"}),
		oauthFlows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_oauth_flows_total", Help: "Upstream OAuth flows handled by this node, by event (started, completed, failed).",
		}, []string{"event"}),
		raft: &raftCollector{},
	}
	for _, l := range listenerNames {
		m.connsAcceptedTotal.WithLabelValues(l)
		m.listenerBytes.WithLabelValues(l, "in")
		m.listenerBytes.WithLabelValues(l, "out")
		for _, r := range []string{"listener_cap", "per_ip_cap"} {
			m.connsRefusedTotal.WithLabelValues(l, r)
		}
	}
	for _, op := range []vault.Op{vault.OpSeal, vault.OpUnseal} {
		m.vaultSeconds.WithLabelValues(string(op))
		m.vaultErrors.WithLabelValues(string(op))
	}
	for _, e := range oauthFlowEvents {
		m.oauthFlows.WithLabelValues(e)
	}
	m.registry.MustRegister(buildInfo, m.quicConnsActive, m.connsRefusedTotal, m.connsAcceptedTotal, m.listenerBytes,
		m.vaultSeconds, m.vaultErrors, m.oauthFlows, m.raft,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// raftStates are the values of mcpgw_raft_state's state label.
var raftStates = []string{"Leader", "Follower", "Candidate", "Shutdown"}

var (
	raftStateDesc         = prometheus.NewDesc("mcpgw_raft_state", "1 for this node's raft state (Leader, Follower, Candidate, Shutdown), 0 for the others.", []string{"state"}, nil)
	raftTermDesc          = prometheus.NewDesc("mcpgw_raft_term", "This node's current raft term.", nil, nil)
	raftCommitDesc        = prometheus.NewDesc("mcpgw_raft_commit_index", "The highest raft index this node knows to be committed.", nil, nil)
	raftAppliedDesc       = prometheus.NewDesc("mcpgw_raft_applied_index", "The highest raft index this node has applied.", nil, nil)
	raftLastContactDesc   = prometheus.NewDesc("mcpgw_raft_last_contact_seconds", "Seconds since this node last heard from the peer (+Inf: never); a follower hears only from the leader.", []string{"peer"}, nil)
	raftLeaderChangesDesc = prometheus.NewDesc("mcpgw_raft_leader_changes_total", "Changes of raft leader this node saw since it started, losing one included.", nil, nil)
)

// raftCollector reads the raft state at each scrape, so the series exist
// from the start (state Shutdown until raft opens) and are never stale.
type raftCollector struct {
	r atomic.Pointer[cluster.Raft] // nil until raft opens
}

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{raftStateDesc, raftTermDesc, raftCommitDesc, raftAppliedDesc, raftLastContactDesc, raftLeaderChangesDesc} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	st := cluster.Status{State: "Shutdown"}
	if r := c.r.Load(); r != nil {
		st = r.Status()
	}
	for _, s := range raftStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(raftStateDesc, prometheus.GaugeValue, v, s)
	}
	ch <- prometheus.MustNewConstMetric(raftTermDesc, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(raftCommitDesc, prometheus.GaugeValue, float64(st.CommitIndex))
	ch <- prometheus.MustNewConstMetric(raftAppliedDesc, prometheus.GaugeValue, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(raftLeaderChangesDesc, prometheus.CounterValue, float64(st.LeaderChanges))
	for _, p := range st.Peers {
		if p.Self {
			continue
		}
		since := math.Inf(1)
		if !p.LastContact.IsZero() {
			since = time.Since(p.LastContact).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(raftLastContactDesc, prometheus.GaugeValue, since, p.ID)
	}
}

// observeVault is the vault keys' Observer: it times every seal and unseal
// the node makes.
func (m *metrics) observeVault(op vault.Op, d time.Duration, err error) {
	m.vaultSeconds.WithLabelValues(string(op)).Observe(d.Seconds())
	if err != nil {
		m.vaultErrors.WithLabelValues(string(op)).Inc()
	}
}

// oauthEvent counts one upstream OAuth flow event, one of oauthFlowEvents.
func (m *metrics) oauthEvent(event string) { m.oauthFlows.WithLabelValues(event).Inc() }

// registerNode registers the instruments that read the node at each
// scrape: its readiness and its serving certificate's expiry.
func (m *metrics) registerNode(n *Node) {
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mcpgw_node_ready", Help: "1 when this node should get traffic (what GET /readyz answers 200 for), else 0.",
		}, func() float64 {
			if n.Readiness().Ready {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mcpgw_tls_cert_expiry_timestamp_seconds", Help: "When the certificate the session and admin listeners present expires (Unix time); 0 when they serve no TLS.",
		}, func() float64 {
			if c := n.servingCert.Load(); c != nil && c.Leaf != nil {
				return float64(c.Leaf.NotAfter.Unix())
			}
			return 0
		}),
	)
}
