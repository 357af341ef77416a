package transport

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// codedErr is an error that names the JSON-RPC code a caller gets.
type codedErr struct{ msg string }

func (e codedErr) Error() string      { return e.msg }
func (e codedErr) RefusalCode() int64 { return CodeNoCredential }

// TestInjectingTransportReauthorize: an upstream's 401 to a request with
// the injected credential goes to Reauthorize; when it renewed the
// credential, the request is sent again, same body, new credential, and
// the caller sees only the success; when it cannot, its error is the
// caller's JSON-RPC error.
func TestInjectingTransportReauthorize(t *testing.T) {
	const body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}`
	for _, tc := range []struct {
		name     string
		retry    bool
		err      error
		wantSent int
		// wantStatus and wantBody are what the caller gets.
		wantStatus int
		wantBody   []string
	}{
		{name: "renewed", retry: true, wantSent: 2, wantStatus: 200, wantBody: []string{`"ok"`}},
		{name: "needs consent", err: codedErr{"the credential needs a new consent: invalid_grant"}, wantSent: 1, wantStatus: 401,
			wantBody: []string{`"id":7`, `-32086`, `needs a new consent: invalid_grant`}},
		{name: "not oauth", wantSent: 1, wantStatus: 401, wantBody: []string{`"id":7`, `upstream answered HTTP 401`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var bodies []string
			var auths []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies, auths = append(bodies, string(b)), append(auths, r.Header.Get("Authorization"))
				mu.Unlock()
				if r.Header.Get("Authorization") != "Bearer new" {
					w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
					http.Error(w, "expired", http.StatusUnauthorized)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"jsonrpc":"2.0","id":7,"result":"ok"}`)
			}))
			t.Cleanup(srv.Close)
			rt := testTransport(t, srv.URL+"/mcp", 1<<20)
			var tok atomic.Value
			tok.Store("old")
			rt.header = func() (http.Header, error) {
				return http.Header{"Authorization": {"Bearer " + tok.Load().(string)}}, nil
			}
			var calls atomic.Int32
			rt.reauth = func(_ context.Context, status int, challenge []string, injected http.Header) (bool, error) {
				calls.Add(1)
				if status != http.StatusUnauthorized || !strings.Contains(strings.Join(challenge, ","), "invalid_token") || injected.Get("Authorization") != "Bearer old" {
					t.Errorf("reauth(%d, %q, %q)", status, challenge, injected.Get("Authorization"))
				}
				if tc.retry {
					tok.Store("new")
				}
				return tc.retry, tc.err
			}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/mcp", bytes.NewReader([]byte(body)))
			req.Header.Set("Content-Type", "application/json")
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, got)
			}
			for _, w := range tc.wantBody {
				if !strings.Contains(string(got), w) {
					t.Errorf("answer %s does not contain %s", got, w)
				}
			}
			if strings.Contains(string(got), "old") || strings.Contains(string(got), "new\"") {
				t.Errorf("answer %s shows a credential", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) != tc.wantSent || calls.Load() != 1 {
				t.Fatalf("sent %d times (reauth called %d), want %d", len(bodies), calls.Load(), tc.wantSent)
			}
			for i, b := range bodies {
				if b != body {
					t.Fatalf("request %d body %q, want the original", i, b)
				}
			}
			if tc.retry && auths[1] != "Bearer new" {
				t.Fatalf("the retry carried %q", auths[1])
			}
		})
	}
}
