package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/bench"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/node"
)

// envRunMain makes the test binary act as the mcpgw binary, so that the
// bench started by a test can start `serve` and `bench-upstream` from it.
const envRunMain = "MCPGW_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if upstreamtest.RunStdioIfAsked(os.Args) {
		os.Exit(0)
	}
	if os.Getenv(envRunMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchApp runs `mcpgw bench args...` with child processes started from
// the test binary.
func benchApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Setenv(envRunMain, "1")
	var out bytes.Buffer
	app := &cli.App{Name: "mcpgw", Writer: &out, ErrWriter: &out, Commands: []*cli.Command{benchCommand(), benchUpstreamCommand()}, ExitErrHandler: func(*cli.Context, error) {}}
	err := app.Run(append([]string{"mcpgw", "bench"}, args...))
	return out.String(), err
}

// runBenchCLI runs `mcpgw bench --json args...`, checks that nothing
// failed and returns the report.
func runBenchCLI(t *testing.T, args ...string) *bench.Report {
	t.Helper()
	out, err := benchApp(t, append([]string{"--json"}, args...)...)
	if err != nil {
		t.Fatalf("mcpgw bench %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench --json printed no report: %v\n%s", err, out)
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
	for _, s := range []string{"1 sessions, 2 workers in total", "calls/s", "×direct", "gateway µs/call", "open p50", "quic  2026-07-28"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
}

// TestBenchFixedRate checks that a fixed-rate run sends exactly rate ×
// duration calls, and that a gateway the bench starts is reached with a
// token of its own whatever MCPGW_TOKEN holds.
func TestBenchFixedRate(t *testing.T) {
	t.Setenv("MCPGW_TOKEN", "a-token-of-another-gateway")
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
	if got, want := rep.OpenConcurrency, 16; got != want {
		t.Errorf("idle sessions opened %d at a time, want %d by default", got, want)
	}
	for _, res := range rep.Results {
		if res.Idle == nil || res.Idle.Sessions != 20 {
			t.Fatalf("%s: idle stats %+v, want 20 sessions", res.Target, res.Idle)
		}
		if res.Open.AddedP50Micros != nil {
			t.Errorf("%s: +open p50 %v without a direct result", res.Target, *res.Open.AddedP50Micros)
		}
		if res.Idle.GatewayRSSPerSession == nil || res.Idle.GatewayGoroutinesPerSession == nil {
			t.Errorf("%s: gateway memory or goroutines not measured: %+v", res.Target, res.Idle)
		}
		if g := res.Idle.GatewayGoroutinesPerSession; g != nil && *g <= 0 {
			t.Errorf("%s: %v gateway goroutines per open session, want more than 0", res.Target, *g)
		}
	}
}

// TestBenchProfiles checks that --profile-dir saves a CPU profile of a
// load run and a heap profile of an idle run of the gateway the bench
// starts, both gzipped pprof files.
func TestBenchProfiles(t *testing.T) {
	dir := t.TempDir()
	runBenchCLI(t, "--targets", "unix", "--duration", "3s", "--sessions", "1", "--concurrency", "1", "--profile-dir", dir)
	runBenchCLI(t, "--idle-sessions", "5", "--targets", "ws", "--profile-dir", dir)
	for _, name := range []string{"cpu-unix-2025-11-25.pb.gz", "heap-ws-2025-11-25.pb.gz"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("profile not saved: %v", err)
		}
		if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			t.Fatalf("%s is not gzipped (%d bytes)", name, len(data))
		}
	}
}

// TestBenchRunningGateway measures a gateway and an upstream the bench did
// not start, given by their addresses, with their CPU read through
// --gateway-pid and --upstream-pid (here both are this test process).
func TestBenchRunningGateway(t *testing.T) {
	up := httptest.NewServer(bench.EchoHandler())
	t.Cleanup(up.Close)
	var dataDir string
	n := startTestNode(t, func(c *node.Config) {
		c.QUICAddr = "127.0.0.1:0"
		dataDir = c.DataDir
	})
	pid := strconv.Itoa(os.Getpid())
	rep := runBenchCLI(t, "--targets", "direct,ws,quic,http", "--protocol", "2025-11-25,2026-07-28", "--sessions", "1", "--concurrency", "1", "--duration", "500ms",
		"--upstream", up.URL, "--upstream-pid", pid,
		"--gateway-admin", "http://"+n.AdminAddr(), "--admin-token", n.AdminToken(), "--gateway-http", n.HTTPAddr(), "--gateway-quic", n.QUICAddr(),
		"--ca-file", filepath.Join(node.DefaultClusterTLSDir(dataDir), "ca.crt"), "--gateway-pid", pid)
	if got, want := len(rep.Results), 8; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, res := range rep.Results {
		if res.Calls == 0 {
			t.Errorf("%s %s made no calls", res.Target, res.Protocol)
		}
		if res.CPUPerCall.Gateway == nil || res.CPUPerCall.Upstream == nil {
			t.Errorf("%s %s: CPU of the given processes not measured: %+v", res.Target, res.Protocol, res.CPUPerCall)
		}
	}
}

// TestBenchOtherTarget measures another proxy given by --target, here a
// reverse proxy on loopback in front of the echo upstream, against direct
// calls to that upstream, with the proxy's CPU read through --target-pid.
func TestBenchOtherTarget(t *testing.T) {
	up := httptest.NewServer(bench.EchoHandler())
	t.Cleanup(up.Close)
	u, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(u))
	t.Cleanup(proxy.Close)
	pid := strconv.Itoa(os.Getpid())
	rep := runBenchCLI(t, "--sessions", "1", "--concurrency", "1", "--duration", "500ms",
		"--upstream", up.URL, "--upstream-pid", pid, "--target", proxy.URL+bench.StatefulPath, "--target-pid", pid)
	var got []string
	for _, res := range rep.Results {
		got = append(got, res.Target)
		if res.Calls == 0 {
			t.Errorf("%s made no calls", res.Target)
		}
		if res.CPUPerCall.Gateway == nil {
			t.Errorf("%s: CPU of --target-pid not measured: %+v", res.Target, res.CPUPerCall)
		}
		if res.Target == bench.TargetOther && (res.AddedP50 == nil || res.RatioToDirect <= 0) {
			t.Errorf("%s: no comparison with direct", res.Target)
		}
	}
	if g, want := strings.Join(got, " "), "direct target"; g != want {
		t.Fatalf("results for %s, want %s", g, want)
	}
}

// TestBenchUpstreamStdio talks to `mcpgw bench-upstream --stdio`, the
// echo upstream for proxies that front stdio servers, with the go-sdk.
func TestBenchUpstreamStdio(t *testing.T) {
	cmd := exec.Command(os.Args[0], "bench-upstream", "--stdio")
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "over stdio"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Content) != 1 {
		t.Fatalf("echo returned %d contents, want 1", len(res.Content))
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); !ok || tc.Text != "over stdio" {
		t.Fatalf("echo returned %#v, want the text sent", res.Content[0])
	}
}

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown target", []string{"--targets", "ws,carrier-pigeon"}, `unknown target "carrier-pigeon"`},
		{"unknown protocol", []string{"--protocol", "2024-11-05"}, `--protocol "2024-11-05": use 2025-11-25 or 2026-07-28`},
		{"no sessions", []string{"--sessions", "0"}, "must be positive"},
		{"running gateway without upstream", []string{"--gateway-admin", "http://127.0.0.1:1"}, "needs --upstream"},
		{"running gateway without admin or token", []string{"--gateway-http", "127.0.0.1:1", "--upstream", "http://127.0.0.1:1"}, "needs --gateway-admin"},
		{"negative open concurrency", []string{"--open-concurrency", "-1"}, "--open-concurrency -1 must not be negative (0: 1 for load runs, 16 for --idle-sessions)"},
		{"negative credentials", []string{"--credentials", "-5"}, "--routes 0, --credentials -5 and --rules 0 must not be negative"},
		{"scale without a gateway target", []string{"--targets", "direct", "--routes", "10"},
			"--routes, --credentials and --rules grow the gateway's configuration, but --targets names no gateway target: add ws, quic, unix or http"},
		{"scale on a running gateway without its admin API", []string{"--gateway-http", "127.0.0.1:1", "--upstream", "http://127.0.0.1:1", "--token", "t", "--rules", "10"},
			"--routes, --credentials and --rules are created through the admin API: pass --gateway-admin (and --admin-token) of the running gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := benchApp(t, tc.args...)
			if err == nil {
				t.Fatalf("mcpgw bench %s succeeded:\n%s", strings.Join(tc.args, " "), out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestBenchScale runs load with extra routes, credentials and rules on the
// gateway the bench starts: every call must still succeed (the rules name
// route * and so govern the bench's route too), sessions open one at a
// time, and the report says at what scale it ran.
func TestBenchScale(t *testing.T) {
	rep := runBenchCLI(t, "--targets", "direct,ws", "--duration", "1s", "--sessions", "3", "--concurrency", "2",
		"--routes", "20", "--credentials", "50", "--rules", "20")
	sc := rep.Scale
	if got, want := [3]int{sc.Routes, sc.Credentials, sc.Rules}, [3]int{20, 50, 20}; got != want {
		t.Fatalf("report's scale %v, want %v", got, want)
	}
	if sc.RoutesSec <= 0 || sc.CredentialsSec <= 0 || sc.RulesSec <= 0 {
		t.Errorf("report lacks how long creating the scale took: %+v", sc)
	}
	if got, want := rep.OpenConcurrency, 1; got != want {
		t.Errorf("sessions opened %d at a time, want %d by default for load", got, want)
	}
	for _, res := range rep.Results {
		if res.Calls == 0 || res.Open.Sessions != 3 {
			t.Errorf("%s: %d calls over %d sessions, want calls over 3", res.Target, res.Calls, res.Open.Sessions)
		}
		if got := res.Open.AddedP50Micros != nil; got != (res.Target != bench.TargetDirect) {
			t.Errorf("%s: +open p50 given: %v, want it for gateway targets only", res.Target, got)
		}
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"gateway holds: 20 extra routes, 50 credentials, 20 rules; created in routes ", "sessions opened 1 at a time", "+open p50"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
}

// TestBenchScaleRunningGateway checks what --routes, --credentials and
// --rules leave on a running gateway given by --gateway-admin, read back
// through its admin API.
func TestBenchScaleRunningGateway(t *testing.T) {
	up := httptest.NewServer(bench.EchoHandler())
	t.Cleanup(up.Close)
	n := startTestNode(t)
	rep := runBenchCLI(t, "--targets", "direct,ws", "--protocol", "2025-11-25,2026-07-28", "--sessions", "1", "--concurrency", "1", "--duration", "300ms",
		"--upstream", up.URL, "--gateway-admin", "http://"+n.AdminAddr(), "--admin-token", n.AdminToken(), "--gateway-http", n.HTTPAddr(),
		"--routes", "4", "--credentials", "12", "--rules", "5")
	if got, want := len(rep.Results), 4; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	a := adminapi.NewClient("http://"+n.AdminAddr(), n.AdminToken(), nil)
	ctx := context.Background()

	var routes []adminapi.Route
	if err := a.Do(ctx, "GET", "/v1/routes", nil, &routes); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range routes {
		names = append(names, r.Name)
		if strings.HasPrefix(r.Name, "bench-extra-") && strings.HasPrefix(up.URL+bench.StatefulPath, r.URL) {
			t.Errorf("extra route %s at %s answers for the bench's target", r.Name, r.URL)
		}
	}
	slices.Sort(names)
	if got, want := strings.Join(names, " "), "bench bench-extra-0 bench-extra-1 bench-extra-2 bench-extra-3 bench-stateless"; got != want {
		t.Fatalf("routes %s, want %s", got, want)
	}

	var creds []adminapi.CredentialInfo
	if err := a.Do(ctx, "GET", "/v1/credentials", nil, &creds); err != nil {
		t.Fatal(err)
	}
	perRoute := map[string]int{}
	for _, c := range creds {
		if c.Org != "bench" || !strings.HasPrefix(c.Account, "acct-") {
			t.Errorf("credential for org %q, account %q, want org bench and accounts acct-<i>: the bench's own account must get none", c.Org, c.Account)
		}
		perRoute[c.Route]++
	}
	if got, want := len(creds), 12; got != want {
		t.Fatalf("%d credentials stored, want %d", got, want)
	}
	if got, want := len(perRoute), 6; got != want {
		t.Errorf("credentials on %d routes (%v), want all %d: the bench's and the extra ones", got, perRoute, want)
	}

	var rules []adminapi.Rule
	if err := a.Do(ctx, "GET", "/v1/rules", nil, &rules); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rules {
		ids = append(ids, r.ID+"="+r.Effect+":"+r.Org+":"+r.Route+":"+r.Tool)
	}
	slices.Sort(ids)
	want := "bench-allow-echo=allow:bench:*:echo bench-other-1=deny:*:*:other_1_* bench-other-2=allow:*:*:other_2_* bench-other-3=deny:*:*:other_3_* bench-other-4=allow:*:*:other_4_*"
	if got := strings.Join(ids, " "); got != want {
		t.Fatalf("rules %s, want %s", got, want)
	}
}
