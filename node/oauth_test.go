package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/oauthtest"
	"github.com/mcpgw/mcpgw/storage"
)

// TestOAuthConsentAcrossCluster: a consent URL asked of node 1, approved in
// a browser sent back through the public URL to node 2, gives a session
// through node 3 the upstream's token; replaying the callback is refused
// with a page that says so, and exchanges nothing.
func TestOAuthConsentAcrossCluster(t *testing.T) {
	as := oauthtest.NewAS(t)
	up := oauthtest.NewMCP(t, as, nil, nil)
	// The public URL is a load balancer in front of node 2; the nodes'
	// ports are known only once they run.
	var target atomic.Pointer[url.URL]
	lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(lb.Close)
	nodes := startCluster(t, 3, func(c *Config) { c.PublicURL, c.OAuthAllowLoopback = lb.URL, true })
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	u, _ := url.Parse(n2.HTTPURL())
	target.Store(u)

	route := addRoute(t, n1, storage.Route{Name: "docs", URL: up.URL(), Credential: storage.CredentialRequired})
	rule := storage.Rule{ID: "allow-all", Service: "*", Org: "*", Account: "*", Route: "docs", Tool: "*", Effect: "allow"}
	if resp := adminDo(t, n1, http.MethodPost, "/v1/rules", rule); resp.StatusCode != http.StatusOK {
		t.Fatalf("put rule: HTTP %d", resp.StatusCode)
	}
	tok := issueToken(t, n1, "svc-a", []string{"acme"}, "1h")

	resp := adminDo(t, n1, http.MethodPost, "/v1/oauth/url", adminapi.OAuthURLRequest{Org: "acme", Account: "alice", Route: "docs"})
	var consent adminapi.OAuthURL
	json.NewDecoder(resp.Body).Decode(&consent)
	if resp.StatusCode != http.StatusOK || consent.Issuer != as.URL() {
		t.Fatalf("oauth url: HTTP %d, %+v", resp.StatusCode, consent)
	}

	// The browser: follows the authorization server's redirect to the callback.
	var callback string
	browser := &http.Client{CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		callback = r.URL.String()
		return nil
	}}
	open := func(u string) (int, string) {
		t.Helper()
		res, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	status, page := open(consent.URL)
	if status != http.StatusOK || !strings.Contains(page, "Connected") || !strings.HasPrefix(callback, lb.URL+OAuthCallbackPath) {
		t.Fatalf("callback page: HTTP %d, landed on %q:\n%s", status, callback, page)
	}
	cq, _ := url.Parse(callback)
	if strings.Contains(page, cq.Query().Get("code")) || strings.Contains(page, cq.Query().Get("state")) {
		t.Fatal("the callback page shows the code or the state")
	}
	grants := as.Grants()

	waitFor(t, "the credential to reach node 3", func() bool {
		c, err := n3.store.Credential("acme", "alice", "docs")
		return err == nil && c.Kind == "oauth"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway("ws://"+n3.HTTPAddr()), client.WithToken(tok.Token))
	if err != nil {
		t.Fatalf("session through node 3: %v", err)
	}
	defer sess.Close()
	if got := callText(t, ctx, sess, "echo", "with consent"); got != "with consent" {
		t.Fatalf("echo through node 3 = %q", got)
	}

	// Replays, through node 2 and straight to node 3: refused, nothing exchanged.
	for _, base := range []string{lb.URL, n3.HTTPURL()} {
		status, page = open(base + OAuthCallbackPath + "?" + cq.RawQuery)
		if status != http.StatusGone || !strings.Contains(page, "already used or has expired") {
			t.Fatalf("replay via %s: HTTP %d:\n%s", base, status, page)
		}
	}
	if as.Grants() != grants {
		t.Fatalf("a replay exchanged the code again: %d grants, want %d", as.Grants(), grants)
	}

	// The library: a service asks node 1 for bob's link with its own
	// token, and finishes by hand through node 2.
	link, err := client.AuthorizationURL(ctx, up.URL(), "acme", "bob", client.WithGateway("ws://"+n1.HTTPAddr()), client.WithToken(tok.Token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.AuthorizationURL(ctx, up.URL(), "other", "bob", client.WithGateway("ws://"+n1.HTTPAddr()), client.WithToken(tok.Token)); err == nil || !strings.Contains(err.Error(), `may not act for org "other"`) {
		t.Fatalf("link for an org the token lacks: %v", err)
	}
	stop := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := stop.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	back, _ := url.Parse(res.Header.Get("Location"))
	if err := client.CompleteOAuthQuery(ctx, back.Query(), client.WithGateway("ws://"+n2.HTTPAddr()), client.WithToken(tok.Token)); err != nil {
		t.Fatal(err)
	}
	if err := client.CompleteOAuth(ctx, back.Query().Get("state"), back.Query().Get("code"), client.WithGateway("ws://"+n3.HTTPAddr()), client.WithToken(tok.Token)); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second CompleteOAuth: %v", err)
	}
	waitFor(t, "bob's credential to reach node 3", func() bool {
		_, err := n3.store.Credential("acme", "bob", "docs")
		return err == nil
	})
	bob, err := client.Connect(ctx, route.URL, "acme", "bob", client.WithGateway("ws://"+n3.HTTPAddr()), client.WithToken(tok.Token))
	if err != nil {
		t.Fatalf("bob's session through node 3: %v", err)
	}
	defer bob.Close()
	if got := callText(t, ctx, bob, "echo", "bob"); got != "bob" {
		t.Fatalf("bob's echo = %q", got)
	}

	resp = adminDo(t, n3, http.MethodGet, "/v1/oauth/status?org=acme&account=alice&route=docs", nil)
	var st adminapi.OAuthStatus
	json.NewDecoder(resp.Body).Decode(&st)
	if st.State != "connected" || !st.Refreshable {
		t.Fatalf("status on node 3: %+v", st)
	}
}

// TestOAuthClientMetadataDocument: the session listener serves the
// gateway's Client ID Metadata Document, and at an authorization server
// that supports such documents the gateway uses its URL as client_id (no
// dynamic registration); the server fetches the document, accepts the
// callback it names, and the consent completes. With the document
// published elsewhere, that address is the client id.
func TestOAuthClientMetadataDocument(t *testing.T) {
	for _, tc := range []struct {
		name      string
		published bool // the operator publishes the document at another address
	}{
		{name: "served by the gateway"},
		{name: "published elsewhere", published: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := oauthtest.NewAS(t)
			as.Update(func(a *oauthtest.AS) { a.Meta.ClientIDMetadataDocumentSupported = true })
			up := oauthtest.NewMCP(t, as, nil, nil)
			var target atomic.Pointer[url.URL]
			lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
			}))
			t.Cleanup(lb.Close)
			// The other site copies what the gateway serves, as an operator
			// publishing the document would.
			var published atomic.Pointer[[]byte]
			site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/mcpgw/client.json" || published.Load() == nil {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Write(*published.Load())
			}))
			t.Cleanup(site.Close)
			wantID := lb.URL + OAuthClientMetadataPath
			if tc.published {
				wantID = site.URL + "/mcpgw/client.json"
			}
			n := startNode(t, func(c *Config) {
				c.PublicURL, c.OAuthAllowLoopback = lb.URL, true
				if tc.published {
					c.OAuthClientMetadataURL = wantID
				}
			})
			u, _ := url.Parse(n.HTTPURL())
			target.Store(u)

			res, err := http.Get(lb.URL + OAuthClientMetadataPath)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("GET %s: HTTP %d, Content-Type %q", OAuthClientMetadataPath, res.StatusCode, res.Header.Get("Content-Type"))
			}
			published.Store(&body)
			var doc struct {
				ClientID                string   `json:"client_id"`
				ClientName              string   `json:"client_name"`
				RedirectURIs            []string `json:"redirect_uris"`
				GrantTypes              []string `json:"grant_types"`
				ResponseTypes           []string `json:"response_types"`
				TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
			}
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatalf("document is not JSON: %v\n%s", err, body)
			}
			if doc.ClientID != wantID || doc.ClientName != "mcpgw" || strings.Join(doc.RedirectURIs, " ") != lb.URL+OAuthCallbackPath ||
				strings.Join(doc.GrantTypes, " ") != "authorization_code refresh_token" || strings.Join(doc.ResponseTypes, " ") != "code" ||
				doc.TokenEndpointAuthMethod != "none" {
				t.Fatalf("document = %+v, want client_id %s and callback %s", doc, wantID, lb.URL+OAuthCallbackPath)
			}

			route := addRoute(t, n, storage.Route{Name: "docs", URL: up.URL(), Credential: storage.CredentialRequired})
			rule := storage.Rule{ID: "allow-all", Service: "*", Org: "*", Account: "*", Route: "docs", Tool: "*", Effect: "allow"}
			if resp := adminDo(t, n, http.MethodPost, "/v1/rules", rule); resp.StatusCode != http.StatusOK {
				t.Fatalf("put rule: HTTP %d", resp.StatusCode)
			}
			resp := adminDo(t, n, http.MethodPost, "/v1/oauth/url", adminapi.OAuthURLRequest{Org: "acme", Account: "alice", Route: "docs"})
			var consent adminapi.OAuthURL
			json.NewDecoder(resp.Body).Decode(&consent)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("oauth url: HTTP %d, %+v", resp.StatusCode, consent)
			}
			cu, _ := url.Parse(consent.URL)
			if got := cu.Query().Get("client_id"); got != wantID {
				t.Fatalf("consent url client_id = %q, want %q", got, wantID)
			}
			res, err = http.Get(consent.URL)
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || !strings.Contains(string(page), "Connected") {
				t.Fatalf("callback page: HTTP %d:\n%s", res.StatusCode, page)
			}
			as.Mu.Lock()
			fetches, registrations := strings.Join(as.CIMDFetches, " "), as.Hits["/register"]
			as.Mu.Unlock()
			if registrations != 0 || fetches == "" || strings.Trim(strings.ReplaceAll(fetches, wantID, ""), " ") != "" {
				t.Fatalf("authorization server: %d dynamic registrations, fetched %q; want none and only %s", registrations, fetches, wantID)
			}

			tok := issueToken(t, n, "svc-a", []string{"acme"}, "1h")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(tok.Token))
			if err != nil {
				t.Fatalf("session: %v", err)
			}
			defer sess.Close()
			if got := callText(t, ctx, sess, "echo", "via cimd"); got != "via cimd" {
				t.Fatalf("echo = %q", got)
			}
		})
	}
}

// TestOAuthClientMetadataURLChoice: which client id metadata document a
// node offers for its public URL and --oauth-client-metadata-url; an
// address no authorization server would accept as a client id is refused
// at start when the operator named it, and silently not offered when it
// only follows from the public URL.
func TestOAuthClientMetadataURLChoice(t *testing.T) {
	tests := []struct {
		name          string
		base, named   string
		allowLoopback bool
		wantURL       string
		wantErr       string
	}{
		{name: "https public url", base: "https://gw.example", wantURL: "https://gw.example" + OAuthClientMetadataPath},
		{name: "named address", base: "https://gw.internal", named: "https://static.example/mcpgw.json", wantURL: "https://static.example/mcpgw.json"},
		{name: "loopback in development", base: "http://127.0.0.1:8080", allowLoopback: true, wantURL: "http://127.0.0.1:8080" + OAuthClientMetadataPath},
		{name: "plain http public url", base: "http://gw.internal"},
		{name: "named plain http", base: "https://gw.example", named: "http://static.example/mcpgw.json", wantErr: "--oauth-client-metadata-url"},
		{name: "named without a path", base: "https://gw.example", named: "https://static.example/", wantErr: "needs a path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{cfg: Config{OAuthClientMetadataURL: tt.named, OAuthAllowLoopback: tt.allowLoopback}, logger: slog.New(slog.DiscardHandler)}
			err := n.setupCIMD(tt.base, tt.base+OAuthCallbackPath)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("setupCIMD: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.cimdURL != tt.wantURL || (tt.wantURL == "") != (n.cimdDoc == nil) {
				t.Fatalf("offers %q (document %d bytes), want %q", n.cimdURL, len(n.cimdDoc), tt.wantURL)
			}
		})
	}
}
