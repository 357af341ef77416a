package node

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// standaloneTries is how many sessions each downstream transport opens
// against a server that sends its requests on the standalone stream.
const standaloneTries = 200

// maxLost is how many lost calls end a transport's tries early.
const maxLost = 3

// TestStandaloneStreamRequestsReachClient checks that a request an upstream
// sends on its standalone GET stream right after the session starts reaches
// the client, over every downstream transport: the gateway forwards
// initialized, and so lets the client's first call through, only once the
// upstream has opened the stream (a server drops what it has nowhere to
// send, and the call that waits on it hangs).
func TestStandaloneStreamRequestsReachClient(t *testing.T) {
	up := &upstreamtest.StandaloneRequester{AnswerTimeout: 10 * time.Second}
	upURL := upstreamtest.StartHTTP(t, up) + "/mcp"
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "asker", URL: upURL})
	runStandaloneTries(t, n, route, up, "answered: ")
}

// runStandaloneTries opens standaloneTries sessions per downstream
// transport (and directly, as the control), each calling the tool named
// "ask" at once, and fails on any call whose result is not want followed
// by the elicited text. up, when set, counts the requests its server
// dropped.
func runStandaloneTries(t *testing.T, n *Node, route storage.Route, up *upstreamtest.StandaloneRequester, want string) {
	t.Helper()
	copts := func(i int) *mcp.ClientOptions {
		return &mcp.ClientOptions{ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"response": fmt.Sprint("r", i)}}, nil
		}}
	}
	const protocol = "2025-11-25" // the last version with a standalone stream and elicitation requests
	type way struct {
		name    string
		connect func(ctx context.Context, i int) (*mcp.ClientSession, error)
	}
	ways := []way{{"direct", func(ctx context.Context, i int) (*mcp.ClientSession, error) {
		return mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, copts(i)).
			Connect(ctx, &mcp.StreamableClientTransport{Endpoint: route.URL}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	}}, {"streamable", func(ctx context.Context, i int) (*mcp.ClientSession, error) {
		return mcp.NewClient(&mcp.Implementation{Name: "streamable", Version: "1"}, copts(i)).
			Connect(ctx, &mcp.StreamableClientTransport{Endpoint: streamableEndpoint(n, route.Name)}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	}}}
	for _, gw := range gatewayCases {
		opts := gw.opts(t, n)
		ways = append(ways, way{gw.name, func(ctx context.Context, i int) (*mcp.ClientSession, error) {
			return client.Connect(ctx, route.URL, "org1", "acct1", append(opts, client.WithProtocolVersion(protocol), client.WithClientOptions(copts(i)))...)
		}})
	}
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			var dropped0 int64
			if up != nil {
				dropped0 = up.Dropped.Load()
			}
			lost := 0
			for i := range standaloneTries {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				sess, err := w.connect(ctx, i)
				if err != nil {
					cancel()
					t.Fatalf("try %d: connect: %v", i, err)
				}
				res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "ask", Arguments: map[string]any{"text": "q"}})
				text := ""
				if err == nil && len(res.Content) == 1 {
					if tc, ok := res.Content[0].(*mcp.TextContent); ok {
						text = tc.Text
					}
				}
				if want := fmt.Sprint(want, "r", i); text != want {
					lost++
					t.Errorf("try %d: CallTool = %q, %v; want %q", i, text, err, want)
				}
				sess.Close()
				cancel()
				if lost == maxLost {
					break // each lost call waits for the server's timeout: enough shown
				}
			}
			if lost != 0 {
				t.Fatalf("lost %d of %d calls", lost, standaloneTries)
			}
			if up != nil {
				if dropped := up.Dropped.Load() - dropped0; dropped != 0 {
					t.Fatalf("the server dropped %d requests for want of a standalone stream", dropped)
				}
			}
		})
	}
}

// TestTypeScriptServerStandaloneRequests runs the tries of
// TestStandaloneStreamRequestsReachClient against the TypeScript SDK's own
// server (scripts/ts-interop/standalone-server.mjs), which sends a tool's
// requests on the standalone stream as the MCP conformance suite's reference
// server did. It needs node and the SDK that scripts/ts-interop.sh
// --install-only puts into <repo>/.cache/ts-interop (or the directory
// MCPGW_TS_INTEROP_DEPS names), and is skipped without them.
func TestTypeScriptServerStandaloneRequests(t *testing.T) {
	deps := os.Getenv("MCPGW_TS_INTEROP_DEPS")
	if deps == "" {
		deps = filepath.Join("..", ".cache", "ts-interop")
	}
	if _, err := os.Stat(filepath.Join(deps, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		t.Skip("the TypeScript SDK is not installed: run scripts/ts-interop.sh --install-only (or set MCPGW_TS_INTEROP_DEPS)")
	}
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node in PATH")
	}
	deps, err = filepath.Abs(deps)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nodeBin, filepath.Join("..", "scripts", "ts-interop", "standalone-server.mjs"))
	cmd.Env = append(os.Environ(), "TS_INTEROP_DEPS="+deps)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The server prints its URL once it listens; a server that dies first
	// ends the read.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("TypeScript server did not start: %v", err)
	}
	upURL, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		t.Fatalf("TypeScript server printed %q, want %q", line, "listening <url>")
	}
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "ts", URL: upURL})
	runStandaloneTries(t, n, route, nil, "answered: ")
}
