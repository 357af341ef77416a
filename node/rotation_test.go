package node

//lint:file-ignore SA1019 sampling is deprecated from 2026-07-28 on, but sessions of older versions still use it

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// tokenUpstream is a WebSocket MCP server that accepts only the bearer
// token it is told is current (the old one is refused after a rotation,
// as a real server revoking it would) and records, in order, which token
// each connection, initialize and end of connection came with.
type tokenUpstream struct {
	current  atomic.Pointer[string]
	next     atomic.Pointer[string]   // accepted too while a rotation is under way
	versions atomic.Pointer[[]string] // protocol versions the next connections' servers offer; nil: the SDK's
	held     chan string              // the token of each hold call that started
	release  chan struct{}            // closed to let hold calls return

	mu     sync.Mutex
	events []string                // "conn <token>", "init <token>", "hold-done <token>", "closed <token>", "refused <token>"; guarded by mu
	inits  []*mcp.InitializeParams // every initialize received, in order; guarded by mu
}

func newTokenUpstream(token string) *tokenUpstream {
	u := &tokenUpstream{held: make(chan string, 16), release: make(chan struct{})}
	u.current.Store(&token)
	return u
}

func (u *tokenUpstream) event(e string) {
	u.mu.Lock()
	u.events = append(u.events, e)
	u.mu.Unlock()
}

// seen returns the events so far.
func (u *tokenUpstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.events)
}

func (u *tokenUpstream) initParams() []*mcp.InitializeParams {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.inits)
}

func (u *tokenUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if next := u.next.Load(); token != *u.current.Load() && (next == nil || token != *next) {
		u.event("refused " + token)
		http.Error(w, "this token is not (or no longer) valid", http.StatusUnauthorized)
		return
	}
	u.event("conn " + token)
	var opts mcp.ServerOptions
	if v := u.versions.Load(); v != nil {
		opts.SupportedProtocolVersions = *v
	}
	opts.SubscribeHandler = func(ctx context.Context, req *mcp.SubscribeRequest) error {
		u.event("subscribe " + token + " " + req.Params.URI)
		return nil
	}
	opts.UnsubscribeHandler = func(context.Context, *mcp.UnsubscribeRequest) error { return nil }
	srv := mcp.NewServer(&mcp.Implementation{Name: "tokenupstream", Version: "1"}, &opts)
	srv.AddResource(&mcp.Resource{URI: "test://doc", Name: "doc"}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: token}}}, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "ask", Description: "asks the client to sample, and answers what it said"}, func(ctx context.Context, req *mcp.CallToolRequest, _ upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}})
		if err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "asked on " + token + ": " + res.Content.(*mcp.TextContent).Text}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "touch", Description: "announces test://doc updated"}, func(ctx context.Context, req *mcp.CallToolRequest, _ upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "touched"}}}, nil, srv.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: "test://doc"})
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "add_tool", Description: "adds a tool, so the server announces tools/list_changed"}, func(ctx context.Context, req *mcp.CallToolRequest, a upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
		mcp.AddTool(srv, &mcp.Tool{Name: a.Text}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
		return &mcp.CallToolResult{}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "token", Description: "returns the token this connection was opened with"}, func(ctx context.Context, req *mcp.CallToolRequest, _ upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: token}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "hold", Description: "waits until released"}, func(ctx context.Context, req *mcp.CallToolRequest, _ upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
		u.held <- token
		select {
		case <-u.release:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		u.event("hold-done " + token)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "held " + token}}}, nil, nil
	})
	srv.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "initialize" {
				u.mu.Lock()
				u.events = append(u.events, "init "+token)
				u.inits = append(u.inits, req.GetParams().(*mcp.InitializeParams))
				u.mu.Unlock()
			}
			return next(ctx, method, req)
		}
	})
	upstreamtest.WebSocketHandler(srv).ServeHTTP(w, r)
	u.event("closed " + token)
}

// rotate rotates the credential as an operator does: the upstream issues
// token, it is stored through the admin API (`mcpgw vault put`), and the
// upstream then stops accepting the old one.
func (u *tokenUpstream) rotate(t *testing.T, n *Node, token string) {
	t.Helper()
	u.next.Store(&token)
	putCredential(t, n, "acme", "alice", "ws", "bearer", token)
	u.current.Store(&token)
	u.next.Store(nil)
}

// startTokenRoute starts a tokenUpstream accepting tok-A, a node with a
// websocket route "ws" to it that requires a credential, and alice's
// credential tok-A.
func startTokenRoute(t *testing.T, mutate ...func(*Config)) (*Node, *tokenUpstream, storage.Route) {
	t.Helper()
	up := newTokenUpstream("tok-A")
	t.Cleanup(func() {
		select {
		case <-up.release:
		default:
			close(up.release)
		}
	})
	url := "ws" + strings.TrimPrefix(upstreamtest.StartHTTP(t, up), "http") + "/mcp" // before the node, so it stops after it
	n := startNode(t, mutate...)
	route := addRoute(t, n, storage.Route{Name: "ws", URL: url, Transport: storage.TransportWebSocket, Credential: storage.CredentialRequired})
	putCredential(t, n, "acme", "alice", "ws", "bearer", "tok-A")
	return n, up, route
}

// callErr calls a tool that must fail with a JSON-RPC error and returns it.
func callErr(t *testing.T, ctx context.Context, sess *mcp.ClientSession, tool string) *jsonrpc.Error {
	t.Helper()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": ""}})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("CallTool %s = %v, %v; want a JSON-RPC error", tool, res, err)
	}
	return werr
}

// TestRotationWebSocketUpstream: a credential replaced while a session is
// open reaches its WebSocket upstream at the next call: the gateway opens
// exactly one new connection with the new token and replays the client's
// initialize on it (the same protocol version and capabilities), the
// old connection is closed, and the re-establishment is logged in the audit
// log and the metrics without the credential. A 2026-07-28 session, which
// has no initialize, is re-established without one.
func TestRotationWebSocketUpstream(t *testing.T) {
	for _, tc := range []struct {
		name, version string
		inits         int // initialize requests the upstream sees over both connections
	}{
		{"2025-11-25", "2025-11-25", 2},
		{"latest", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, up, route := startTokenRoute(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var opts []client.Option
			if tc.version != "" {
				opts = append(opts, client.WithProtocolVersion(tc.version))
			}
			sess, err := connect(t, ctx, n, route.URL, "acme", "alice", opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := callText(t, ctx, sess, "token", ""), "tok-A"; got != want {
				t.Fatalf("before the rotation the upstream connection used %q, want %q", got, want)
			}
			up.rotate(t, n, "tok-B")
			if got, want := callText(t, ctx, sess, "token", ""), "tok-B"; got != want {
				t.Fatalf("after the rotation the upstream connection used %q, want %q", got, want)
			}
			if got, want := callText(t, ctx, sess, "token", ""), "tok-B"; got != want {
				t.Fatalf("second call after the rotation: %q, want %q", got, want)
			}
			waitFor(t, "the old upstream connection to close", func() bool { return slices.Contains(up.seen(), "closed tok-A") })
			var conns, inits []string
			for _, e := range up.seen() {
				switch {
				case strings.HasPrefix(e, "conn "):
					conns = append(conns, e)
				case strings.HasPrefix(e, "init "):
					inits = append(inits, e)
				case strings.HasPrefix(e, "refused "):
					t.Errorf("upstream refused a connection: %s", e)
				}
			}
			if want := []string{"conn tok-A", "conn tok-B"}; !slices.Equal(conns, want) {
				t.Errorf("upstream connections = %q, want %q", conns, want)
			}
			if len(inits) != tc.inits {
				t.Errorf("upstream initialize requests = %q, want %d", inits, tc.inits)
			}
			if ps := up.initParams(); len(ps) == 2 {
				first, _ := json.Marshal(struct {
					V string
					C any
				}{ps[0].ProtocolVersion, ps[0].Capabilities})
				replayed, _ := json.Marshal(struct {
					V string
					C any
				}{ps[1].ProtocolVersion, ps[1].Capabilities})
				if string(first) != string(replayed) || ps[0].ProtocolVersion != tc.version {
					t.Errorf("replayed initialize %s, want the client's %s (version %s)", replayed, first, tc.version)
				}
			}
			if got := metricValue(t, n, "mcpgw_proxy_upstream_reestablished_total", "route", "ws", "reason", "credential_rotated", "outcome", "ok"); got != 1 {
				t.Errorf("mcpgw_proxy_upstream_reestablished_total{reason=credential_rotated,outcome=ok} = %v, want 1", got)
			}
			recs, body := auditRecords(t, n, "kind=upstream_reestablished", func(r storage.AuditRecord) bool { return r.Kind == storage.AuditUpstreamReestablished })
			if len(recs) != 1 || recs[0].Reason != "credential_rotated" || recs[0].Outcome != storage.AuditOK || recs[0].Org != "acme" ||
				recs[0].Account != "alice" || recs[0].Route != "ws" || recs[0].SessionID == "" || recs[0].CredentialKeyID == "" {
				t.Errorf("audit records of the re-establishment: %s, want one credential_rotated ok record of alice's session naming the key id", body)
			}
			if strings.Contains(string(body), "tok-") {
				t.Errorf("audit record carries the credential: %s", body)
			}
		})
	}
}

// TestRotationDrainsCallsInFlight: a call in flight on the old connection
// when the credential changes finishes there before the new connection is
// opened; one that outlasts the drain timeout fails with the documented
// retryable error while the call that waited goes on over the new
// connection.
func TestRotationDrainsCallsInFlight(t *testing.T) {
	n, up, route := startTokenRoute(t, func(c *Config) { c.RotationDrainTimeout = 500 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"))
	if err != nil {
		t.Fatal(err)
	}

	// Outlasting the drain: the hold call never returns on its own.
	type result struct {
		text string
		err  error
	}
	held := make(chan result, 1)
	go func() {
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "hold", Arguments: map[string]any{"text": ""}})
		if err != nil {
			held <- result{err: err}
			return
		}
		held <- result{text: res.Content[0].(*mcp.TextContent).Text}
	}()
	if got := <-up.held; got != "tok-A" {
		t.Fatalf("hold started on %q, want tok-A", got)
	}
	up.rotate(t, n, "tok-B")
	if got, want := callText(t, ctx, sess, "token", ""), "tok-B"; got != want {
		t.Fatalf("call after the rotation: %q, want %q", got, want)
	}
	r := <-held
	var werr *jsonrpc.Error
	if !errors.As(r.err, &werr) || werr.Code != transport.CodeUpstreamError ||
		!strings.Contains(werr.Message, "re-established on a rotated credential before this call was answered") || !strings.Contains(werr.Message, "retry it if it is safe to repeat") {
		t.Fatalf("call in flight past the drain timeout: %+v, want the retryable re-establishment error", r)
	}

	// Finishing within the drain: it is answered on the old connection,
	// which closes only then.
	go func() {
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "hold", Arguments: map[string]any{"text": ""}})
		if err != nil {
			held <- result{err: err}
			return
		}
		held <- result{text: res.Content[0].(*mcp.TextContent).Text}
	}()
	if got := <-up.held; got != "tok-B" {
		t.Fatalf("hold started on %q, want tok-B", got)
	}
	up.rotate(t, n, "tok-C")
	next := make(chan result, 1)
	go func() {
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "token", Arguments: map[string]any{"text": ""}})
		if err != nil {
			next <- result{err: err}
			return
		}
		next <- result{text: res.Content[0].(*mcp.TextContent).Text}
	}()
	close(up.release)
	if r := <-held; r.err != nil || r.text != "held tok-B" {
		t.Fatalf("call in flight within the drain: %+v, want held tok-B", r)
	}
	if r := <-next; r.err != nil || r.text != "tok-C" {
		t.Fatalf("call after the second rotation: %+v, want tok-C", r)
	}
	ev := up.seen()
	if i, j := slices.Index(ev, "hold-done tok-B"), slices.Index(ev, "conn tok-C"); i < 0 || j < i {
		t.Fatalf("upstream events %q: the tok-C connection opened before the call on tok-B finished", ev)
	}
}

// TestRotationRacingCalls: calls racing rotations each get an answer, the
// upstream's or the documented retryable error; none hangs or is lost, and
// the session ends up on the last credential.
func TestRotationRacingCalls(t *testing.T) {
	n, up, route := startTokenRoute(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"))
	if err != nil {
		t.Fatal(err)
	}
	answered, retryable := raceRotations(t, ctx, sess, 6, 20, &mcp.CallToolParams{Name: "token", Arguments: map[string]any{"text": ""}}, func() {
		up.rotate(t, n, "tok-B")
		up.rotate(t, n, "tok-C")
	})
	if got, want := callText(t, ctx, sess, "token", ""), "tok-C"; got != want {
		t.Fatalf("after the rotations: %q, want %q", got, want)
	}
	conns := 0
	for _, e := range up.seen() {
		if strings.HasPrefix(e, "refused ") {
			t.Errorf("the upstream refused a connection: %s", e)
		}
		if strings.HasPrefix(e, "conn ") {
			conns++
		}
	}
	// One connection per credential at most: a rotation that found the
	// next one already stored goes straight to it.
	if conns < 2 || conns > 3 {
		t.Errorf("upstream saw %d connections, want 2 or 3: %q", conns, up.seen())
	}
	t.Logf("%d calls answered by the upstream, %d with the retryable error; %d upstream connections", answered, retryable, conns)
}

// TestRotationCredentialRemoved: removing the credential of a route that
// requires one closes the open WebSocket upstream connection and fails the
// next calls with the no-credential refusal; storing one again brings the
// session back on it.
func TestRotationCredentialRemoved(t *testing.T) {
	n, up, route := startTokenRoute(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := callText(t, ctx, sess, "token", ""), "tok-A"; got != want {
		t.Fatalf("before: %q, want %q", got, want)
	}
	if resp := adminDo(t, n, http.MethodDelete, "/v1/credentials?org=acme&account=alice&route=ws", nil); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete credential: HTTP %d", resp.StatusCode)
	}
	for range 2 {
		werr := callErr(t, ctx, sess, "token")
		if werr.Code != transport.CodeNoCredential || !strings.Contains(werr.Message, "mcpgw vault put") {
			t.Fatalf("call after the credential was removed: %v, want the no-credential refusal", werr)
		}
	}
	waitFor(t, "the upstream connection to close", func() bool { return slices.Contains(up.seen(), "closed tok-A") })
	up.rotate(t, n, "tok-D")
	if got, want := callText(t, ctx, sess, "token", ""), "tok-D"; got != want {
		t.Fatalf("after a credential was stored again: %q, want %q", got, want)
	}
	if got := metricValue(t, n, "mcpgw_proxy_upstream_reestablished_total", "route", "ws", "reason", "credential_removed", "outcome", "ok"); got != 1 {
		t.Errorf("re-establishments for credential_removed = %v, want 1", got)
	}
}

// TestRotationProtocolVersionChanged: an upstream that, re-established,
// agrees on another protocol version than the session's ends the session
// with an error saying so, instead of going on in a version the client did
// not agree to.
func TestRotationProtocolVersionChanged(t *testing.T) {
	n, up, route := startTokenRoute(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"))
	if err != nil {
		t.Fatal(err)
	}
	callText(t, ctx, sess, "token", "")
	up.versions.Store(&[]string{"2025-06-18"})
	up.rotate(t, n, "tok-B")
	werr := callErr(t, ctx, sess, "token")
	if werr.Code != transport.CodeUpstreamError || !strings.Contains(werr.Message, `now speaks protocol version "2025-06-18" instead of "2025-11-25"`) || !strings.Contains(werr.Message, "open a new session") {
		t.Fatalf("call after the upstream changed version: %v, want the version-change error", werr)
	}
	if err := sess.Wait(); err == nil && ctx.Err() != nil {
		t.Fatal("session did not end")
	}
}

// TestRotationStdioUpstream: a credential replaced while a session is open
// reaches its stdio upstream at the next call: the old process gets the
// graceful shutdown of a session close, one new process starts with the new
// environment and is initialised by the gateway, and a call in flight
// finishes on the old process first.
func TestRotationStdioUpstream(t *testing.T) {
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "files", Transport: storage.TransportStdio, Credential: storage.CredentialRequired,
		Command: []string{os.Args[0], upstreamtest.StdioIntrospectArg}})
	putCredential(t, n, "acme", "alice", "files", "env", "FILES_TOKEN=tok-A\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, version := range []string{"2025-11-25", ""} {
		progress := make(chan struct{}, 8)
		opts := []client.Option{client.WithClientOptions(&mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			select {
			case progress <- struct{}{}:
			default:
			}
		}})}
		if version != "" {
			opts = append(opts, client.WithProtocolVersion(version))
		}
		sess, err := connect(t, ctx, n, route.URL, "acme", "alice", opts...)
		if err != nil {
			t.Fatal(err)
		}
		before := callText(t, ctx, sess, "getenv", "FILES_TOKEN")
		pid := callText(t, ctx, sess, "pid", "")
		// A call in flight: slow reports progress and answers after 2s.
		slow := make(chan error, 1)
		go func() {
			params := &mcp.CallToolParams{Name: "slow"}
			params.SetProgressToken("slow-1")
			res, err := sess.CallTool(ctx, params)
			if err == nil && (res.IsError || res.Content[0].(*mcp.TextContent).Text != "not cancelled") {
				err = fmt.Errorf("slow answered %v", res.Content)
			}
			slow <- err
		}()
		<-progress // slow runs on the old process
		next := "tok-B"
		if before == "tok-B" {
			next = "tok-C"
		}
		putCredential(t, n, "acme", "alice", "files", "env", "FILES_TOKEN="+next+"\n")
		if got := callText(t, ctx, sess, "getenv", "FILES_TOKEN"); got != next {
			t.Fatalf("%s: after the rotation the process has FILES_TOKEN=%q, want %q", version, got, next)
		}
		if err := <-slow; err != nil {
			t.Fatalf("%s: call in flight during the rotation: %v", version, err)
		}
		if got := callText(t, ctx, sess, "pid", ""); got == pid {
			t.Fatalf("%s: still process %s after the rotation", version, pid)
		}
		if got, want := callText(t, ctx, sess, "initializes", ""), map[string]string{"2025-11-25": "1", "": "0"}[version]; got != want {
			t.Fatalf("%s: the new process saw %s initialize requests, want %s", version, got, want)
		}
		waitFor(t, "one process per session", func() bool { return n.gw.UpstreamProcesses("files") == 1 })
		sess.Close()
		waitFor(t, "no process", func() bool { return n.gw.UpstreamProcesses("files") == 0 })
	}
}

// TestCredentialRemovedLiveHTTPSession: removing the credential of a route
// that requires one refuses every later request of an open streamable
// HTTP session, not only the first: none goes upstream without it.
func TestCredentialRemovedLiveHTTPSession(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp" // before the node, so it stops after it
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "gh", URL: url, Credential: storage.CredentialRequired})
	putCredential(t, n, "acme", "alice", "gh", "bearer", "token-one")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := callText(t, ctx, sess, "whoami", ""), "Bearer token-one"; got != want {
		t.Fatalf("before the removal: %q, want %q", got, want)
	}
	if resp := adminDo(t, n, http.MethodDelete, "/v1/credentials?org=acme&account=alice&route=gh", nil); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete credential: HTTP %d", resp.StatusCode)
	}
	for i := range 3 {
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{"text": ""}})
		if err == nil {
			t.Fatalf("call %d after the removal reached the upstream, which saw Authorization %q", i+1, res.Content[0].(*mcp.TextContent).Text)
		}
		if !strings.Contains(err.Error(), "mcpgw vault put") {
			t.Fatalf("call %d after the removal: %v, want the no-credential refusal", i+1, err)
		}
	}
	// Stored again, it applies from the next request (and lets the session
	// end upstream, whose DELETE needs it too).
	putCredential(t, n, "acme", "alice", "gh", "bearer", "token-two")
	if got, want := callText(t, ctx, sess, "whoami", ""), "Bearer token-two"; got != want {
		t.Fatalf("after a credential was stored again: %q, want %q", got, want)
	}
}

// TestRotationKeepsSubscriptions: what the client subscribed to survives
// the re-establishment: a 2025-11-25 session's resources/subscribe is made
// again on the new connection, and a 2026-07-28 session's standing
// subscriptions/listen request moves to it, so notifications the new
// connection's server sends still arrive.
func TestRotationKeepsSubscriptions(t *testing.T) {
	for _, version := range []string{"2025-11-25", ""} {
		t.Run("version="+version, func(t *testing.T) {
			n, up, route := startTokenRoute(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			updated := make(chan string, 16)
			listChanged := make(chan struct{}, 16)
			opts := []client.Option{client.WithClientOptions(&mcp.ClientOptions{
				ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) { updated <- req.Params.URI },
				ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { listChanged <- struct{}{} },
			})}
			if version != "" {
				opts = append(opts, client.WithProtocolVersion(version))
			}
			sess, err := connect(t, ctx, n, route.URL, "acme", "alice", opts...)
			if err != nil {
				t.Fatal(err)
			}
			if version != "" {
				if err := sess.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://doc"}); err != nil {
					t.Fatalf("Subscribe: %v", err)
				}
			}
			check := func(when string) {
				t.Helper()
				if version != "" {
					callText(t, ctx, sess, "touch", "")
					select {
					case uri := <-updated:
						if uri != "test://doc" {
							t.Fatalf("%s: update for %q", when, uri)
						}
					case <-ctx.Done():
						t.Fatalf("%s: no notifications/resources/updated", when)
					}
					return
				}
				if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "add_tool", Arguments: map[string]any{"text": "t-" + when}}); err != nil {
					t.Fatalf("%s: add_tool: %v", when, err)
				}
				select {
				case <-listChanged:
				case <-ctx.Done():
					t.Fatalf("%s: no notifications/tools/list_changed", when)
				}
			}
			check("before")
			up.rotate(t, n, "tok-B")
			if got, want := callText(t, ctx, sess, "token", ""), "tok-B"; got != want {
				t.Fatalf("after the rotation: %q, want %q", got, want)
			}
			check("after")
			if version != "" {
				if ev := up.seen(); !slices.Contains(ev, "subscribe tok-B test://doc") {
					t.Fatalf("upstream events %q: the subscription was not made again on the new connection", ev)
				}
			}
		})
	}
}

// TestRotationStdioRacingCalls: calls racing rotations of a stdio route's
// credential each get an answer, from a process with one of the
// credentials or the documented retryable error, and the session ends up
// on a single process with the last one.
func TestRotationStdioRacingCalls(t *testing.T) {
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "files", Transport: storage.TransportStdio, Credential: storage.CredentialRequired,
		Command: []string{os.Args[0], upstreamtest.StdioArg}})
	putCredential(t, n, "acme", "alice", "files", "env", "FILES_TOKEN=tok-A\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"))
	if err != nil {
		t.Fatal(err)
	}
	answered, retryable := raceRotations(t, ctx, sess, 4, 15, &mcp.CallToolParams{Name: "getenv", Arguments: map[string]any{"text": "FILES_TOKEN"}}, func() {
		putCredential(t, n, "acme", "alice", "files", "env", "FILES_TOKEN=tok-B\n")
		putCredential(t, n, "acme", "alice", "files", "env", "FILES_TOKEN=tok-C\n")
	})
	if got, want := callText(t, ctx, sess, "getenv", "FILES_TOKEN"), "tok-C"; got != want {
		t.Fatalf("after the rotations: %q, want %q", got, want)
	}
	waitFor(t, "one process for the session", func() bool { return n.gw.UpstreamProcesses("files") == 1 })
	t.Logf("%d calls answered by the upstream, %d with the retryable error", answered, retryable)
}

// TestRotationOldConnectionTraffic: while the old connection drains, what
// belongs to it still reaches it: the client's answer to a sampling
// request the old upstream sent during a call in flight (without it the
// call, and the drain, could only time out), and the cancellation of a
// call in flight, which ends the drain at once.
func TestRotationOldConnectionTraffic(t *testing.T) {
	n, up, route := startTokenRoute(t, func(c *Config) { c.RotationDrainTimeout = 20 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // within the drain timeout: a drain that waits it out fails the test
	defer cancel()
	asked := make(chan struct{}, 1)
	answer := make(chan struct{})
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"), client.WithClientOptions(&mcp.ClientOptions{
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			asked <- struct{}{}
			<-answer
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "hello"}}, nil
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		text string
		err  error
	}
	call := func(ctx context.Context, tool string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": ""}})
			switch {
			case err != nil:
				ch <- result{err: err}
			case res.IsError:
				ch <- result{err: fmt.Errorf("tool error %v", res.Content)}
			default:
				ch <- result{text: res.Content[0].(*mcp.TextContent).Text}
			}
		}()
		return ch
	}

	asking := call(ctx, "ask")
	<-asked // the upstream on tok-A waits for the client's answer
	up.rotate(t, n, "tok-B")
	sent := metricValue(t, n, "mcpgw_proxy_messages_total", "direction", "client_to_server")
	next := call(ctx, "token")
	// Once the gateway has read the call, it starts the re-establishment
	// (draining tok-A) before the client answers.
	waitFor(t, "the gateway to read the call", func() bool {
		return metricValue(t, n, "mcpgw_proxy_messages_total", "direction", "client_to_server") > sent
	})
	close(answer)
	if r := <-asking; r.err != nil || r.text != "asked on tok-A: hello" {
		t.Fatalf("call asking the client during the rotation: %+v, want asked on tok-A: hello", r)
	}
	if r := <-next; r.err != nil || r.text != "tok-B" {
		t.Fatalf("call after the rotation: %+v, want tok-B", r)
	}

	holdCtx, cancelHold := context.WithCancel(ctx)
	holding := call(holdCtx, "hold")
	if got := <-up.held; got != "tok-B" {
		t.Fatalf("hold started on %q, want tok-B", got)
	}
	up.rotate(t, n, "tok-C")
	next = call(ctx, "token")
	cancelHold()
	if r := <-holding; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled call: %+v, want context.Canceled", r)
	}
	if r := <-next; r.err != nil || r.text != "tok-C" {
		t.Fatalf("call after the cancelled one: %+v, want tok-C (within the test's deadline, not after the drain timeout)", r)
	}
}

// TestRotationRefusedCredential: a stored credential the upstream refuses
// fails the calls that find it with the upstream's refusal, retryable, and
// the session recovers at the first call after a good one is stored.
func TestRotationRefusedCredential(t *testing.T) {
	n, up, route := startTokenRoute(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"))
	if err != nil {
		t.Fatal(err)
	}
	callText(t, ctx, sess, "token", "")
	putCredential(t, n, "acme", "alice", "ws", "bearer", "tok-typo")
	for range 2 {
		werr := callErr(t, ctx, sess, "token")
		if werr.Code != transport.CodeUpstreamError || !strings.Contains(werr.Message, "401") {
			t.Fatalf("call with a refused credential: %v, want the upstream's 401 as an upstream error", werr)
		}
	}
	up.rotate(t, n, "tok-B")
	if got, want := callText(t, ctx, sess, "token", ""), "tok-B"; got != want {
		t.Fatalf("after a good credential was stored: %q, want %q", got, want)
	}
	if got := metricValue(t, n, "mcpgw_proxy_upstream_reestablished_total", "route", "ws", "reason", "credential_rotated", "outcome", "error"); got != 2 {
		t.Errorf("failed re-establishments = %v, want 2", got)
	}
}

// TestRotationSessionClosedWhileDraining: a session whose client goes
// away while its upstream connection drains for a re-establishment ends at
// once, not after the drain timeout, and opens no new connection.
func TestRotationSessionClosedWhileDraining(t *testing.T) {
	n, up, route := startTokenRoute(t, func(c *Config) { c.RotationDrainTimeout = time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := client.NewTransport("ws://"+n.HTTPAddr(), route.URL, "acme", "alice", tokenOpts(n)...)
	if err != nil {
		t.Fatal(err)
	}
	// The client's own Close would wait for its calls to be answered;
	// closing its connection is a client that went away.
	ct := &capturingTransport{Transport: tr}
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "gone", Version: "1"}, nil).Connect(ctx, ct, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	go sess.CallTool(ctx, &mcp.CallToolParams{Name: "hold", Arguments: map[string]any{"text": ""}})
	<-up.held
	up.rotate(t, n, "tok-B")
	sent := metricValue(t, n, "mcpgw_proxy_messages_total", "direction", "client_to_server")
	go sess.CallTool(ctx, &mcp.CallToolParams{Name: "token", Arguments: map[string]any{"text": ""}})
	waitFor(t, "the gateway to read the call", func() bool {
		return metricValue(t, n, "mcpgw_proxy_messages_total", "direction", "client_to_server") > sent
	})
	ct.conn.Close()
	waitFor(t, "the session to end", func() bool {
		return metricValue(t, n, "mcpgw_proxy_sessions_active", "transport", "websocket") == 0
	})
	for _, e := range up.seen() {
		if e == "conn tok-B" {
			t.Fatalf("a connection was opened for a session that had ended: %q", up.seen())
		}
	}
}

// capturingTransport keeps the connection its transport opened.
type capturingTransport struct {
	mcp.Transport
	conn mcp.Connection
}

func (c *capturingTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	conn, err := c.Transport.Connect(ctx)
	c.conn = conn
	return conn, err
}

// raceRotations makes workers × calls concurrent calls of params on sess
// while rotate replaces the credential, and checks that each gets an
// answer: from the upstream with one of the credentials tok-A, tok-B or
// tok-C, or the documented retryable error. It returns how many of each.
func raceRotations(t *testing.T, ctx context.Context, sess *mcp.ClientSession, workers, calls int, params *mcp.CallToolParams, rotate func()) (answered, retryable int32) {
	t.Helper()
	var ok, retry atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, workers*calls)
	for range workers {
		wg.Go(func() {
			for range calls {
				res, err := sess.CallTool(ctx, params)
				var werr *jsonrpc.Error
				switch {
				case err == nil && !res.IsError && slices.Contains([]string{"tok-A", "tok-B", "tok-C"}, res.Content[0].(*mcp.TextContent).Text):
					ok.Add(1)
				case errors.As(err, &werr) && werr.Code == transport.CodeUpstreamError && strings.Contains(werr.Message, "retry"):
					retry.Add(1)
				default:
					errs <- fmt.Errorf("call: %v, %v", res, err)
				}
			}
		})
	}
	rotate()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, want := ok.Load()+retry.Load(), int32(workers*calls); got != want {
		t.Fatalf("%d calls answered, want %d", got, want)
	}
	return ok.Load(), retry.Load()
}
