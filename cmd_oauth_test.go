package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/internal/oauthtest"
	"github.com/mcpgw/mcpgw/node"
)

// TestOAuthCommands: url prints a sign-in link; a browser that cannot
// reach the gateway's callback hands its address to complete; status shows
// the account connected with its issuer; a second complete is refused; revoke deletes.
func TestOAuthCommands(t *testing.T) {
	as := oauthtest.NewAS(t)
	up := oauthtest.NewMCP(t, as, nil, nil)
	const public = "http://127.0.0.1:1"
	n := startTestNode(t, func(c *node.Config) { c.PublicURL, c.OAuthAllowLoopback = public, true })
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	if _, _, err := runCLI(t, append([]string{"route", "add"}, append(admin, "docs", up.URL())...)...); err != nil {
		t.Fatal(err)
	}
	target := append(admin, "--org", "acme", "--account", "alice", "--route", "docs")
	run := func(args ...string) (string, error) {
		t.Helper()
		out, _, err := runCLI(t, args...)
		return out, err
	}

	link, err := run(append([]string{"oauth", "url"}, target...)...)
	if err != nil || !strings.HasPrefix(link, as.URL()+"/authorize?") {
		t.Fatalf("oauth url = %q, %v", link, err)
	}
	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := browser.Get(strings.TrimSpace(link))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	callback := res.Header.Get("Location")
	if !strings.HasPrefix(callback, public+node.OAuthCallbackPath+"?") {
		t.Fatalf("sent back to %q", callback)
	}

	out, err := run(append([]string{"oauth", "complete"}, append(admin, callback)...)...)
	if err != nil || out != "account alice of org acme connected to route docs (issuer "+as.URL()+")\n" {
		t.Fatalf("oauth complete = %q, %v", out, err)
	}
	out, err = run(append([]string{"oauth", "status"}, target...)...)
	if err != nil || !strings.Contains(out, "state:        connected\n") || !strings.Contains(out, "refreshable:  true\n") || !strings.Contains(out, "issuer:       "+as.URL()+"\n") {
		t.Fatalf("oauth status = %q, %v", out, err)
	}
	if _, err = run(append([]string{"oauth", "complete"}, append(admin, callback)...)...); err == nil || !strings.Contains(err.Error(), "already used or has expired") {
		t.Fatalf("second complete: %v", err)
	}
	if out, err = run(append([]string{"oauth", "revoke"}, target...)...); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("oauth revoke = %q, %v", out, err)
	}
	out, err = run(append([]string{"oauth", "status"}, target...)...)
	if err != nil || !strings.Contains(out, "needs consent") {
		t.Fatalf("status after revoke = %q, %v", out, err)
	}
}

// TestOAuthClientAdd: a client registered by hand, with its secret from a
// file, is found by the route's authorization server and used by the next
// sign-in link; the secret is never printed.
func TestOAuthClientAdd(t *testing.T) {
	as := oauthtest.NewAS(t)
	as.Update(func(a *oauthtest.AS) { a.Meta.RegistrationEndpoint = "" })
	up := oauthtest.NewMCP(t, as, nil, nil)
	n := startTestNode(t, func(c *node.Config) { c.PublicURL, c.OAuthAllowLoopback = "http://127.0.0.1:1", true })
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	if _, _, err := runCLI(t, append([]string{"route", "add"}, append(admin, "docs", up.URL())...)...); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("hand-made-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, append([]string{"oauth", "client", "add"}, append(admin, "--client-id", "by-hand")...)...); err == nil || !strings.Contains(err.Error(), "one of --route and --issuer") {
		t.Fatalf("add without --route or --issuer: %v", err)
	}
	out, _, err := runCLI(t, append([]string{"oauth", "client", "add"}, append(admin, "--route", "docs", "--client-id", "by-hand", "--client-secret-file", secret)...)...)
	if want := "client by-hand used at " + as.URL() + " (secret sealed in the vault)\n"; err != nil || out != want {
		t.Fatalf("oauth client add = %q, %v; want %q", out, err, want)
	}
	link, _, err := runCLI(t, append([]string{"oauth", "url"}, append(admin, "--org", "acme", "--account", "alice", "--route", "docs")...)...)
	if err != nil || !strings.Contains(link, "client_id=by-hand") {
		t.Fatalf("oauth url = %q, %v; want the pre-registered client", link, err)
	}
}
