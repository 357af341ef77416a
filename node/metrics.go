package node

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mcpgw/mcpgw/cluster"
)

// metrics are the node's own Prometheus instruments (listeners, process),
// on the node's registry, which the gateway registers the data path's
// instruments on too. Never the global registry, so tests can run many
// nodes.
type metrics struct {
	registry *prometheus.Registry

	quicConnsActive   prometheus.Gauge
	connsRefusedTotal *prometheus.CounterVec // listener, reason
	raft              *raftCollector
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
		raft: &raftCollector{},
	}
	m.registry.MustRegister(m.quicConnsActive, m.connsRefusedTotal, m.raft,
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
