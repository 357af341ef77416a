package adminapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fuzzEndpoints are the endpoints FuzzRequests sends bodies and queries to.
var fuzzEndpoints = []struct{ method, path string }{
	{http.MethodPost, "/v1/routes"},
	{http.MethodPut, "/v1/credentials"},
	{http.MethodDelete, "/v1/credentials"},
	{http.MethodPost, "/v1/tokens"},
	{http.MethodPost, "/v1/rules"},
	{http.MethodPost, "/v1/limits"},
	{http.MethodGet, "/v1/audit"},
	{http.MethodPost, "/v1/cluster/join"},
	{http.MethodPost, "/v1/cluster/remove"},
	{http.MethodDelete, "/v1/routes/x"},
}

// FuzzRequests: whatever body and query an admin sends, the API answers
// without a server fault: a success, or a refusal whose JSON body says
// what was wrong.
func FuzzRequests(f *testing.F) {
	f.Add(uint8(0), "", `{"name":"echo","url":"http://127.0.0.1:9/mcp"}`)
	f.Add(uint8(1), "", `{"org":"acme","account":"alice","route":"echo","kind":"bearer","secret":"t"}`)
	f.Add(uint8(2), "org=acme&account=alice&route=echo", ``)
	f.Add(uint8(3), "", `{"service":"billing","orgs":["*"],"ttl":"1h"}`)
	f.Add(uint8(4), "", `{"id":"r1","service":"*","org":"*","account":"*","route":"*","tool":"*","effect":"deny"}`)
	f.Add(uint8(5), "", `{"id":"l1","service":"*","org":"*","account":"*","route":"*","tool":"*","rate":1,"burst":1,"pool":"org"}`)
	f.Add(uint8(6), "since=1h&until=2026-03-01T12:00:00Z&kind=tool_call&limit=5&order=oldest", ``)
	f.Add(uint8(7), "", `{"id":"n2","addr":"127.0.0.1:1"}`)
	f.Add(uint8(8), "", `{"id":""}`)
	f.Add(uint8(9), "", `{"name":`)
	a := startAPI(f, "")
	f.Fuzz(func(t *testing.T, which uint8, query, body string) {
		ep := fuzzEndpoints[int(which)%len(fuzzEndpoints)]
		target := ep.path
		if query != "" && !strings.ContainsAny(query, "# \x00") {
			target += "?" + query
		}
		req, err := http.NewRequest(ep.method, "http://admin"+target, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		a.h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s %q: HTTP %d %s", ep.method, target, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var e ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s %s %q: HTTP %d with body %q, want an error message", ep.method, target, body, rec.Code, rec.Body)
			}
		}
	})
}
