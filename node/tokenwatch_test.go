package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// blockingUpstream starts a go-sdk server whose "block" tool answers only
// when its call is cancelled or the test ends, beside an "echo" tool, and
// returns its URL. Start it before the node, so that it stops after it.
func blockingUpstream(t *testing.T) string {
	t.Helper()
	srv := mcp.NewServer(&mcp.Implementation{Name: "blocking", Version: "1"}, nil)
	release := make(chan struct{})
	mcp.AddTool(srv, &mcp.Tool{Name: "echo"}, func(ctx context.Context, req *mcp.CallToolRequest, a upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "block"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-release:
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "released"}}}, nil, nil
		}
	})
	u := upstreamtest.StartHTTP(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)) + "/mcp"
	t.Cleanup(func() { close(release) }) // runs before the server stops
	return u
}

// lineSession is a session through the gateway driven message by message,
// over any transport that carries one JSON-RPC message at a time.
type lineSession struct {
	t    *testing.T
	name string
	send func(string) error
	// recv returns the next message, or the error that ended the session.
	recv func() (string, error)
}

// openLineSession opens a session for route on n over kind (websocket,
// quic, unix) with tok, and initializes it.
func openLineSession(t *testing.T, n *Node, kind, tok, route string) *lineSession {
	t.Helper()
	ls := &lineSession{t: t, name: kind}
	switch kind {
	case "websocket":
		q := url.Values{"org": {"org1"}, "account": {"acct1"}, "access_token": {tok}}
		c, _, err := websocket.Dial(testContext(t, 10*time.Second), "ws://"+n.HTTPAddr()+"/v1/mcp/"+route+"?"+q.Encode(),
			&websocket.DialOptions{Subprotocols: []string{transport.Subprotocol}})
		if err != nil {
			t.Fatalf("dial websocket: %v", err)
		}
		t.Cleanup(func() { c.CloseNow() })
		ls.send = func(s string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return c.Write(ctx, websocket.MessageText, []byte(s))
		}
		ls.recv = func() (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_, data, err := c.Read(ctx)
			return string(data), err
		}
	case "quic", "unix":
		r := openRaw(t, n, kind)
		r.send(fmt.Sprintf(`{"route":%q,"org":"org1","account":"acct1","token":%q}`+"\n", route, tok))
		if rep := r.reply(); !rep.OK {
			t.Fatalf("%s open refused: %+v", kind, rep)
		}
		ls.send = func(s string) error {
			r.s.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, err := r.s.Write([]byte(s + "\n"))
			return err
		}
		ls.recv = func() (string, error) {
			r.s.SetReadDeadline(time.Now().Add(15 * time.Second))
			return r.br.ReadString('\n')
		}
	default:
		t.Fatalf("unknown transport %q", kind)
	}
	ls.call(1, "initialize", map[string]any{"protocolVersion": "2025-11-25", "capabilities": map[string]any{}, "clientInfo": map[string]any{"name": "raw", "version": "1"}})
	ls.write(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return ls
}

func (ls *lineSession) write(s string) {
	ls.t.Helper()
	if err := ls.send(s); err != nil {
		ls.t.Fatalf("%s: write: %v", ls.name, err)
	}
}

// start sends a call without waiting for its answer.
func (ls *lineSession) start(id int, method string, params any) {
	ls.t.Helper()
	data, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	ls.write(string(data))
}

// await returns the response to id, skipping notifications and other
// responses.
func (ls *lineSession) await(id int) rpcReply {
	ls.t.Helper()
	for {
		line, err := ls.recv()
		if err != nil {
			ls.t.Fatalf("%s: waiting for the answer to %d: %v", ls.name, id, err)
		}
		var r rpcReply
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			ls.t.Fatalf("%s: gateway sent %q: %v", ls.name, line, err)
		}
		if string(r.ID) == fmt.Sprint(id) && r.Method == "" {
			return r
		}
	}
}

func (ls *lineSession) call(id int, method string, params any) rpcReply {
	ls.t.Helper()
	ls.start(id, method, params)
	return ls.await(id)
}

// echo calls the echo tool and checks the answer.
func (ls *lineSession) echo(id int, text string) {
	ls.t.Helper()
	if got := ls.call(id, "tools/call", map[string]any{"name": "echo", "arguments": map[string]any{"text": text}}).text(ls.t); got != text {
		ls.t.Fatalf("%s: echo %q answered %q", ls.name, text, got)
	}
}

// expectEnd reads until the gateway ends the session and returns why the
// read failed.
func (ls *lineSession) expectEnd() error {
	ls.t.Helper()
	for {
		line, err := ls.recv()
		if err != nil {
			if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
				ls.t.Fatalf("%s: the gateway did not end the session", ls.name)
			}
			return err
		}
		var r rpcReply
		if json.Unmarshal([]byte(line), &r) == nil && r.Method == "" {
			ls.t.Fatalf("%s: got %s after the session should have ended", ls.name, line)
		}
	}
}

// checkEndedByToken checks that the call outstanding as id failed with
// transport.CodeUnauthorized saying what happened to the token, and that the session
// then ended; a WebSocket closes with policy violation and a reason.
func checkEndedByToken(t *testing.T, ls *lineSession, id int, what string) {
	t.Helper()
	r := ls.await(id)
	if r.Error == nil || r.Error.Code != transport.CodeUnauthorized || !strings.Contains(r.Error.Message, what) || !strings.Contains(r.Error.Message, "mcpgw token issue") {
		t.Fatalf("%s: outstanding call answered %+v, want code %d saying %q and what to do", ls.name, r, transport.CodeUnauthorized, what)
	}
	err := ls.expectEnd()
	if ls.name == "websocket" {
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "service token "+what+"; get a new one with `mcpgw token issue`" {
			t.Fatalf("websocket ended with %v, want close 1008 saying the token was %s", err, what)
		}
	}
}

var lineTransports = []string{"websocket", "quic", "unix"}

// TestRevokedTokenEndsSessions: revoking a token ends every session it
// opened, on every transport, within seconds: the call each had
// outstanding fails with transport.CodeUnauthorized, then the session closes. A
// session opened with another token is untouched.
func TestRevokedTokenEndsSessions(t *testing.T) {
	upURL := blockingUpstream(t)
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "blk", URL: upURL})
	tok := issueToken(t, n, "svc", []string{"*"}, "1h")
	other := openLineSession(t, n, "websocket", testToken(n), "blk")
	var sessions []*lineSession
	for _, kind := range lineTransports {
		ls := openLineSession(t, n, kind, tok.Token, "blk")
		ls.start(3, "tools/call", map[string]any{"name": "block", "arguments": map[string]any{}})
		ls.echo(2, "after block") // answered, so the block call was read and is outstanding
		sessions = append(sessions, ls)
	}

	if resp := adminDo(t, n, http.MethodPost, "/v1/tokens/"+tok.ID+"/revoke", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	revoked := time.Now()
	for _, ls := range sessions {
		checkEndedByToken(t, ls, 3, "revoked")
	}
	t.Logf("sessions ended %v after the revocation", time.Since(revoked))
	other.echo(2, "still here")
	waitFor(t, "the revoked sessions to be gone", func() bool { return n.Sessions() == 1 })
	waitFor(t, "a session_close record with reason token_revoked for each session", func() bool {
		var recs []storage.AuditRecord
		json.NewDecoder(adminDo(t, n, http.MethodGet, "/v1/audit?order=oldest&limit=1000", nil).Body).Decode(&recs)
		closes := 0
		for _, r := range recs {
			if r.Kind == storage.AuditSessionClose && r.TokenID == tok.ID && r.Reason == "token_revoked" {
				closes++
			}
		}
		return closes == len(lineTransports)
	})
}

// TestExpiredTokenEndsSessions: a session ends when its token expires
// (past the leeway Verify allows), on every transport.
func TestExpiredTokenEndsSessions(t *testing.T) {
	upURL := blockingUpstream(t)
	clock := clocktest.New(time.Now())
	n := startNode(t, func(c *Config) { c.Clock = clock.Now })
	addRoute(t, n, storage.Route{Name: "blk", URL: upURL})
	short := issueToken(t, n, "svc", []string{"*"}, "1m")
	other := openLineSession(t, n, "websocket", testToken(n), "blk") // valid for 1h
	var sessions []*lineSession
	for _, kind := range lineTransports {
		ls := openLineSession(t, n, kind, short.Token, "blk")
		ls.start(3, "tools/call", map[string]any{"name": "block", "arguments": map[string]any{}})
		sessions = append(sessions, ls)
	}
	// Within the leeway the sessions go on.
	clock.Advance(time.Minute + 10*time.Second)
	for i, ls := range sessions {
		ls.echo(10+i, "in leeway")
	}
	clock.Advance(30 * time.Second)
	for _, ls := range sessions {
		checkEndedByToken(t, ls, 3, "expired")
	}
	other.echo(2, "still here")
}

// TestClusterRevocationEndsSessions: a token revoked through one node ends
// the session it opened on another.
func TestClusterRevocationEndsSessions(t *testing.T) {
	upURL := blockingUpstream(t)
	nodes := startCluster(t, 3)
	n1, n2 := nodes[0], nodes[1]
	addRoute(t, n1, storage.Route{Name: "blk", URL: upURL})
	tok := issueToken(t, n1, "svc", []string{"*"}, "1h")
	waitFor(t, "the route and token on node 2", func() bool {
		_, err := n2.store.Route("blk")
		return err == nil && !tokenRefused(n2, tok.Token)
	})
	ls := openLineSession(t, n2, "websocket", tok.Token, "blk")
	ls.start(3, "tools/call", map[string]any{"name": "block", "arguments": map[string]any{}})
	ls.echo(4, "on node 2")

	if resp := adminDo(t, n1, http.MethodPost, "/v1/tokens/"+tok.ID+"/revoke", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	revoked := time.Now()
	checkEndedByToken(t, ls, 3, "revoked")
	t.Logf("session on node 2 ended %v after the revocation on node 1", time.Since(revoked))
}

// TestStreamableSessionDriver: only a token that could have opened a
// streamable HTTP session may drive it: same service and the session's org
// allowed. A revoked token is refused as revoked, and its session ends.
func TestStreamableSessionDriver(t *testing.T) {
	n, _ := gatewayTo(t)
	a := issueToken(t, n, "svc", []string{"org1"}, "1h")
	a2 := issueToken(t, n, "svc", []string{"org1", "org9"}, "1h")
	otherOrg := issueToken(t, n, "svc", []string{"org2"}, "1h")
	otherSvc := issueToken(t, n, "intruder", []string{"*"}, "1h")
	endpoint := func(tok string) string {
		return "http://" + n.HTTPAddr() + "/v1/mcp/up?org=org1&account=acct1&access_token=" + url.QueryEscape(tok)
	}
	id := openStreamableSession(t, endpoint(a.Token))
	ping := `{"jsonrpc":"2.0","id":7,"method":"ping"}`

	for _, tc := range []struct {
		name string
		tok  string
	}{{"other org", otherOrg.Token}, {"other service", otherSvc.Token}} {
		for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
			t.Run(tc.name+" "+method, func(t *testing.T) {
				resp := streamableRequest(t, method, endpoint(tc.tok), "application/json", id, ping)
				if got, want := resp.StatusCode, http.StatusForbidden; got != want {
					t.Fatalf("HTTP %d, want %d", got, want)
				}
				e := decodeRefusal(t, resp)
				if e.Code != transport.CodeForbidden {
					t.Fatalf("code %d, want %d", e.Code, transport.CodeForbidden)
				}
				checkMessage(t, e.Message, `opened by service "svc" for org "org1"`, "could not have opened it", "send initialize")
			})
		}
	}
	// Another token of the same service that allows org1 drives it.
	resp := streamableRequest(t, http.MethodPost, endpoint(a2.Token), "application/json", id, ping)
	if r := readPOSTReply(t, resp); r.Error != nil || string(r.ID) != "7" {
		t.Fatalf("ping with a second token of the service: %+v", r)
	}

	if resp := adminDo(t, n, http.MethodPost, "/v1/tokens/"+a.ID+"/revoke", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	resp = streamableRequest(t, http.MethodPost, endpoint(a.Token), "application/json", id, ping)
	if got, want := resp.StatusCode, http.StatusUnauthorized; got != want {
		t.Fatalf("POST with the revoked token: HTTP %d, want %d", got, want)
	}
	if e := decodeRefusal(t, resp); e.Code != transport.CodeUnauthorized || !strings.Contains(e.Message, "revoked") {
		t.Fatalf("POST with the revoked token: %d %q, want code %d saying revoked", e.Code, e.Message, transport.CodeUnauthorized)
	}
	waitFor(t, "the session of the revoked token to end", func() bool { return n.gw.StreamableSessions() == 0 })
}
