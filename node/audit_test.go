package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// auditRecords waits until the audit log holds a record matching last, then
// returns every record, oldest first, as GET /v1/audit gives them, with
// the raw JSON body.
func auditRecords(t *testing.T, n *Node, query string, last func(storage.AuditRecord) bool) ([]storage.AuditRecord, []byte) {
	t.Helper()
	var recs []storage.AuditRecord
	var body []byte
	waitFor(t, "the audit records", func() bool {
		resp := adminDo(t, n, http.MethodGet, "/v1/audit?order=oldest&limit=1000&"+query, nil)
		body, _ = io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/audit: HTTP %d: %s", resp.StatusCode, body)
		}
		recs = nil
		if err := json.Unmarshal(body, &recs); err != nil {
			t.Fatal(err)
		}
		return len(recs) > 0 && last(recs[len(recs)-1])
	})
	return recs, body
}

// outline is what TestAuditSession checks of each record's kind and outcome.
type outline struct {
	Kind                   storage.AuditKind
	Tool, Outcome, Reason  string
	Code                   int64
	Service, Org, Account  string
	Route, CredentialKeyID string
}

// TestAuditSession: a session with three tool calls, the third refused by
// a rate limit, leaves exactly its open, the calls and its close in the
// audit log, with who, what and how long, and neither the credential nor
// the service token anywhere in the log or the API's answer.
func TestAuditSession(t *testing.T) {
	up := upstreamtest.New()
	secret := "audit-upstream-secret-5f1e"
	up.RequireBearer.Store(&secret)
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "gh", URL: upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp", Credential: storage.CredentialRequired})
	cred := putCredential(t, n, "acme", "alice", "gh", "bearer", secret)
	limit := storage.Limit{ID: "echo-2", Service: "*", Org: "*", Account: "*", Route: "gh", Tool: "echo", Rate: 0.001, Burst: 2}
	if resp := adminDo(t, n, http.MethodPost, "/v1/limits", limit); resp.StatusCode != http.StatusOK {
		t.Fatalf("put limit: HTTP %d", resp.StatusCode)
	}
	tok := issueToken(t, n, "billing-agent", []string{"acme"}, "1h")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithToken(tok.Token))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := callText(t, ctx, sess, "echo", "hi"); got != "hi" {
			t.Fatalf("echo = %q", got)
		}
	}
	if werr := toolError(t, ctx, sess, "echo"); werr.Code != transport.CodeRateLimited {
		t.Fatalf("third call: %v, want rate limited", werr)
	}
	sess.Close()

	recs, body := auditRecords(t, n, "", func(r storage.AuditRecord) bool { return r.Kind == storage.AuditSessionClose })
	var got []outline
	for _, r := range recs {
		got = append(got, outline{r.Kind, r.Tool, r.Outcome, r.Reason, r.Code, r.Service, r.Org, r.Account, r.Route, r.CredentialKeyID})
	}
	who := func(o outline) outline {
		o.Service, o.Org, o.Account, o.Route, o.CredentialKeyID = "billing-agent", "acme", "alice", "gh", cred.KeyID
		return o
	}
	want := []outline{
		who(outline{Kind: storage.AuditSessionOpen, Outcome: "ok"}),
		who(outline{Kind: storage.AuditToolCall, Tool: "echo", Outcome: "ok"}),
		who(outline{Kind: storage.AuditToolCall, Tool: "echo", Outcome: "ok"}),
		who(outline{Kind: storage.AuditToolCall, Tool: "echo", Outcome: "refused", Reason: "rate_limited", Code: transport.CodeRateLimited}),
		who(outline{Kind: storage.AuditSessionClose, Outcome: "ok"}),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("audit records (-want +got):\n%s", diff)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || r.SessionID != recs[0].SessionID || r.SessionID == "" || r.TokenID != tok.ID ||
			r.Node == "" || !strings.HasPrefix(r.Remote, "127.0.0.1:") || r.Time.IsZero() {
			t.Errorf("record %d: seq %d session %q token %q node %q remote %q time %v", i, r.Seq, r.SessionID, r.TokenID, r.Node, r.Remote, r.Time)
		}
	}
	for _, i := range []int{1, 2, 4} {
		if recs[i].LatencyMicros <= 0 {
			t.Errorf("%s record %d has latency %dµs, want > 0", recs[i].Kind, i, recs[i].LatencyMicros)
		}
	}
	if !strings.Contains(recs[3].Error, `rate limit "echo-2"`) {
		t.Errorf("refusal error = %q, want the gateway's message naming the limit", recs[3].Error)
	}

	// Filters reach the log.
	resp := adminDo(t, n, http.MethodGet, "/v1/audit?kind=tool_call&route=gh&org=acme&account=alice&service=billing-agent&limit=2", nil)
	var calls []storage.AuditRecord
	json.NewDecoder(resp.Body).Decode(&calls)
	if len(calls) != 2 || calls[0].Seq != 4 || calls[1].Seq != 3 {
		t.Fatalf("newest two tool calls: %d records %+v, want seqs 4 and 3", len(calls), calls)
	}
	resp = adminDo(t, n, http.MethodGet, "/v1/audit?since=1h&org=globex", nil)
	calls = nil
	json.NewDecoder(resp.Body).Decode(&calls)
	if resp.StatusCode != http.StatusOK || len(calls) != 0 {
		t.Fatalf("org=globex: HTTP %d, %d records; want 200 and none", resp.StatusCode, len(calls))
	}

	resp = adminDo(t, n, http.MethodGet, "/v1/audit/verify", nil)
	var v adminapi.AuditVerifyResult
	json.NewDecoder(resp.Body).Decode(&v)
	if !v.OK || v.Checked != 5 || v.Node == "" {
		t.Fatalf("verify: %+v, want ok with 5 records checked", v)
	}

	db, err := os.ReadFile(filepath.Join(n.cfg.DataDir, storage.AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secret, tok.Token, n.AdminToken()} {
		if bytes.Contains(db, []byte(s)) {
			t.Errorf("audit.db contains a secret (%.8s…)", s)
		}
		if bytes.Contains(body, []byte(s)) {
			t.Errorf("GET /v1/audit answer contains a secret (%.8s…)", s)
		}
	}
}

// TestAuditRefusals: sessions refused before they open are audited with
// what was known of the caller and why, and nothing a URL carried as a
// secret.
func TestAuditRefusals(t *testing.T) {
	n := startNode(t)
	up := upstreamtest.New()
	route := addRoute(t, n, storage.Route{Name: "gh", URL: upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp", Credential: storage.CredentialRequired})
	acme := issueToken(t, n, "billing-agent", []string{"acme"}, "1h")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	gw := client.WithGateway("ws://" + n.HTTPAddr())
	attempts := []struct {
		target, org string
		token       string
	}{
		{route.URL, "acme", ""},                                             // no token
		{route.URL, "globex", acme.Token},                                   // org not on the token
		{"https://nowhere.example/mcp?api_key=leak-me", "acme", acme.Token}, // no route; the query must not be kept
		{route.URL, "acme", acme.Token},                                     // no credential
	}
	for _, a := range attempts {
		if _, err := client.Connect(ctx, a.target, a.org, "alice", gw, client.WithToken(a.token)); err == nil {
			t.Fatalf("Connect %s for %s succeeded, want a refusal", a.target, a.org)
		}
	}
	recs, body := auditRecords(t, n, "kind=refusal", func(r storage.AuditRecord) bool { return r.Reason == "no_credential" })
	type refusal struct {
		Service, Org, Route, Reason string
		Code                        int64
	}
	var got []refusal
	for _, r := range recs {
		got = append(got, refusal{r.Service, r.Org, r.Route, r.Reason, r.Code})
		if r.Outcome != storage.AuditRefused || r.SessionID != "" || r.Remote == "" {
			t.Errorf("refusal %d: outcome %q session %q remote %q", r.Seq, r.Outcome, r.SessionID, r.Remote)
		}
	}
	want := []refusal{
		{"", "acme", "", "unauthorized", transport.CodeUnauthorized},
		{"billing-agent", "globex", "gh", "forbidden", transport.CodeForbidden},
		{"billing-agent", "acme", "", "no_route", transport.CodeNoRoute},
		{"billing-agent", "acme", "gh", "no_credential", transport.CodeNoCredential},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("refusals (-want +got):\n%s", diff)
	}
	if got, want := recs[2].Error, "no route allows target https://nowhere.example/mcp"; got != want {
		t.Errorf("no-route error = %q, want %q", got, want)
	}
	if !strings.Contains(recs[3].Error, "mcpgw vault put") {
		t.Errorf("no-credential error = %q, want the gateway's message", recs[3].Error)
	}
	db, _ := os.ReadFile(filepath.Join(n.cfg.DataDir, storage.AuditFile))
	for _, s := range []string{"leak-me", acme.Token} {
		if bytes.Contains(db, []byte(s)) || bytes.Contains(body, []byte(s)) {
			t.Errorf("the audit log keeps %.8s…", s)
		}
	}
}

// TestAuditCallErrors: an upstream's own error is recorded by its code
// only, and a call the caller cancels is recorded as cancelled.
func TestAuditCallErrors(t *testing.T) {
	n := startNode(t)
	up := upstreamtest.New()
	// A stateless upstream on a pre-2026 protocol learns of a cancellation
	// only by the gateway aborting the call's request, so it cannot answer
	// the call first.
	route := addRoute(t, n, storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.StatelessHandler()) + "/mcp"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	progressed := make(chan struct{}, 1)
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice", client.WithProtocolVersion("2025-11-25"), client.WithClientOptions(&mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			select {
			case progressed <- struct{}{}:
			default:
			}
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	toolError(t, ctx, sess, "no-such-tool")

	callCtx, callCancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := sess.CallTool(callCtx, &mcp.CallToolParams{Name: "slow", Meta: mcp.Meta{"progressToken": "p"}})
		errc <- err
	}()
	<-progressed
	callCancel()
	<-errc

	recs, _ := auditRecords(t, n, "kind=tool_call", func(r storage.AuditRecord) bool { return r.Tool == "slow" })
	if len(recs) != 2 {
		t.Fatalf("%d tool_call records, want 2: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Tool != "no-such-tool" || r.Outcome != storage.AuditError || r.Reason != "rpc_error" || r.Code == 0 || r.Error != "" {
		t.Errorf("upstream error recorded as %+v, want error/rpc_error with the code and no message", r)
	}
	if r := recs[1]; r.Outcome != storage.AuditError || r.Reason != "cancelled" || r.LatencyMicros <= 0 {
		t.Errorf("cancelled call recorded as %+v, want error/cancelled with its latency", r)
	}
}

// TestAuditToolError: a tool that runs and reports isError is audited and
// counted as an error of its own kind, not as ok.
func TestAuditToolError(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "up", URL: url})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "fail", Arguments: map[string]any{"text": "x"}})
	if err != nil || !res.IsError {
		t.Fatalf("fail tool: %v, %+v; want an isError result", err, res)
	}
	recs, _ := auditRecords(t, n, "kind=tool_call", func(r storage.AuditRecord) bool { return r.Tool == "fail" })
	if len(recs) != 1 || recs[0].Outcome != storage.AuditError || recs[0].Reason != "tool_error" {
		t.Fatalf("records %+v, want one error/tool_error", recs)
	}
	got := metricValue(t, n, "mcpgw_proxy_tool_calls_total", "route", "up", "outcome", "tool_error")
	if got != 1 {
		t.Fatalf("mcpgw_proxy_tool_calls_total{outcome=tool_error} = %v, want 1", got)
	}
}
