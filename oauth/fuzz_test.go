package oauth

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzParseChallenge: WWW-Authenticate comes from any upstream. Parsing
// never panics, errors wrap ErrDiscovery, and a parse is stable.
func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", scope="read write"`)
	f.Add(`Bearer error="insufficient_scope", scope="files:write", error_description="need write"`)
	f.Add(`Basic realm="x", Bearer realm="y", resource_metadata="https://a/b"`)
	f.Add(`Bearer`)
	f.Add(`Bearer scope="unterminated`)
	f.Add(`Bearer a="\"quoted, comma\"", b=c`)
	f.Fuzz(func(t *testing.T, h string) {
		c, err := ParseChallengeValues([]string{h})
		if err != nil {
			if !errors.Is(err, ErrDiscovery) {
				t.Fatalf("error %v does not wrap ErrDiscovery", err)
			}
			return
		}
		for _, s := range c.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\n") {
				t.Fatalf("scope %q is empty or has spaces", s)
			}
		}
		c2, err := ParseChallengeValues([]string{h})
		if err != nil || c2.Error != c.Error || c2.ResourceMetadata != c.ResourceMetadata || strings.Join(c2.Scopes, " ") != strings.Join(c.Scopes, " ") {
			t.Fatal("parse is not stable")
		}
		if up, ok := StepUpScopes(c, []string{"a"}); ok && len(up) < 1 {
			t.Fatal("step-up lost a granted scope")
		}
	})
}

// FuzzParseTokenResponse: token responses come from upstream servers.
func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"at","token_type":"Bearer","expires_in":3600,"refresh_token":"rt","scope":"a b"}`))
	f.Add([]byte(`{"access_token":"at","token_type":"bearer","expires_in":"3600"}`))
	f.Add([]byte(`{"access_token":"at","token_type":"DPoP"}`))
	f.Add([]byte(`{"access_token":"","token_type":"Bearer"}`))
	f.Add([]byte(`{"access_token":"at","expires_in":-1}`))
	f.Add([]byte(`[]`))
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := parseTokenResponse(b, now)
		if err != nil {
			if !errors.Is(err, ErrTokenEndpoint) {
				t.Fatalf("error %v does not wrap ErrTokenEndpoint", err)
			}
			if s := string(b); len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatal("error repeats the response body")
			}
			return
		}
		if tok.AccessToken == "" || tok.TokenType != "Bearer" {
			t.Fatalf("accepted token without access token or non-bearer: %q", tok.TokenType)
		}
		if !tok.Expiry.IsZero() && tok.Expiry.Before(now) {
			t.Fatal("expiry in the past")
		}
	})
}

// FuzzCheckURL: every URL an upstream names goes through CheckURL. A URL it
// accepts without the loopback flag is https with a host, and a literal
// address in it passes CheckAddr.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://as.example/token", "http://127.0.0.1:1/x", "https://169.254.169.254/", "https://[::ffff:a9fe:a9fe]/", "https://[fe80::1%25eth0]/", "https://u:p@h/", "//h/x", "HTTPS://AS.EXAMPLE"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckURL(s, false)
		if err != nil {
			if !errors.Is(err, ErrURLNotAllowed) && !errors.Is(err, ErrAddressNotAllowed) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if !strings.HasPrefix(strings.ToLower(s), "https:") {
			t.Fatalf("accepted non-https %q", s)
		}
		if ip, perr := netip.ParseAddr(strings.Trim(hostOf(s), "[]")); perr == nil {
			if CheckAddr(ip, false) != nil {
				t.Fatalf("accepted %q with a refused address", s)
			}
		}
	})
}

func hostOf(s string) string {
	s = s[strings.Index(s, ":")+1:]
	s = strings.TrimPrefix(s, "//")
	if i := strings.IndexAny(s, "/?#"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.LastIndex(s, "]"); i >= 0 {
		return s[:i+1]
	}
	if i := strings.LastIndex(s, ":"); i >= 0 {
		return s[:i]
	}
	return s
}
