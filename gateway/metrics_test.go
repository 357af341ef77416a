package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// scrape reads reg as /metrics serves it and parses the text: series
// name{label="value",...} (labels sorted) → value; a histogram gives
// name_count and name_sum.
func scrape(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			sort.Strings(labels)
			key := func(n string) string { return n + "{" + strings.Join(labels, ",") + "}" }
			switch {
			case m.Histogram != nil:
				out[key(name+"_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key(name+"_sum")] = m.GetHistogram().GetSampleSum()
			case m.Counter != nil:
				out[key(name)] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key(name)] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestMetricsPresentFromStart checks that a gateway's /metrics shows every
// series whose labels are known at start, at zero, before any traffic, and
// a route's and a limit's series while they exist.
func TestMetricsPresentFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	tg := newTestGateway(t, func(o *Options) { o.Registerer = reg })
	got := scrape(t, reg)
	var want []string
	for _, tr := range Transports {
		want = append(want, fmt.Sprintf("mcpgw_proxy_sessions_total{transport=%q}", tr), fmt.Sprintf("mcpgw_proxy_sessions_active{transport=%q}", tr))
	}
	for _, k := range RefusalKinds {
		want = append(want, fmt.Sprintf("mcpgw_proxy_refusals_total{kind=%q}", k))
	}
	for _, r := range sessionRefusalReasons() {
		want = append(want, fmt.Sprintf("mcpgw_proxy_session_refusals_total{reason=%q}", r))
	}
	want = append(want,
		`mcpgw_proxy_messages_total{direction="client_to_server"}`, `mcpgw_proxy_messages_total{direction="server_to_client"}`,
		`mcpgw_upstream_bytes_total{direction="in"}`, `mcpgw_upstream_bytes_total{direction="out"}`,
		`mcpgw_token_verifications_total{cache="hit",outcome="ok"}`, `mcpgw_token_verifications_total{cache="miss",outcome="ok"}`,
		`mcpgw_token_verifications_total{cache="miss",outcome="refused"}`,
		`mcpgw_audit_dropped_total{reason="queue_full"}`, `mcpgw_audit_dropped_total{reason="write_failed"}`,
		`mcpgw_audit_queue_records{}`, `mcpgw_audit_write_seconds_count{}`, `mcpgw_audit_records_total{}`,
		`mcpgw_streamable_sessions_expired_total{reason="idle"}`, `mcpgw_streamable_sessions_expired_total{reason="abandoned"}`)
	for _, name := range want {
		if v, ok := got[name]; !ok || v != 0 {
			t.Errorf("at start %s = %v (present %v), want present at 0", name, v, ok)
		}
	}
	if got, want := got[`mcpgw_audit_queue_capacity_records{}`], 65536.0; got != want {
		t.Errorf("mcpgw_audit_queue_capacity_records = %v, want %v", got, want)
	}

	tg.addRoute(t, storage.Route{Name: "fresh", URL: "http://127.0.0.1:1/mcp"})
	tg.update(t, func(tx *storage.Tx) error {
		return tx.PutLimit(storage.Limit{ID: "fresh-limit", Service: "*", Org: "*", Account: "*", Route: "fresh", Tool: "*", Rate: 1, Burst: 1})
	})
	got = scrape(t, reg)
	want = []string{`mcpgw_limiter_refusals_total{limit="fresh-limit"}`,
		`mcpgw_proxy_tool_call_duration_seconds_count{route="fresh"}`,
		`mcpgw_proxy_gateway_duration_seconds_count{route="fresh"}`, `mcpgw_proxy_upstream_duration_seconds_count{route="fresh"}`,
		`mcpgw_proxy_unrequested_responses_total{route="fresh"}`}
	for _, o := range []string{"ok", "error", "tool_error", "refused"} {
		want = append(want, fmt.Sprintf(`mcpgw_proxy_tool_calls_total{outcome=%q,route="fresh"}`, o))
	}
	for _, k := range UpstreamErrorKinds {
		want = append(want, fmt.Sprintf(`mcpgw_upstream_errors_total{kind=%q,route="fresh"}`, k))
	}
	for _, name := range want {
		if v, ok := got[name]; !ok || v != 0 {
			t.Errorf("once the route exists %s = %v (present %v), want present at 0", name, v, ok)
		}
	}

	// Removed, they go.
	tg.update(t, func(tx *storage.Tx) error {
		if _, err := tx.DeleteLimit("fresh-limit"); err != nil {
			return err
		}
		_, err := tx.DeleteRoute("fresh")
		return err
	})
	got = scrape(t, reg)
	for _, name := range want {
		if v, ok := got[name]; ok {
			t.Errorf("once the route is removed %s = %v, want gone", name, v)
		}
	}
}

// TestMetricsDeltas runs a known sequence through a gateway and checks that
// /metrics changes by exactly what it did: one session with two calls
// answered, one refused by a rate limit and one failing in the tool;
// sessions refused for no route and for a malformed token.
func TestMetricsDeltas(t *testing.T) {
	up := upstreamtest.New()
	upURL := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	reg := prometheus.NewRegistry()
	tg := newTestGateway(t, func(o *Options) { o.Registerer = reg })
	route := tg.addRoute(t, storage.Route{Name: "up", URL: upURL})
	tg.addRoute(t, storage.Route{Name: "down", URL: "http://127.0.0.1:1/mcp"}) // never used
	tg.update(t, func(tx *storage.Tx) error {
		return tx.PutLimit(storage.Limit{ID: "echo-2", Service: "*", Org: "*", Account: "*", Route: "up", Tool: "echo", Rate: 0.001, Burst: 2})
	})
	token := tg.issueToken(t, "svc", "*")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	before := scrape(t, reg)
	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway(tg.wsURL()), client.WithToken(token),
		client.WithProtocolVersion(benchProtocol))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
			t.Fatal(err)
		}
	}
	var werr *jsonrpc.Error
	if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); !errors.As(err, &werr) || werr.Code != transport.CodeRateLimited {
		t.Fatalf("third echo: %v, want rate limited", err)
	}
	if res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "fail", Arguments: map[string]any{"text": "x"}}); err != nil || !res.IsError {
		t.Fatalf("fail: %v %+v, want a tool error", err, res)
	}
	sess.Close()
	refused := []struct {
		target, token string
	}{
		{"http://nowhere.example/mcp", token},
		{route.URL, "not-a-token"},
	}
	for _, r := range refused {
		if s, err := client.Connect(ctx, r.target, "org1", "acct1", client.WithGateway(tg.wsURL()), client.WithToken(r.token)); err == nil {
			s.Close()
			t.Fatalf("session to %s opened, want refused", r.target)
		}
	}
	// The session's end is counted once its pumps have returned.
	var after map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		after = scrape(t, reg)
		if after[`mcpgw_proxy_sessions_active{transport="websocket"}`] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	// initialize, notifications/initialized and four tools/call from the
	// client; the upstream answers initialize and the three calls it got.
	want := map[string]float64{
		`mcpgw_proxy_sessions_total{transport="websocket"}`:                 1,
		`mcpgw_proxy_sessions_active{transport="websocket"}`:                0,
		`mcpgw_proxy_tool_calls_total{outcome="ok",route="up"}`:             2,
		`mcpgw_proxy_tool_calls_total{outcome="refused",route="up"}`:        1,
		`mcpgw_proxy_tool_calls_total{outcome="tool_error",route="up"}`:     1,
		`mcpgw_proxy_tool_calls_total{outcome="error",route="up"}`:          0,
		`mcpgw_proxy_tool_call_duration_seconds_count{route="up"}`:          3,
		`mcpgw_proxy_upstream_duration_seconds_count{route="up"}`:           4,
		`mcpgw_proxy_gateway_duration_seconds_count{route="up"}`:            4,
		`mcpgw_proxy_refusals_total{kind="rate_limited"}`:                   1,
		`mcpgw_proxy_refusals_total{kind="no_route"}`:                       1,
		`mcpgw_proxy_refusals_total{kind="token_malformed"}`:                1,
		`mcpgw_proxy_session_refusals_total{reason="no_route"}`:             1,
		`mcpgw_proxy_session_refusals_total{reason="unauthorized"}`:         1,
		`mcpgw_proxy_session_refusals_total{reason="upstream_error"}`:       0,
		`mcpgw_proxy_refusals_total{kind="upstream_error"}`:                 0,
		`mcpgw_upstream_errors_total{kind="connect",route="down"}`:          0,
		`mcpgw_upstream_errors_total{kind="connect",route="up"}`:            0,
		`mcpgw_limiter_refusals_total{limit="echo-2"}`:                      1,
		`mcpgw_proxy_messages_total{direction="client_to_server"}`:          6,
		`mcpgw_proxy_messages_total{direction="server_to_client"}`:          4,
		`mcpgw_token_verifications_total{cache="miss",outcome="ok"}`:        1,
		`mcpgw_token_verifications_total{cache="hit",outcome="ok"}`:         1,
		`mcpgw_token_verifications_total{cache="miss",outcome="refused"}`:   1,
		`mcpgw_audit_dropped_total{reason="queue_full"}`:                    0,
		`mcpgw_proxy_unrequested_responses_total{route="up"}`:               0,
		`mcpgw_upstream_errors_total{kind="unusable_message",route="up"}`:   0,
		`mcpgw_streamable_sessions_expired_total{reason="abandoned"}`:       0,
		`mcpgw_proxy_sessions_total{transport="streamable"}`:                0,
		`mcpgw_upstream_processes{route="up"}`:                              0,
		`mcpgw_proxy_refusals_total{kind="session_inflight"}`:               0,
		`mcpgw_upstream_errors_total{kind="cross_origin",route="down"}`:     0,
		`mcpgw_proxy_tool_calls_total{outcome="refused",route="down"}`:      0,
		`mcpgw_proxy_upstream_duration_seconds_count{route="down"}`:         0,
		`mcpgw_proxy_refusals_total{kind="token_expired"}`:                  0,
		`mcpgw_proxy_refusals_total{kind="bad_message"}`:                    0,
		`mcpgw_proxy_refusals_total{kind="overloaded"}`:                     0,
		`mcpgw_proxy_refusals_total{kind="not_ready"}`:                      0,
		`mcpgw_proxy_refusals_total{kind="origin"}`:                         0,
		`mcpgw_proxy_refusals_total{kind="bad_request"}`:                    0,
		`mcpgw_proxy_refusals_total{kind="rule_denied"}`:                    0,
		`mcpgw_proxy_refusals_total{kind="no_credential"}`:                  0,
		`mcpgw_proxy_refusals_total{kind="upstream_cross_origin"}`:          0,
		`mcpgw_proxy_refusals_total{kind="org_forbidden"}`:                  0,
		`mcpgw_proxy_refusals_total{kind="token_missing"}`:                  0,
		`mcpgw_proxy_refusals_total{kind="credential_broken"}`:              0,
		`mcpgw_proxy_refusals_total{kind="session_forbidden"}`:              0,
		`mcpgw_upstream_errors_total{kind="request",route="up"}`:            0,
		`mcpgw_upstream_errors_total{kind="closed",route="up"}`:             0,
		`mcpgw_upstream_errors_total{kind="bad_result",route="up"}`:         0,
		`mcpgw_proxy_refusals_total{kind="upstream_processes"}`:             0,
		`mcpgw_proxy_refusals_total{kind="bad_open_frame"}`:                 0,
		`mcpgw_proxy_refusals_total{kind="token_revoked"}`:                  0,
		`mcpgw_streamable_sessions_expired_total{reason="idle"}`:            0,
		`mcpgw_proxy_sessions_active{transport="streamable"}`:               0,
		`mcpgw_token_verifications_total{cache="hit",outcome="refused"}`:    0,
		`mcpgw_proxy_tool_calls_total{outcome="ok",route="down"}`:           0,
		`mcpgw_proxy_gateway_duration_seconds_count{route="down"}`:          0,
		`mcpgw_proxy_tool_call_duration_seconds_count{route="down"}`:        0,
		`mcpgw_proxy_unrequested_responses_total{route="down"}`:             0,
		`mcpgw_proxy_refusals_total{kind="token_signature"}`:                0,
		`mcpgw_proxy_refusals_total{kind="token_unknown_key"}`:              0,
		`mcpgw_proxy_refusals_total{kind="token_audience"}`:                 0,
		`mcpgw_proxy_refusals_total{kind="token_invalid"}`:                  0,
		`mcpgw_audit_dropped_total{reason="write_failed"}`:                  0,
		`mcpgw_proxy_sessions_total{transport="sse"}`:                       0,
		`mcpgw_upstream_errors_total{kind="unusable_message",route="down"}`: 0,
	}
	var diffs []string
	for name, d := range want {
		if got := after[name] - before[name]; got != d {
			diffs = append(diffs, fmt.Sprintf("%s changed by %v, want %v", name, got, d))
		}
	}
	for _, name := range []string{`mcpgw_upstream_bytes_total{direction="in"}`, `mcpgw_upstream_bytes_total{direction="out"}`} {
		if got := after[name] - before[name]; got <= 0 {
			diffs = append(diffs, fmt.Sprintf("%s changed by %v, want > 0", name, got))
		}
	}
	// The gateway's share of a call is a part of its whole.
	if g, u := after[`mcpgw_proxy_gateway_duration_seconds_sum{route="up"}`], after[`mcpgw_proxy_upstream_duration_seconds_sum{route="up"}`]; g <= 0 || u <= 0 {
		diffs = append(diffs, fmt.Sprintf("gateway time %vs, upstream time %vs, want both > 0", g, u))
	}
	slices.Sort(diffs)
	for _, d := range diffs {
		t.Error(d)
	}
}

// BenchmarkCallMetrics measures the metrics work of one answered
// tools/call: "labels" is how a call recorded its series before they were
// cached (a label lookup per series: two messages, the outcome, the
// duration); "cached" is what a call does now (the same series plus the
// gateway and upstream histograms, from the session's cached children).
func BenchmarkCallMetrics(b *testing.B) {
	m := newMetrics(prometheus.NewRegistry())
	route := "tickets"
	b.Run("labels", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			m.messagesTotal.WithLabelValues("client_to_server").Inc()
			m.messagesTotal.WithLabelValues("server_to_client").Inc()
			m.callsTotal.WithLabelValues(route, "ok").Inc()
			m.callSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}
	})
	b.Run("cached", func(b *testing.B) {
		rm := m.route(route)
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			sent := time.Now()
			m.msgClientToServer.Inc()
			arrived := time.Now()
			m.msgServerToClient.Inc()
			rm.outcome("ok").Inc()
			total := time.Since(start)
			rm.call.Observe(total.Seconds())
			waited := arrived.Sub(sent)
			rm.upstream.Observe(waited.Seconds())
			rm.gateway.Observe((total - waited).Seconds())
		}
	})
}
