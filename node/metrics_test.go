package node

import (
	"runtime"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// TestNodeMetrics checks the node's own series: build info, readiness,
// connections accepted and bytes per listener (a WebSocket session on the
// session listener, a QUIC session, /metrics itself on the admin one),
// the vault's unseals of the credential, and the OAuth flow counters at
// zero from the start.
func TestNodeMetrics(t *testing.T) {
	n, _, route := startGateway(t, func(c *Config) { c.Version, c.Revision = "1.2.3", "abc123" })
	if got := metricValue(t, n, "mcpgw_build_info", "version", "1.2.3", "revision", "abc123", "go_version", runtime.Version()); got != 1 {
		t.Errorf("mcpgw_build_info{version=1.2.3,revision=abc123} = %v, want 1", got)
	}
	waitFor(t, "the node to be ready", func() bool { return metricValue(t, n, "mcpgw_node_ready") == 1 })
	for _, e := range oauthFlowEvents {
		if _, ok := seriesOf(t, n, "mcpgw_oauth_flows_total", "event", e); !ok {
			t.Errorf("mcpgw_oauth_flows_total{event=%q} is not exported", e)
		}
	}
	if _, ok := seriesOf(t, n, "mcpgw_tls_cert_expiry_timestamp_seconds"); !ok {
		t.Error("mcpgw_tls_cert_expiry_timestamp_seconds is not exported")
	}
	accepted := func(l string) float64 {
		return metricValue(t, n, "mcpgw_listener_connections_accepted_total", "listener", l)
	}
	bytes := func(l, dir string) float64 {
		return metricValue(t, n, "mcpgw_listener_bytes_total", "listener", l, "direction", dir)
	}
	sessBefore, quicBefore := accepted("session"), accepted("quic")
	unsealsBefore := histogramCount(t, n, "mcpgw_vault_operation_duration_seconds", "op", "unseal")

	putCredential(t, n, "org1", "acct1", route.Name, "bearer", "node-metrics-secret")
	ctx := testContext(t, 20*time.Second)
	sess, err := connect(t, ctx, n, route.URL, "org1", "acct1")
	if err != nil {
		t.Fatal(err)
	}
	if got := callText(t, ctx, sess, "echo", "hi"); got != "hi" {
		t.Fatalf("echo = %q", got)
	}
	conn := dialNodeQUIC(t, n)
	qs, err := openQUICSession(ctx, conn, testToken(n), route.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoErr(ctx, qs.sess, "hi"); err != nil {
		t.Fatal(err)
	}
	if got := accepted("session") - sessBefore; got < 1 {
		t.Errorf("session listener accepted %v connections, want at least 1", got)
	}
	if got := accepted("quic") - quicBefore; got != 1 {
		t.Errorf("QUIC listener accepted %v connections, want 1", got)
	}
	for _, l := range []string{"session", "quic"} {
		for _, dir := range []string{"in", "out"} {
			if bytes(l, dir) <= 0 {
				t.Errorf("mcpgw_listener_bytes_total{listener=%q,direction=%q} = %v, want > 0", l, dir, bytes(l, dir))
			}
		}
	}
	// Putting the credential sealed it; the sessions' dials unsealed it.
	if got := histogramCount(t, n, "mcpgw_vault_operation_duration_seconds", "op", "unseal") - unsealsBefore; got < 1 {
		t.Errorf("vault unseals went up by %v, want at least 1", got)
	}
	if got := histogramCount(t, n, "mcpgw_vault_operation_duration_seconds", "op", "seal"); got < 1 {
		t.Errorf("vault seals = %v, want at least 1", got)
	}
}

// seriesOf returns the series of name whose labels have the given name,
// value pairs, and whether there is one.
func seriesOf(t testing.TB, n *Node, name string, labels ...string) (*dto.Metric, bool) {
	t.Helper()
	mfs, err := n.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			return m, true
		}
	}
	return nil, false
}

// histogramCount returns the observation count of a histogram series.
func histogramCount(t testing.TB, n *Node, name string, labels ...string) float64 {
	t.Helper()
	m, ok := seriesOf(t, n, name, labels...)
	if !ok {
		t.Fatalf("%s%v is not exported", name, labels)
	}
	return float64(m.GetHistogram().GetSampleCount())
}
