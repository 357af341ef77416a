package node

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/storage"
)

// TestAdminAPIRefusals: the admin API a node serves checks routes with the
// data path's validation and names the node's token file; the HTTP-layer
// refusals themselves are adminapi's tests.
func TestAdminAPIRefusals(t *testing.T) {
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "kept", URL: "http://127.0.0.1:9/mcp"})
	tests := []struct {
		name    string
		method  string
		path    string
		auth    string // Authorization header; "<token>" is replaced by the node's
		body    string
		status  int
		message []string
	}{
		{name: "no token", method: http.MethodGet, path: "/v1/routes",
			status: http.StatusUnauthorized, message: []string{"admin token missing or wrong", "Authorization: Bearer", AdminTokenFile}},
		{name: "bad name", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a/b","url":"http://127.0.0.1:9/"}`,
			status: http.StatusBadRequest, message: []string{`route name "a/b" is invalid`}},
		{name: "ws URL with streamable transport", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a","url":"ws://127.0.0.1:9/","transport":"streamable"}`,
			status: http.StatusBadRequest, message: []string{`route "a": transport streamable needs a http:// or https:// URL`, `"ws://127.0.0.1:9/"`}},
		{name: "stdio without command", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a","transport":"stdio"}`,
			status: http.StatusBadRequest, message: []string{"stdio route needs a command", "mcpgw route add <name> --transport stdio --"}},
		{name: "unknown transport", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a","url":"http://127.0.0.1:9/","transport":"grpc"}`,
			status: http.StatusBadRequest, message: []string{`route transport "grpc" is invalid`}},
		{name: "credentials in the URL", method: http.MethodPost, path: "/v1/routes", auth: "Bearer <token>", body: `{"name":"a","url":"http://u:pw@127.0.0.1:9/"}`,
			status: http.StatusBadRequest, message: []string{"credentials in URLs are refused", "mcpgw vault put"}},
		{name: "delete unknown", method: http.MethodDelete, path: "/v1/routes/nope", auth: "Bearer <token>",
			status: http.StatusNotFound, message: []string{`no route named "nope"`, "mcpgw route list"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testContext(t, 10e9), tc.method, "http://"+n.AdminAddr()+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", strings.ReplaceAll(tc.auth, "<token>", n.AdminToken()))
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
			var e adminapi.ErrorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("body %q is not an admin error: %v", body, err)
			}
			checkMessage(t, e.Error, tc.message...)
			if strings.Contains(e.Error, n.AdminToken()) {
				t.Fatalf("error %q contains the admin token", e.Error)
			}
		})
	}

	// Nothing refused above changed the routes.
	resp := adminDo(t, n, http.MethodGet, "/v1/routes", nil)
	var routes []storage.Route
	json.NewDecoder(resp.Body).Decode(&routes)
	if len(routes) != 1 || routes[0].Name != "kept" {
		t.Fatalf("routes after refusals = %+v, want only %q", routes, "kept")
	}
}

func TestAdminOpenEndpoints(t *testing.T) {
	n := startNode(t)
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get("http://" + n.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Errorf("GET %s without a token: HTTP %d, want %d", path, got, want)
		}
	}
}

func TestAdminPprof(t *testing.T) {
	tests := []struct {
		name   string
		pprof  bool
		path   string
		token  bool
		status int
	}{
		{name: "off: not mounted", path: "/debug/pprof/", token: true, status: http.StatusNotFound},
		{name: "off: a profile is not mounted either", path: "/debug/pprof/heap", token: true, status: http.StatusNotFound},
		{name: "on: index with the token", pprof: true, path: "/debug/pprof/", token: true, status: http.StatusOK},
		{name: "on: heap profile with the token", pprof: true, path: "/debug/pprof/heap?debug=1", token: true, status: http.StatusOK},
		{name: "on: goroutines with the token", pprof: true, path: "/debug/pprof/goroutine?debug=1", token: true, status: http.StatusOK},
		{name: "on: cmdline with the token", pprof: true, path: "/debug/pprof/cmdline", token: true, status: http.StatusOK},
		{name: "on: index without the token", pprof: true, path: "/debug/pprof/", status: http.StatusUnauthorized},
		{name: "on: profile without the token", pprof: true, path: "/debug/pprof/profile?seconds=1", status: http.StatusUnauthorized},
		{name: "on: heap without the token", pprof: true, path: "/debug/pprof/heap", status: http.StatusUnauthorized},
	}
	nodes := map[bool]*Node{
		false: startNode(t),
		true:  startNode(t, func(c *Config) { c.Pprof = true }),
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := nodes[tc.pprof]
			req, err := http.NewRequestWithContext(testContext(t, 10e9), http.MethodGet, "http://"+n.AdminAddr()+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.token {
				req.Header.Set("Authorization", "Bearer "+n.AdminToken())
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got, want := resp.StatusCode, tc.status; got != want {
				t.Fatalf("GET %s: HTTP %d (%.200s), want %d", tc.path, got, body, want)
			}
			if tc.status == http.StatusUnauthorized {
				checkMessage(t, string(body), "admin token missing or wrong")
			}
		})
	}
}

// TestVaultRotationWithoutKeyFile: a node started without a key file
// cannot rotate the key-encryption key, which lives in that file. That is
// its setup, not a server fault: 409 (it answered 500), saying what to
// start it with.
func TestVaultRotationWithoutKeyFile(t *testing.T) {
	n := startNode(t, func(c *Config) { c.VaultKeyFile = "" })
	resp := adminDo(t, n, http.MethodPost, "/v1/vault/rotate-kek", nil)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if got, want := resp.StatusCode, http.StatusConflict; got != want {
		t.Fatalf("HTTP %d (%s), want %d", got, body, want)
	}
	var e adminapi.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not an admin error: %v", body, err)
	}
	if got, want := e.Error, "rotate vault key-encryption key: this node was started without a vault key file; rotating the key-encryption key needs one (--vault-key)"; got != want {
		t.Fatalf("error %q, want %q", got, want)
	}
}
