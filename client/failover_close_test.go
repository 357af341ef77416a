package client

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/node"
)

// startNode starts a node that needs no service token, with one route to
// upstream, listening for WebSocket sessions and on a Unix socket.
func startNode(t *testing.T, upstream string) testNode {
	t.Helper()
	// A socket path must fit in 108 bytes, which t.TempDir may not.
	sockDir, err := os.MkdirTemp("", "mcpgw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "gw.sock")
	n := StartInsecureNode(t, upstream, func(c *node.Config) { c.UnixPath = sock })
	return testNode{n, sock}
}

// testNode is a running node and the path of its Unix socket.
type testNode struct {
	*node.Node
	sock string
}

// failoverGoroutines counts goroutines running failoverConn code.
func failoverGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*failoverConn)") {
			count++
		}
	}
	return count
}

// TestFailoverRacingClose closes a session while it is failing over: the
// dial to the next node completes only as Close runs. Close must wait for
// the failover, and the failover must close what it dialed, so no
// goroutine, gateway session or upstream session outlives the caller's
// session. A WebSocket closes itself when a read is cancelled, which hid
// the leak; a Unix socket session does not.
func TestFailoverRacingClose(t *testing.T) {
	tests := []struct {
		name string
		addr func(testNode) string
	}{
		{name: "websocket", addr: func(n testNode) string { return "ws://" + n.HTTPAddr() }},
		{name: "unix", addr: func(n testNode) string { return "unix://" + n.sock }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testFailoverRacingClose(t, tc.addr) })
	}
}

func testFailoverRacingClose(t *testing.T, addr func(testNode) string) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	a, b := startNode(t, url), startNode(t, url)
	tr, err := NewTransport(addr(a)+","+addr(b), url, "acme", "a1")
	if err != nil {
		t.Fatal(err)
	}

	// The first dial to b after arming completes only when Close cancels it
	// (or, should Close not wait, once Close has returned), as a dial whose
	// handshake finished just as the caller gave up.
	var armed atomic.Bool
	dialing := make(chan struct{})
	closeReturned := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(closeReturned) }) }
	t.Cleanup(release)
	// racedClosed is set when the connection the racing dial returned is
	// closed: Close returning before then means it did not wait for the
	// failover, or the failover leaked what it dialed.
	var racedClosed atomic.Bool
	dialB := tr.dialers[1]
	tr.dialers[1] = func(ctx context.Context) (mcp.Connection, error) {
		if !armed.CompareAndSwap(true, false) {
			return dialB(ctx)
		}
		close(dialing)
		select {
		case <-ctx.Done():
		case <-closeReturned:
		}
		conn, err := dialB(context.Background())
		if err != nil {
			return nil, err
		}
		return closeRecorder{conn, &racedClosed}, nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "failover-close-test", Version: "1"}, nil).Connect(ctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := a.Sessions(), 1; got != want {
		t.Fatalf("node a carries %d sessions, want %d", got, want)
	}

	armed.Store(true)
	a.Close()
	select {
	case <-dialing:
	case <-ctx.Done():
		t.Fatal("the session never tried to fail over to node b")
	}
	sess.Close()
	if !racedClosed.Load() {
		t.Fatal("Close returned before the failover closed the connection it dialed")
	}
	release()

	// A goroutine Close waited for has done its work but may not have
	// exited yet (wg.Done runs before the goroutine ends), so its absence
	// is polled, not asserted the instant Close returns.
	deadline := time.Now().Add(20 * time.Second)
	for failoverGoroutines() != 0 || b.Sessions() != 0 || up.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("20s after Close: %d failover goroutines still running, node b carries %d sessions and the upstream %d, want 0, 0 and 0",
				failoverGoroutines(), b.Sessions(), up.Sessions())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closeRecorder is a connection that records its Close.
type closeRecorder struct {
	mcp.Connection
	closed *atomic.Bool
}

func (c closeRecorder) Close() error {
	c.closed.Store(true)
	return c.Connection.Close()
}
