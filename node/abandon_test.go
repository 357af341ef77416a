package node

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// stdioRoute is a route to the test upstream run as a stdio command: one
// process per session.
func stdioRoute(name string) storage.Route {
	return storage.Route{Name: name, Transport: storage.TransportStdio, Command: []string{os.Args[0], upstreamtest.StdioArg}}
}

// childPIDs returns the processes this test binary started that are still
// running (or not yet reaped), from Linux's /proc; ok is false where that
// is not available.
func childPIDs(t *testing.T) (pids []int, ok bool) {
	t.Helper()
	files, _ := filepath.Glob("/proc/self/task/*/children")
	if len(files) == 0 {
		return nil, false
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		for _, field := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids), true
}

// newPIDs returns the pids of after that are not in before.
func newPIDs(before, after []int) []int {
	var out []int
	for _, p := range after {
		if !slices.Contains(before, p) {
			out = append(out, p)
		}
	}
	return out
}

// TestStreamableAbandonedSessionReaped checks that a streamable HTTP session
// whose client went away without DELETE (no GET stream, no request) is
// closed after the abandon timeout, not the idle timeout, and that its stdio
// upstream process ends with it; while a session that keeps its GET stream
// open stays.
func TestStreamableAbandonedSessionReaped(t *testing.T) {
	const abandon = time.Second
	n := startNode(t, func(c *Config) { c.SessionAbandonTimeout = abandon })
	addRoute(t, n, stdioRoute("up"))
	endpoint := streamableEndpoint(n, "up")
	before, procOK := childPIDs(t)

	// The abandoned one: initialize, a call, and then nothing.
	gone := openStreamableSession(t, endpoint)
	resp := streamableRequest(t, http.MethodPost, endpoint, "application/json", gone,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bye"}}}`)
	if got := readPOSTReply(t, resp).text(t); got != "bye" {
		t.Fatalf("echo=%q, want %q", got, "bye")
	}
	var goneChild []int
	if procOK {
		after, _ := childPIDs(t)
		goneChild = newPIDs(before, after)
		if len(goneChild) != 1 {
			t.Fatalf("the first session started %d processes (%v), want 1", len(goneChild), goneChild)
		}
	}

	// The listening one: its client holds the GET stream open.
	kept := openStreamableSession(t, endpoint)
	getCtx, stopGET := context.WithCancel(context.Background())
	defer stopGET()
	req, err := http.NewRequestWithContext(getCtx, http.MethodGet, endpoint, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set(transport.HeaderSessionID, kept)
	get, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer get.Body.Close()
	if got, want := get.StatusCode, http.StatusOK; got != want {
		t.Fatalf("GET: HTTP %d, want %d", got, want)
	}
	if got, want := n.gw.UpstreamProcesses("up"), 2; got != want {
		t.Fatalf("UpstreamProcesses=%d, want %d", got, want)
	}

	start := time.Now()
	waitFor(t, "the abandoned session's upstream process to end", func() bool { return n.gw.UpstreamProcesses("up") == 1 })
	if took := time.Since(start); took < abandon/2 {
		t.Errorf("the session was closed %v after it was last used, before the abandon timeout %v", took, abandon)
	}
	resp = streamableRequest(t, http.MethodPost, endpoint, "application/json", gone, `{"jsonrpc":"2.0","id":3,"method":"ping"}`)
	if got, want := resp.StatusCode, http.StatusNotFound; got != want {
		t.Fatalf("POST to the abandoned session: HTTP %d, want %d", got, want)
	}
	checkMessage(t, decodeRefusal(t, resp).Message, "unknown or expired session", "send initialize")
	if procOK {
		after, _ := childPIDs(t)
		if slices.Contains(after, goneChild[0]) {
			t.Errorf("the abandoned session's process %d still runs", goneChild[0])
		}
	}

	// The janitor that closed the first session saw the second one past
	// the abandon timeout too: its open stream kept it.
	resp = streamableRequest(t, http.MethodPost, endpoint, "application/json", kept,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"here"}}}`)
	if got := readPOSTReply(t, resp).text(t); got != "here" {
		t.Fatalf("echo on the session holding a GET stream=%q, want %q", got, "here")
	}
	if got, want := n.gw.StreamableSessions(), 1; got != want {
		t.Errorf("StreamableSessions=%d, want %d", got, want)
	}
	if got, want := metricValue(t, n, "mcpgw_streamable_sessions_expired_total", "reason", "abandoned"), 1.0; got != want {
		t.Errorf("mcpgw_streamable_sessions_expired_total{reason=abandoned}=%v, want %v", got, want)
	}
	if got, want := metricValue(t, n, "mcpgw_streamable_sessions"), 1.0; got != want {
		t.Errorf("mcpgw_streamable_sessions=%v, want %v", got, want)
	}
	if got, want := metricValue(t, n, "mcpgw_upstream_processes", "route", "up"), 1.0; got != want {
		t.Errorf("mcpgw_upstream_processes{route=up}=%v, want %v", got, want)
	}
}

// TestStdioProcessCap checks that a stdio route runs at most
// MaxStdioPerRoute processes: the session past the cap is refused with
// CodeOverloaded, over WebSocket and streamable HTTP alike, and a slot
// comes back when a session ends.
func TestStdioProcessCap(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxStdioPerRoute = 2 })
	route := addRoute(t, n, stdioRoute("up"))
	ctx := testContext(t, 30*time.Second)
	var sessions []*mcp.ClientSession
	for range 2 {
		sess, err := client.Connect(ctx, route.URL, "org1", "acct1", viaGateway(n)...)
		if err != nil {
			t.Fatalf("Connect under the cap: %v", err)
		}
		defer sess.Close()
		sessions = append(sessions, sess)
	}
	if got, want := metricValue(t, n, "mcpgw_upstream_processes", "route", "up"), 2.0; got != want {
		t.Errorf("mcpgw_upstream_processes{route=up}=%v, want %v", got, want)
	}

	resp := streamableRequest(t, http.MethodPost, streamableEndpoint(n, "up"), "application/json", "", initializeBody)
	if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want {
		t.Fatalf("initialize past the cap: HTTP %d, want %d", got, want)
	}
	rerr := decodeRefusal(t, resp)
	if got, want := rerr.Code, int64(transport.CodeOverloaded); got != want {
		t.Errorf("code=%d, want %d", got, want)
	}
	checkMessage(t, rerr.Message, `route "up" has 2 upstream processes running on this node, its cap`, "end sessions you no longer use")
	if _, err := client.Connect(ctx, route.URL, "org1", "acct1", viaGateway(n)...); err == nil || !strings.Contains(err.Error(), "its cap") {
		t.Fatalf("Connect over WebSocket past the cap: %v, want the cap refusal", err)
	}
	if got, want := metricValue(t, n, "mcpgw_proxy_refusals_total", "kind", "upstream_processes"), 2.0; got != want {
		t.Errorf("mcpgw_proxy_refusals_total{kind=upstream_processes}=%v, want %v", got, want)
	}

	sessions[0].Close()
	waitFor(t, "the closed session's process to end", func() bool { return n.gw.UpstreamProcesses("up") == 1 })
	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", viaGateway(n)...)
	if err != nil {
		t.Fatalf("Connect after a session ended: %v", err)
	}
	defer sess.Close()
	if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil {
		t.Fatalf("CallTool: %v", err)
	}
}
