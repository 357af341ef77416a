package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fuzzNow is the instant FuzzVerify verifies at; the corpus's valid tokens
// were issued at t0 for an hour.
var fuzzNow = t0.Add(time.Minute)

// fuzzKeyring returns the keyring the FuzzVerify corpus was signed with.
func fuzzKeyring() *Keyring {
	return NewKeyring([]SigningKey{testKey(1, t0.Add(-time.Hour))},
		map[string]time.Time{"fuzz-revoked": t0.Add(time.Hour)}, KeyringOptions{})
}

// fuzzTokens returns the tokens that must verify at fuzzNow, and other seeds.
func fuzzTokens(tb testing.TB) (valid, other []string) {
	ring := fuzzKeyring()
	issue := func(c Claims, now time.Time) string { return mustIssue(tb, ring, c, now) }
	valid = []string{
		issue(Claims{ID: "fuzz-1", Service: "billing", Orgs: []string{"acme"}, ExpiresAt: t0.Add(time.Hour)}, t0),
		issue(Claims{ID: "fuzz-2", Service: "indexer", Orgs: []string{"*", "acme"}, ExpiresAt: t0.Add(time.Hour)}, t0),
	}
	v := valid[0]
	parts := strings.Split(v, ".")
	key := testKey(1, t0)
	kid := map[string]any{"kid": key.ID}
	other = []string{
		"", ".", "..", "...", "a.b.c", "\x00\xff\xfe", "Bearer " + v, v + "\n", v + "=",
		v[:len(v)/2], v[:len(v)-1], parts[0] + "." + parts[1],
		strings.Repeat("eyJ", MaxTokenLen/3+1),
		"a.b." + strings.Repeat("c", MaxTokenLen-4),
		issue(Claims{ID: "fuzz-revoked", Service: "billing", Orgs: []string{"acme"}, ExpiresAt: t0.Add(time.Hour)}, t0),
		issue(Claims{ID: "fuzz-expired", Service: "billing", Orgs: []string{"acme"}, ExpiresAt: t0.Add(-time.Hour)}, t0.Add(-2*time.Hour)),
		signMap(tb, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, validMap()),
		signMap(tb, jwt.SigningMethodHS256, []byte(key.Public), kid, validMap()),
		signMap(tb, jwt.SigningMethodEdDSA, testKey(2, t0).Private, kid, validMap()),
	}
	return valid, other
}

func FuzzVerify(f *testing.F) {
	valid, other := fuzzTokens(f)
	for _, s := range append(valid, other...) {
		f.Add(s)
	}
	ring := fuzzKeyring()
	f.Fuzz(func(t *testing.T, token string) {
		c, err := ring.Verify(token, fuzzNow)
		if err == nil {
			// Only what was issued verifies: no other encoding of a valid
			// token, and no forgery, may be accepted.
			if !slices.Contains(valid, token) {
				t.Fatalf("Verify accepted a token that was never issued: %q -> %+v", token, c)
			}
			if c.ID == "" || c.Service == "" || c.Audience != DefaultAudience || len(c.Orgs) == 0 {
				t.Fatalf("Verify accepted incomplete claims %+v", c)
			}
			return
		}
		if c != nil {
			t.Fatalf("Verify returned claims %+v with error %v", c, err)
		}
		matched := 0
		for _, s := range tokenSentinels {
			if errors.Is(err, s) {
				matched++
			}
		}
		if matched != 1 {
			t.Fatalf("Verify error %q matches %d sentinels, want exactly 1", err, matched)
		}
		if len(token) >= 16 && strings.Contains(err.Error(), token) {
			t.Fatalf("Verify error quotes the token: %q", err)
		}
	})
}
