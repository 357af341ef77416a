package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

const testToken = "0123456789abcdef0123456789abcdef"

// syncBuffer is a log sink the handler writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type api struct {
	h     http.Handler
	url   string
	store *storage.Store
	w     *clustertest.LocalWriter
	logs  *syncBuffer
}

// startAPI serves the admin API on loopback over a real admin.Service on a
// bbolt store in dataDir (a new temp dir when empty), without raft.
func startAPI(t testing.TB, dataDir string, opts ...func(*Options)) *api {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	store, err := storage.Open(filepath.Join(dataDir, storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	var keys atomic.Pointer[vault.Keys]
	keys.Store(vault.NewKeys(id))
	sk, err := policy.NewSigningKey(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kr := policy.NewKeyring([]policy.SigningKey{sk}, nil, policy.KeyringOptions{})
	a := &api{store: store, w: clustertest.NewLocalWriter(store), logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(a.logs, nil))
	svc, err := admin.New(admin.Deps{
		State: store, Writes: a.w, VaultKeys: &keys,
		Keyring:     func() (*policy.Keyring, error) { return kr, nil },
		SigningKeys: func(context.Context, []storage.TokenKey) error { return errors.New("not in these tests") },
		// The data path's validation is node's to wire; these stand in
		// for it: a route needs a name and a URL.
		Checks: admin.Checks{
			Name: func(what, s string) error {
				if s == "" || strings.ContainsAny(s, "/ ") {
					return fmt.Errorf("%s %q is invalid", what, s)
				}
				return nil
			},
			Route: func(r *storage.Route) error {
				if r.Name == "" || strings.Contains(r.Name, "/") || r.URL == "" {
					return fmt.Errorf("route name %q is invalid", r.Name)
				}
				return nil
			},
			Limit: func(l storage.Limit) (policy.Limit, error) { return policy.Limit{}, nil },
		},
	}, &admin.Options{NodeID: "n1", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	o := &Options{
		TokenHint: "/data/admin.token",
		Logger:    logger,
		Open:      map[string]http.Handler{"GET /healthz": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })},
	}
	for _, f := range opts {
		f(o)
	}
	a.h = NewHandler(svc, []byte(testToken), o)
	srv := httptest.NewServer(a.h)
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// do sends a request with the admin token and returns the status and body.
func (a *api) do(t testing.TB, method, path string, body any) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, a.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

func errorMessage(t testing.TB, body []byte) string {
	t.Helper()
	var e ErrorBody
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not an admin error: %v", body, err)
	}
	return e.Error
}

// TestRefusals: requests without the admin token, with bodies that are not
// the expected JSON, or naming nothing that exists are refused with the
// status and message a caller can act on, and change nothing.
func TestRefusals(t *testing.T) {
	a := startAPI(t, "")
	if status, _, body := a.do(t, http.MethodPost, "/v1/routes", Route{Name: "kept", URL: "http://127.0.0.1:9/mcp"}); status != http.StatusCreated {
		t.Fatalf("add route: HTTP %d %s", status, body)
	}
	tests := []struct {
		name    string
		method  string
		path    string
		auth    string // Authorization header; "<token>" is replaced by the admin token
		body    string
		status  int
		message []string
	}{
		{name: "no token", method: http.MethodGet, path: "/v1/routes",
			status: http.StatusUnauthorized, message: []string{"admin token missing or wrong: send Authorization: Bearer <token from /data/admin.token>"}},
		{name: "wrong token", method: http.MethodGet, path: "/v1/routes", auth: "Bearer wrong",
			status: http.StatusUnauthorized, message: []string{"admin token missing or wrong"}},
		{name: "token without Bearer", method: http.MethodGet, path: "/v1/routes", auth: "<token>",
			status: http.StatusUnauthorized, message: []string{"admin token missing or wrong"}},
		{name: "token with another scheme", method: http.MethodGet, path: "/v1/routes", auth: "Basic <token>",
			status: http.StatusUnauthorized, message: []string{"admin token missing or wrong"}},
		{name: "token prefix", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>x", body: `{"name":"a","url":"http://127.0.0.1:9/"}`,
			status: http.StatusUnauthorized, message: []string{"admin token missing or wrong"}},
		{name: "delete without token", method: http.MethodDelete, path: "/v1/routes/kept",
			status: http.StatusUnauthorized, message: []string{"admin token missing or wrong"}},
		{name: "bad JSON", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":`,
			status: http.StatusBadRequest, message: []string{"route: body is not the expected JSON object"}},
		{name: "unknown field", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a","url":"http://127.0.0.1:9/","bogus":1}`,
			status: http.StatusBadRequest, message: []string{"route: body is not the expected JSON object", `unknown field "bogus"`}},
		{name: "two objects", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a","url":"http://127.0.0.1:9/"}{}`,
			status: http.StatusBadRequest, message: []string{"route: body must hold one JSON object"}},
		{name: "refused by validation", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a/b","url":"http://127.0.0.1:9/"}`,
			status: http.StatusBadRequest, message: []string{`route name "a/b" is invalid`}},
		{name: "delete unknown", method: http.MethodDelete, path: "/v1/routes/nope", auth: "Bearer <token>",
			status: http.StatusNotFound, message: []string{`no route named "nope"`, "mcpgw route list"}},
		{name: "body over 1 MiB", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"` + strings.Repeat("a", 1<<20) + `"}`,
			status: http.StatusBadRequest, message: []string{"route: body is not the expected JSON object", "request body too large"}},
		{name: "ttl not a duration", method: http.MethodPost, path: "/v1/tokens", auth: "Bearer <token>", body: `{"service":"billing","orgs":["*"],"ttl":"soon"}`,
			status: http.StatusBadRequest, message: []string{`ttl "soon" is not a duration like 24h or 30m`}},
		{name: "audit limit out of range", method: http.MethodGet, path: "/v1/audit?limit=0", auth: "Bearer <token>",
			status: http.StatusBadRequest, message: []string{`limit "0": use a number from 1 to 10000`}},
		{name: "audit without a log", method: http.MethodGet, path: "/v1/audit", auth: "Bearer <token>",
			status: http.StatusServiceUnavailable, message: []string{"query audit log: this node keeps no audit log"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, a.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", strings.ReplaceAll(tc.auth, "<token>", testToken))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if got, want := resp.StatusCode, tc.status; got != want {
				t.Fatalf("HTTP %d (%s), want %d", got, body, want)
			}
			msg := errorMessage(t, body)
			for _, part := range tc.message {
				if !strings.Contains(msg, part) {
					t.Fatalf("error %q, want it to contain %q", msg, part)
				}
			}
			if strings.Contains(msg, testToken) {
				t.Fatalf("error %q contains the admin token", msg)
			}
		})
	}
	routes, err := a.store.Routes()
	if err != nil || len(routes) != 1 || routes[0].Name != "kept" {
		t.Fatalf("routes after refusals = %+v, %v; want only %q", routes, err, "kept")
	}
}

// TestOpenEndpoints: the handlers named in Options.Open need no token.
func TestOpenEndpoints(t *testing.T) {
	a := startAPI(t, "")
	resp, err := http.Get(a.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET /healthz without a token: HTTP %d %q, want 200 ok", resp.StatusCode, body)
	}
}

// TestWriteWithoutLeader: a write no leader can take is 503 with
// Retry-After, saying to retry or use another node.
func TestWriteWithoutLeader(t *testing.T) {
	a := startAPI(t, "")
	a.w.Fail(fmt.Errorf("apply: %w", cluster.ErrNoLeader))
	status, hdr, body := a.do(t, http.MethodPost, "/v1/rules", Rule{ID: "r1", Service: "*", Org: "*", Account: "*", Route: "*", Tool: "*", Effect: "allow"})
	if status != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "1" {
		t.Fatalf("HTTP %d, Retry-After %q (%s); want 503 and 1", status, hdr.Get("Retry-After"), body)
	}
	if got, want := errorMessage(t, body), "write rule: apply: "+cluster.ErrNoLeader.Error()+"; retry shortly, or send it to another node (mcpgw cluster status)"; got != want {
		t.Fatalf("error %q, want %q", got, want)
	}
}

// corruptState creates a state database in dataDir holding, beside valid
// buckets, a route and a credential whose records are not JSON: a read of
// either fails with an error other than storage.ErrNotFound.
func corruptState(t *testing.T, dataDir string) {
	t.Helper()
	path := filepath.Join(dataDir, storage.StateFile)
	s, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Apply(s, 0, cluster.Command{Op: cluster.OpPutRoute, Route: &storage.Route{Name: "kept", URL: "http://127.0.0.1:9/mcp"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The bucket names are storage's own; writing raw bytes is the only
	// way to get a record its typed getters cannot decode.
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("routes")).Put([]byte("broken"), []byte("{not json")); err != nil {
			return err
		}
		return tx.Bucket([]byte("credentials")).Put([]byte(storage.CredentialKey("acme", "alice", "kept")), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStoreErrors: a record the store cannot read is a server fault,
// answered 500 with a pointer to the log where the cause is, never as
// "not found" (404) or as a new record (201) that overwrites it.
func TestStoreErrors(t *testing.T) {
	dataDir := t.TempDir()
	corruptState(t, dataDir)
	a := startAPI(t, dataDir)
	tests := []struct {
		name    string
		method  string
		path    string
		body    any
		message string
	}{
		{name: "delete unreadable route", method: http.MethodDelete, path: "/v1/routes/broken", message: "read route: internal error; see the gateway log"},
		{name: "put over unreadable route", method: http.MethodPost, path: "/v1/routes", body: Route{Name: "broken", URL: "http://127.0.0.1:9/mcp"}, message: "read route: internal error; see the gateway log"},
		{name: "list routes", method: http.MethodGet, path: "/v1/routes", message: "read routes: internal error; see the gateway log"},
		{name: "put credential on unreadable route", method: http.MethodPut, path: "/v1/credentials",
			body:    PutCredentialRequest{Org: "acme", Account: "alice", Route: "broken", Kind: "bearer", Secret: "s3cret-token"},
			message: "read route: internal error; see the gateway log"},
		{name: "put over unreadable credential", method: http.MethodPut, path: "/v1/credentials",
			body:    PutCredentialRequest{Org: "acme", Account: "alice", Route: "kept", Kind: "bearer", Secret: "s3cret-token"},
			message: "read credential: internal error; see the gateway log"},
		{name: "delete unreadable credential", method: http.MethodDelete, path: "/v1/credentials?org=acme&account=alice&route=kept", message: "read credential: internal error; see the gateway log"},
		{name: "list credentials", method: http.MethodGet, path: "/v1/credentials", message: "read credentials: internal error; see the gateway log"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := a.do(t, tc.method, tc.path, tc.body)
			if got, want := status, http.StatusInternalServerError; got != want {
				t.Fatalf("%s %s: HTTP %d (%s), want %d", tc.method, tc.path, got, body, want)
			}
			if got, want := errorMessage(t, body), tc.message; got != want {
				t.Fatalf("error %q, want %q", got, want)
			}
		})
	}
	// The cause is in the log, for the operator.
	if got := a.logs.String(); !strings.Contains(got, "invalid character") {
		t.Fatalf("the log does not carry the store error:\n%s", got)
	}
	if strings.Contains(a.logs.String(), "s3cret-token") {
		t.Fatal("the log carries the credential")
	}
}

// TestHTTPStatus: each kind of use-case error has its status; anything
// else is a server fault.
func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{&admin.Error{Kind: admin.ErrInvalid, Err: errors.New("x")}, http.StatusBadRequest},
		{&admin.Error{Kind: admin.ErrNotFound, Err: errors.New("x")}, http.StatusNotFound},
		{&admin.Error{Kind: admin.ErrConflict, Err: errors.New("x")}, http.StatusConflict},
		{&admin.Error{Kind: admin.ErrUnavailable, Err: errors.New("x")}, http.StatusServiceUnavailable},
		{&admin.Error{Kind: admin.ErrFailed, Err: errors.New("x")}, http.StatusInternalServerError},
		{&admin.Error{Kind: admin.ErrInternal, Err: errors.New("x")}, http.StatusInternalServerError},
		{errors.New("not an admin error"), http.StatusInternalServerError},
	}
	for _, tc := range tests {
		if got := HTTPStatus(tc.err); got != tc.want {
			t.Errorf("HTTPStatus(%v kind %v) = %d, want %d", tc.err, tc.err, got, tc.want)
		}
	}
}

// TestClient: the client sends the token, decodes answers and turns an
// error answer into a *StatusError with the server's message.
func TestClient(t *testing.T) {
	a := startAPI(t, "")
	c := NewClient(strings.TrimPrefix(a.url, "http://"), testToken, nil)
	ctx := context.Background()
	var got Route
	if err := c.Do(ctx, http.MethodPost, "/v1/routes", Route{Name: "echo", URL: "http://127.0.0.1:9/mcp"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "echo" || got.Created.IsZero() {
		t.Fatalf("put route answered %+v, want the stored route", got)
	}
	err := c.Do(ctx, http.MethodDelete, "/v1/routes/nope", nil, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound || se.Message != "no route named \"nope\"; list them with `mcpgw route list`" {
		t.Fatalf("delete unknown: %#v, want a 404 StatusError with the server's message", err)
	}
	var buf bytes.Buffer
	if n, err := c.Download(ctx, "/v1/backup", &buf); err != nil || n == 0 || int64(buf.Len()) != n {
		t.Fatalf("backup: %d bytes, %v", n, err)
	}
	err = NewClient("127.0.0.1:1", testToken, nil).Do(ctx, http.MethodGet, "/v1/routes", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "admin API unreachable at http://127.0.0.1:1: ") {
		t.Fatalf("unreachable: %v", err)
	}
	if envCAFile != client.EnvCAFile {
		t.Fatalf("envCAFile %q, want client.EnvCAFile %q", envCAFile, client.EnvCAFile)
	}
}

// TestWireJSON: the API's own types encode exactly as the records they
// are converted from did when they were the bodies, so the wire API is
// unchanged.
func TestWireJSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	route := storage.Route{Name: "echo", URL: "stdio://echo", Transport: storage.TransportStdio, Command: []string{"echo", "hi"}, Kind: storage.KindExternal, Credential: storage.CredentialRequired, Created: at}
	rule := storage.Rule{ID: "r", Service: "s", Org: "o", Account: "a", Route: "r", Tool: "t", Effect: "deny"}
	limit := storage.Limit{ID: "l", Service: "s", Org: "o", Account: "a", Route: "r", Tool: "t", Rate: 1.5, Burst: 3, Pool: "org"}
	rec := storage.AuditRecord{Seq: 1, Time: at, Node: "n", Kind: storage.AuditKind("tool_call"), SessionID: "s", Service: "svc", TokenID: "tk", Remote: "r", Org: "o", Account: "a",
		Route: "rt", Tool: "t", CredentialKeyID: "k", Outcome: "ok", Reason: "why", Code: -32000, Error: "e", LatencyMicros: 5, Prev: "p", Hash: "h"}
	st := cluster.Status{ID: "n1", Addr: "a", State: "Leader", LeaderID: "n1", LeaderAddr: "a", Term: 2, CommitIndex: 3, AppliedIndex: 4, LastIndex: 5, SnapshotIndex: 6, SnapshotsRestored: 7, Halted: "h",
		Peers: []cluster.Peer{{ID: "n1", Addr: "a", Suffrage: "Voter", Leader: true, Self: true, Health: cluster.HealthUp, LastContact: at}}}
	tok := storage.Token{ID: "t", Service: "s", Orgs: []string{"*"}, KeyID: "k", IssuedAt: at, ExpiresAt: at}
	tests := []struct {
		name      string
		old, wire any
	}{
		{"route", route, routeFrom(route)},
		{"rule", rule, ruleFrom(rule)},
		{"limit", limit, limitFrom(limit)},
		{"audit record", rec, auditRecord(rec)},
		{"cluster status", st, clusterStatus(st)},
		{"cluster status without peers", cluster.Status{ID: "n1"}, clusterStatus(cluster.Status{ID: "n1"})},
		// The token list embedded storage.Token beside "revoked".
		{"token info", struct {
			storage.Token
			Revoked bool `json:"revoked"`
		}{tok, true}, tokenInfo(admin.TokenStatus{Token: tok, Revoked: true})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old, err := json.Marshal(tc.old)
			if err != nil {
				t.Fatal(err)
			}
			wire, err := json.Marshal(tc.wire)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(old, wire) {
				t.Fatalf("wire JSON\n%s\nwant\n%s", wire, old)
			}
		})
	}
	if back := (routeFrom(route)).record(); !route.Created.Equal(back.Created) || back.Name != route.Name || back.Transport != route.Transport || back.Credential != route.Credential {
		t.Fatalf("route round trip = %+v, want %+v", back, route)
	}
}
