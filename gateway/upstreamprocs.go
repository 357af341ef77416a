package gateway

import (
	"fmt"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgw/mcpgw/transport"
)

// upstreamProcs counts the upstream processes (stdio routes' commands) the
// node runs, per route, and holds each route to a cap: every session of a
// stdio route runs a process of its own, and sessions whose clients left
// without ending them would otherwise pile processes up until they expire.
type upstreamProcs struct {
	max   int
	gauge *prometheus.GaugeVec // route

	mu      sync.Mutex
	running map[string]int // route → processes running; guarded by mu
}

func newUpstreamProcs(max int, reg prometheus.Registerer) *upstreamProcs {
	p := &upstreamProcs{
		max: max,
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcpgw_upstream_processes", Help: "Upstream processes (stdio routes' commands) running, by route.",
		}, []string{"route"}),
		running: make(map[string]int),
	}
	reg.MustRegister(p.gauge)
	return p
}

// take counts a process about to start for route, or refuses it at the
// cap. The caller gives it back with release once the process has exited.
func (p *upstreamProcs) take(route string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[route] >= p.max {
		return &transport.Refusal{Code: transport.CodeOverloaded, RetryAfter: 1,
			Message: fmt.Sprintf("route %q has %d upstream processes running on this node, its cap; end sessions you no longer use (a streamable HTTP client ends one with DELETE), retry shortly, or connect to another node", route, p.running[route])}
	}
	p.running[route]++
	p.gauge.WithLabelValues(route).Set(float64(p.running[route]))
	return nil
}

func (p *upstreamProcs) release(route string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running[route]--
	p.gauge.WithLabelValues(route).Set(float64(p.running[route]))
	if p.running[route] <= 0 {
		delete(p.running, route)
	}
}

// count returns the upstream processes running for route.
func (p *upstreamProcs) count(route string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running[route]
}

// processConn is the connection to an upstream process; closing it ends
// the process and gives its slot back.
type processConn struct {
	mcp.Connection
	once    sync.Once
	release func()
}

func (c *processConn) Close() error {
	// Close returns once the process has exited (or been killed), so the
	// count never drops below what runs.
	err := c.Connection.Close()
	c.once.Do(c.release)
	return err
}
