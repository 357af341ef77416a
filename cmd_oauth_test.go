package main

import (
	"net/http"
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
