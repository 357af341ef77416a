package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/bench"
)

// envRunMain makes the test binary act as the mcpgw binary, so that the
// bench started by a test can start `serve` and `bench-upstream` from it.
const envRunMain = "MCPGW_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runBenchCLI runs `mcpgw bench args...` with child processes started from
// the test binary and returns the JSON report.
func runBenchCLI(t *testing.T, args ...string) *bench.Report {
	t.Helper()
	t.Setenv(envRunMain, "1")
	var out bytes.Buffer
	app := &cli.App{Name: "mcpgw", Writer: &out, Commands: []*cli.Command{benchCommand(), benchUpstreamCommand()}, ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(append([]string{"mcpgw", "bench", "--json"}, args...)); err != nil {
		t.Fatalf("mcpgw bench %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bench --json printed no report: %v\n%s", err, out.String())
	}
	for _, res := range rep.Results {
		if res.Errors != 0 || res.Open.Errors != 0 {
			t.Errorf("%s %s: %d call errors, %d open errors: %v", res.Target, res.Protocol, res.Errors, res.Open.Errors, res.ErrorSample)
		}
	}
	return &rep
}

// TestBenchSmoke runs the CI smoke bench: every target, both protocols, an
// upstream and a gateway of its own. It asserts that every path works and
// reports what it measured, never how fast.
func TestBenchSmoke(t *testing.T) {
	rep := runBenchCLI(t, "--smoke")
	var got []string
	for _, res := range rep.Results {
		got = append(got, res.Target+"/"+res.Protocol)
		if res.Calls == 0 {
			t.Errorf("%s %s made no calls", res.Target, res.Protocol)
		}
		if res.Open.Sessions != 1 {
			t.Errorf("%s %s opened %d sessions, want 1", res.Target, res.Protocol, res.Open.Sessions)
		}
		if res.CPUPerCall.Upstream == nil || res.CPUPerCall.Loadgen == nil || res.CPUPerCall.Gateway == nil {
			t.Errorf("%s %s: CPU per call not measured for every process: %+v", res.Target, res.Protocol, res.CPUPerCall)
		}
		if res.Target != bench.TargetDirect && (res.AddedP50 == nil || res.RatioToDirect <= 0) {
			t.Errorf("%s %s: no comparison with direct", res.Target, res.Protocol)
		}
	}
	want := "direct/2025-11-25 ws/2025-11-25 quic/2025-11-25 unix/2025-11-25 http/2025-11-25 direct/2026-07-28 ws/2026-07-28 quic/2026-07-28 unix/2026-07-28 http/2026-07-28"
	if g := strings.Join(got, " "); g != want {
		t.Fatalf("results for %s, want %s", g, want)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"1 sessions × 2 workers", "calls/s", "×direct", "gateway µs/call", "open p50", "quic  2026-07-28"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
}

// TestBenchFixedRate checks that a fixed-rate run sends exactly rate ×
// duration calls.
func TestBenchFixedRate(t *testing.T) {
	rep := runBenchCLI(t, "--targets", "direct,unix", "--rate", "40", "--duration", "1s", "--sessions", "2", "--concurrency", "2")
	if got, want := rep.Mode, "rate"; got != want {
		t.Fatalf("mode %q, want %q", got, want)
	}
	for _, res := range rep.Results {
		if got, want := res.Calls, uint64(40); got != want {
			t.Errorf("%s: %d calls at 40/s for 1s, want %d", res.Target, got, want)
		}
	}
}

// TestBenchIdleSessions measures memory per idle session over two targets,
// each on a gateway of its own.
func TestBenchIdleSessions(t *testing.T) {
	rep := runBenchCLI(t, "--idle-sessions", "20", "--targets", "ws,quic")
	if got, want := len(rep.Results), 2; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, res := range rep.Results {
		if res.Idle == nil || res.Idle.Sessions != 20 {
			t.Fatalf("%s: idle stats %+v, want 20 sessions", res.Target, res.Idle)
		}
		if res.Idle.GatewayRSSPerSession == nil || res.Idle.GatewayGoroutinesPerSession == nil {
			t.Errorf("%s: gateway memory or goroutines not measured: %+v", res.Target, res.Idle)
		}
		if g := res.Idle.GatewayGoroutinesPerSession; g != nil && *g <= 0 {
			t.Errorf("%s: %v gateway goroutines per open session, want more than 0", res.Target, *g)
		}
	}
}
