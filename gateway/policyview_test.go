package gateway

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/policy"
)

// verifiedEntries counts the verified-token cache's entries.
func verifiedEntries(st *policyState) int {
	n := 0
	st.verified.Range(func(any, any) bool { n++; return true })
	return n
}

// TestVerifiedTokenCache: a cached token verifies through the leeway and
// stops at its end, like an uncached one; the count of cached tokens
// follows the entries, so a token re-verified many times never fills the
// cache.
func TestVerifiedTokenCache(t *testing.T) {
	clock := clocktest.New(time.Now())
	n := newTestGateway(t, func(o *Options) { o.Clock = clock.Now })
	tok := n.issueTokenFor(t, "svc", time.Minute, "*")
	st, err := n.policy()
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string, wantErr bool, wantCached int) {
		t.Helper()
		_, err := n.verifyToken(tok)
		if (err != nil) != wantErr {
			t.Fatalf("%s: verifyToken err = %v, want error %v", when, err, wantErr)
		}
		if got := int(st.cached.Load()); got != wantCached || verifiedEntries(st) != wantCached {
			t.Fatalf("%s: cache counts %d, holds %d entries, want %d", when, got, verifiedEntries(st), wantCached)
		}
	}
	check("fresh", false, 1)
	clock.Advance(time.Minute + 10*time.Second) // past exp, inside the 30s leeway
	for range 100 {
		check("inside the leeway", false, 1)
	}
	clock.Advance(21 * time.Second) // past exp + leeway
	check("past the leeway", true, 0)
	if _, err := n.verifyToken(tok); err == nil || !errors.Is(err, policy.ErrTokenExpired) && !strings.Contains(err.Error(), "expired") {
		t.Fatalf("past the leeway: err = %v, want expired", err)
	}

	// A full count would stop caching: a new token must still be cached.
	other := n.issueTokenFor(t, "svc", time.Hour, "*")
	n.putSigningKey(t) // a write: a new view
	st, err = n.policy()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := n.verifyToken(other); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := st.verified.Load(sha256.Sum256([]byte(other))); !ok || st.cached.Load() != 1 {
		t.Fatalf("new token cached=%v, count %d, want cached with count 1", ok, st.cached.Load())
	}
}
