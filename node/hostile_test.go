package node

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/hostileupstream"
	"github.com/mcpgw/mcpgw/internal/logtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// hostileSecret is the credential the hostile tests store: distinctive
// enough that any of its encodings found in a caller's error is a leak.
const hostileSecret = "hostile-secret-7Qz9vXk2"

// leakedForms are the ways hostileSecret could reach a caller.
func leakedForms() []string {
	bearer := "Bearer " + hostileSecret
	return []string{
		hostileSecret,
		base64.StdEncoding.EncodeToString([]byte(bearer)),
		base64.StdEncoding.EncodeToString([]byte(hostileSecret)),
		url.QueryEscape(bearer),
		strings.ReplaceAll(bearer, " ", "%20"),
	}
}

func checkNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, f := range leakedForms() {
		if strings.Contains(s, f) {
			t.Fatalf("%s contains the credential (as %q): %s", what, f, s)
		}
	}
}

// hostileRoutes starts a node with routes to one hostile upstream over
// streamable HTTP ("hostile"), legacy SSE ("hostile-sse", same-origin
// endpoint), WebSocket ("hostile-ws") and stdio ("hostile-stdio"), each
// with hostileSecret stored for acme/alice.
func hostileRoutes(t *testing.T, mutate ...func(*Config)) (*Node, *hostileupstream.Server, map[string]storage.Route) {
	t.Helper()
	hs := hostileupstream.Start(t) // before the node, so it stops after it
	hs.SetSSEEndpoint("")
	n := startNode(t, mutate...)
	routes := map[string]storage.Route{
		"streamable": addRoute(t, n, storage.Route{Name: "hostile", URL: hs.URL + "/mcp", Credential: storage.CredentialRequired}),
		"sse":        addRoute(t, n, storage.Route{Name: "hostile-sse", URL: hs.URL + "/sse", Transport: storage.TransportSSE, Credential: storage.CredentialRequired}),
		"websocket": addRoute(t, n, storage.Route{Name: "hostile-ws", URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", Transport: storage.TransportWebSocket,
			Credential: storage.CredentialRequired}),
		"stdio": addRoute(t, n, storage.Route{Name: "hostile-stdio", Transport: storage.TransportStdio, Credential: storage.CredentialRequired,
			Command: []string{os.Args[0], hostileupstream.StdioArg}}),
	}
	putCredential(t, n, "acme", "alice", "hostile", "bearer", hostileSecret)
	putCredential(t, n, "acme", "alice", "hostile-sse", "bearer", hostileSecret)
	putCredential(t, n, "acme", "alice", "hostile-ws", "bearer", hostileSecret)
	putCredential(t, n, "acme", "alice", "hostile-stdio", "env", "HOSTILE_TOKEN="+hostileSecret)
	return n, hs, routes
}

// callError calls tool and returns the JSON-RPC error it must fail with.
func callError(t *testing.T, ctx context.Context, sess *mcp.ClientSession, tool string) *jsonrpc.Error {
	t.Helper()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "x"}})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("CallTool %s: result %v, error %v; want a JSON-RPC error", tool, res, err)
	}
	return werr
}

// TestHostileSSEEndpointOtherOrigin: a legacy SSE upstream whose endpoint
// event names another origin gets its session refused with an error naming
// the route, and nothing, least of all the credential, is sent there.
func TestHostileSSEEndpointOtherOrigin(t *testing.T) {
	n, hs, routes := hostileRoutes(t)
	route := routes["sse"]
	hostPort := strings.TrimPrefix(hs.URL, "http://")
	_, port, _ := strings.Cut(hostPort, ":")
	elsewhere := strings.TrimPrefix(hs.Elsewhere.URL, "http://")
	ctx := testContext(t, 20*time.Second)
	for _, tc := range []struct {
		name, endpoint string
	}{
		{"other port", hs.Elsewhere.URL + "/messages"},
		{"scheme-relative, other port", "//" + elsewhere + "/messages"},
		{"other host, same port", "http://localhost:" + port + "/messages"},
		{"other scheme, same host and port", "https://" + hostPort + "/messages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs.SetSSEEndpoint(tc.endpoint)
			posts := hs.Posts.Load()
			_, err := connect(t, ctx, n, route.URL, "acme", "alice")
			var re *transport.RefusalError
			if !errors.As(err, &re) || re.Status != http.StatusBadGateway || re.Code != transport.CodeUpstreamError {
				t.Fatalf("Connect: err = %v, want a 502 upstream error", err)
			}
			checkMessage(t, re.Message, `upstream of route "hostile-sse" named a message endpoint on another origin`, "only talks to the route's origin")
			if got := hs.Elsewhere.Requests.Load(); got != 0 {
				t.Fatalf("the other origin got %d requests (%d with Authorization), want 0", got, hs.Elsewhere.WithAuth.Load())
			}
			if got := hs.Posts.Load() - posts; got != 0 {
				t.Fatalf("the upstream got %d POSTs on another scheme or host name, want 0", got)
			}
		})
	}
	t.Run("same origin works", func(t *testing.T) {
		hs.SetSSEEndpoint("")
		sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		if got, want := callText(t, ctx, sess, hostileupstream.ToolWhoAmI, ""), "Bearer "+hostileSecret; got != want {
			t.Fatalf("whoami=%q, want %q", got, want)
		}
	})
}

// TestHostileRefusalBodiesNotEchoed: an upstream that echoes the injected
// credential in its 401/403 bodies (plain or JSON-RPC, raw or encoded)
// never gets it into the caller's error, and the session goes on.
func TestHostileRefusalBodiesNotEchoed(t *testing.T) {
	n, _, routes := hostileRoutes(t)
	ctx := testContext(t, 20*time.Second)
	for _, kind := range []string{"streamable", "sse"} {
		t.Run(kind, func(t *testing.T) {
			sess, err := connect(t, ctx, n, routes[kind].URL, "acme", "alice")
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			for _, tool := range []string{hostileupstream.ToolEcho401, hostileupstream.ToolEcho403, hostileupstream.ToolEchoRPC} {
				werr := callError(t, ctx, sess, tool)
				checkNoSecret(t, tool+" error", werr.Message+" "+string(werr.Data))
				if tool != hostileupstream.ToolEchoRPC {
					checkMessage(t, werr.Message, "40")
				}
			}
			if got, want := callText(t, ctx, sess, hostileupstream.ToolEcho, "still here"), "still here"; got != want {
				t.Fatalf("echo=%q, want %q", got, want)
			}
		})
	}
}

// TestHostileHandshakeRefusalNotEchoed: an upstream refusing the
// WebSocket handshake with a JSON-RPC error that echoes the credential
// gets the session refused without the credential in the caller's error.
func TestHostileHandshakeRefusalNotEchoed(t *testing.T) {
	hs := hostileupstream.Start(t)
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "refuses", URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws-refuse",
		Transport: storage.TransportWebSocket, Credential: storage.CredentialRequired})
	putCredential(t, n, "acme", "alice", "refuses", "bearer", hostileSecret)
	ctx := testContext(t, 20*time.Second)
	_, err := connect(t, ctx, n, route.URL, "acme", "alice")
	var re *transport.RefusalError
	if !errors.As(err, &re) || re.Code != transport.CodeUpstreamError {
		t.Fatalf("Connect: err = %v, want an upstream refusal", err)
	}
	checkMessage(t, re.Message, `upstream of route "refuses"`, "refused "+"[REDACTED]")
	checkNoSecret(t, "refusal", re.Message)
	if got := hs.LastAuth.Load(); got == nil || *got != "Bearer "+hostileSecret {
		t.Fatalf("upstream saw Authorization %v, want the stored credential", got)
	}
}

// heapPeak runs f and returns how far HeapInuse rose above where it was
// before, sampled while f runs. The collector runs often meanwhile, so that
// the peak measures what is held rather than garbage not yet collected.
func heapPeak(f func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// TestHostileHugeResponseFailsAlone: a 64 MiB answer, with or without a
// length, as JSON or as one event, on every upstream transport, fails its
// call with an error naming the route and the cap while the node buffers
// no more than the cap; the next call in the same session succeeds.
func TestHostileHugeResponseFailsAlone(t *testing.T) {
	n, _, routes := hostileRoutes(t)
	ctx := testContext(t, 60*time.Second)
	for _, tc := range []struct {
		kind, tool string
	}{
		{"streamable", hostileupstream.ToolHuge},
		{"streamable", hostileupstream.ToolHugeDeclared},
		{"streamable", hostileupstream.ToolHugeSSE},
		{"sse", hostileupstream.ToolHuge},
		{"websocket", hostileupstream.ToolHuge},
		{"stdio", hostileupstream.ToolHuge},
	} {
		t.Run(tc.kind+"/"+tc.tool, func(t *testing.T) {
			route := routes[tc.kind]
			sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			var werr *jsonrpc.Error
			grew := heapPeak(func() { werr = callError(t, ctx, sess, tc.tool) })
			t.Logf("heap grew by %.1f MiB during a %d MiB answer", float64(grew)/(1<<20), hostileupstream.HugeBytes>>20)
			if got, want := werr.Code, int64(transport.CodeUpstreamError); got != want {
				t.Errorf("error code=%d, want %d", got, want)
			}
			checkMessage(t, werr.Message, `upstream of route "`+route.Name+`"`, "larger than 4194304 bytes", "raise the message size limit")
			if limit := uint64(hostileupstream.HugeBytes / 2); grew > limit {
				t.Errorf("heap grew by %d bytes during the call, want under %d", grew, limit)
			}
			if got, want := callText(t, ctx, sess, hostileupstream.ToolEcho, "after"), "after"; got != want {
				t.Fatalf("echo after the huge answer=%q, want %q", got, want)
			}
		})
	}
}

// TestHostileUnusableResponsesFailAlone: an answer nested too deep, not
// UTF-8, or not JSON fails its call with an error naming the route and the
// problem, on every upstream transport, and the session goes on.
func TestHostileUnusableResponsesFailAlone(t *testing.T) {
	n, _, routes := hostileRoutes(t)
	ctx := testContext(t, 30*time.Second)
	for _, kind := range []string{"streamable", "sse", "websocket", "stdio"} {
		t.Run(kind, func(t *testing.T) {
			route := routes[kind]
			sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			for _, tc := range []struct{ tool, reason string }{
				{hostileupstream.ToolDeep, "nested deeper than 1000 levels"},
				{hostileupstream.ToolBadUTF8, "not valid UTF-8"},
				{hostileupstream.ToolMalformed, "not a JSON-RPC 2.0 object"},
			} {
				werr := callError(t, ctx, sess, tc.tool)
				if got, want := werr.Code, int64(transport.CodeUpstreamError); got != want {
					t.Errorf("%s: error code=%d, want %d", tc.tool, got, want)
				}
				checkMessage(t, werr.Message, `upstream of route "`+route.Name+`" answered with an unusable message`, tc.reason)
				if got, want := callText(t, ctx, sess, hostileupstream.ToolEcho, tc.tool), tc.tool; got != want {
					t.Fatalf("echo after %s=%q, want %q", tc.tool, got, want)
				}
			}
		})
	}
}

// TestHostileUnrequestedResponseDropped: a response for an id no call is
// waiting on never reaches the client and is counted; the real answer
// that follows it does.
func TestHostileUnrequestedResponseDropped(t *testing.T) {
	hs := hostileupstream.Start(t)
	n := startNode(t)
	routes := []storage.Route{
		addRoute(t, n, storage.Route{Name: "stray", URL: hs.URL + "/mcp", Credential: storage.CredentialNone}),
		addRoute(t, n, storage.Route{Name: "stray-ws", URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", Transport: storage.TransportWebSocket, Credential: storage.CredentialNone}),
		addRoute(t, n, storage.Route{Name: "stray-stdio", Transport: storage.TransportStdio, Credential: storage.CredentialNone,
			Command: []string{os.Args[0], hostileupstream.StdioArg}}),
	}
	for _, route := range routes {
		t.Run(route.Name, func(t *testing.T) {
			s := dialRaw(t, n, route.URL, nil)
			s.initialize()
			// call fails the test if the next reply is not for the call.
			r := s.call("tools/call", map[string]any{"name": hostileupstream.ToolUnrequested, "arguments": map[string]any{}})
			if got, want := r.text(t), "the real answer"; got != want {
				t.Fatalf("reply=%q, want %q", got, want)
			}
			if got, want := s.echo("next"), "next"; got != want {
				t.Fatalf("echo=%q, want %q", got, want)
			}
			if got := metricValue(t, n, "mcpgw_proxy_unrequested_responses_total", "route", route.Name); got != 1 {
				t.Fatalf("mcpgw_proxy_unrequested_responses_total{route=%q}=%v, want 1", route.Name, got)
			}
		})
	}
}

// TestHostileStdioStderrRedacted: a stdio upstream that prints its
// environment to stderr does not get the credential into the gateway's
// debug log.
func TestHostileStdioStderrRedacted(t *testing.T) {
	var logs logtest.Buffer
	n, _, routes := hostileRoutes(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := testContext(t, 20*time.Second)
	sess, err := connect(t, ctx, n, routes["stdio"].URL, "acme", "alice")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	callText(t, ctx, sess, hostileupstream.ToolEcho, "x")
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), "env HOSTILE_TOKEN=") {
		if time.Now().After(deadline) {
			t.Fatalf("the upstream's stderr never reached the debug log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the log with a deadline, not synchronising
	}
	checkNoSecret(t, "gateway log", logs.String())
	checkMessage(t, logs.String(), "env HOSTILE_TOKEN=[REDACTED]")
}
