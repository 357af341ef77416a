package main

import (
	"context"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/node"
)

// TestTopOnce: after a known number of calls, `mcpgw top --once` prints
// the route with exactly that many calls and errors, the node as leader
// and the session counts, as plain text with no escape codes.
func TestTopOnce(t *testing.T) {
	n := startTestNode(t, func(c *node.Config) { c.InsecureDev = true })
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	up := upstreamtest.StartHTTP(t, upstreamtest.New().StreamableHandler()) + "/mcp"
	if _, stderr, code := runMain(t, append([]string{"route", "add", "tickets", up}, admin...)...); code != 0 {
		t.Fatalf("route add: exit %d\n%s", code, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, up, "acme", "alice", client.WithGateway("ws://"+n.HTTPAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for range 7 {
		if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "fail", Arguments: map[string]any{"text": "x"}}); err != nil || !res.IsError {
		t.Fatalf("fail: %v %+v", err, res)
	}

	stdout, stderr, code := runMain(t, "top", "--once", "--interval", "50ms", "--admin", n.AdminAddr())
	t.Logf("top --once:\n%s", stdout)
	if code != 0 {
		t.Fatalf("top --once: exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "\x1b") {
		t.Errorf("top wrote escape codes to a pipe:\n%q", stdout)
	}
	// ROUTE CALLS CALLS/S ERRORS ERR/S REFUSED P50 ...
	if !regexp.MustCompile(`(?m)^tickets +8 +[0-9.]+ +1 +[0-9.]+ +0 +\S+`).MatchString(stdout) {
		t.Errorf("top shows no line for route tickets with 8 calls, 1 error and none refused:\n%s", stdout)
	}
	for _, want := range []string{n.AdminAddr() + "  ", "Leader", "leader: http://" + n.AdminAddr(), "sessions: websocket 1  streamable 0"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("top output lacks %q:\n%s", want, stdout)
		}
	}

	n.Close()
	stdout, _, code = runMain(t, "top", "--once", "--interval", "10ms", "--admin", n.AdminAddr())
	if code != 0 || !strings.Contains(stdout, "unreachable") || !strings.Contains(stdout, "0/1 nodes answering") {
		t.Errorf("top of a stopped node: exit %d, want 0 with the node shown unreachable:\n%s", code, stdout)
	}
}

// TestHistQuantile checks the quantile estimate against what Prometheus'
// histogram_quantile gives for the same buckets.
func TestHistQuantile(t *testing.T) {
	h := &hist{bounds: []float64{0.1, 0.2, 0.4, math.Inf(1)}, counts: []float64{10, 30, 40, 40}, total: 40}
	tests := []struct {
		q, want float64
	}{
		{0.25, 0.1},  // rank 10: the top of the first bucket
		{0.5, 0.15},  // rank 20: halfway through the second
		{0.875, 0.3}, // rank 35: halfway through the third
		{1, 0.4},
	}
	for _, tt := range tests {
		if got := h.quantile(tt.q); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := (&hist{}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("quantile of an empty histogram = %v, want NaN", got)
	}
	d := h.minus(&hist{bounds: h.bounds, counts: []float64{10, 10, 10, 10}, total: 10})
	if got, want := d.quantile(0.5), 0.175; math.Abs(got-want) > 1e-9 {
		t.Errorf("quantile(0.5) of the difference = %v, want %v", got, want)
	}
}
