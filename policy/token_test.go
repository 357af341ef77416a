package policy

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

// t0 is the fixed "now" tests start from.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var tokenSentinels = []error{
	ErrTokenMissing, ErrTokenMalformed, ErrTokenSignature, ErrTokenUnknownKey,
	ErrTokenExpired, ErrTokenNotYetValid, ErrTokenRevoked, ErrTokenAudience,
}

// testKey returns a deterministic signing key derived from seed.
func testKey(seed byte, created time.Time) SigningKey {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	return SigningKey{ID: KeyID(pub), Private: priv, Public: pub, Created: created}
}

func mustIssue(t testing.TB, k *Keyring, c Claims, now time.Time) string {
	t.Helper()
	tok, err := k.Issue(c, now)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", c, err)
	}
	return tok
}

// signMap signs arbitrary claims and header fields with method and key,
// for forging tokens the gateway would never issue.
func signMap(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign forged token: %v", err)
	}
	return s
}

// validMap is the claims of a token that would verify at t0.
func validMap() jwt.MapClaims {
	return jwt.MapClaims{
		"jti": "tok-1", "sub": "billing", "aud": "mcpgw", "orgs": []string{"acme"},
		"iat": t0.Add(-time.Minute).Unix(), "exp": t0.Add(time.Hour).Unix(),
	}
}

// nudge returns the next base64url character after c. A signature's last
// character carries unused low bits; changing only those must not be
// accepted as the same token.
func nudge(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// checkTokenError asserts err wraps want and no other token sentinel, and
// does not quote the token.
func checkTokenError(t *testing.T, token string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("Verify error = %v, want %v", err, want)
	}
	for _, s := range tokenSentinels {
		if s != want && errors.Is(err, s) {
			t.Errorf("Verify error %q also matches %q", err, s)
		}
	}
	if msg := err.Error(); len(token) >= 16 && strings.Contains(msg, token) {
		t.Errorf("Verify error quotes the token: %q", msg)
	}
	for _, seg := range strings.Split(token, ".") {
		if len(seg) >= 16 && strings.Contains(err.Error(), seg) {
			t.Errorf("Verify error quotes a token segment: %q", err)
		}
	}
}

func TestNewSigningKey(t *testing.T) {
	k, err := NewSigningKey(t0)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(k.Public)
	if got, want := k.ID, hex.EncodeToString(sum[:])[:16]; got != want {
		t.Errorf("ID = %q, want %q", got, want)
	}
	if !k.Created.Equal(t0) || !k.Retired.IsZero() {
		t.Errorf("Created, Retired = %v, %v; want %v, zero", k.Created, k.Retired, t0)
	}
	if err := k.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	other, err := NewSigningKey(t0)
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == k.ID {
		t.Errorf("two new keys share ID %q", k.ID)
	}
}

func TestSigningKeyValidate(t *testing.T) {
	good := testKey(1, t0)
	other := testKey(2, t0)
	tests := []struct {
		name    string
		key     SigningKey
		wantErr string
	}{
		{"valid", good, ""},
		{"verify only", SigningKey{ID: good.ID, Public: good.Public}, ""},
		{"no id", SigningKey{Public: good.Public}, "must be 1 to 64"},
		{"short public", SigningKey{ID: "k", Public: good.Public[:31]}, "public key is 31 bytes"},
		{"short private", SigningKey{ID: "k", Public: good.Public, Private: good.Private[:63]}, "private key is 63 bytes"},
		{"mismatched halves", SigningKey{ID: "k", Public: good.Public, Private: other.Private}, "do not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValidate(t, tt.key.Validate(), tt.wantErr)
		})
	}
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	key := testKey(1, t0.Add(-time.Hour))
	ring := NewKeyring([]SigningKey{key}, nil, KeyringOptions{})
	tok := mustIssue(t, ring, Claims{ID: "tok-1", Service: "billing", Orgs: []string{"acme", "globex"}, ExpiresAt: t0.Add(time.Hour)}, t0)

	got, err := ring.Verify(tok, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := &Claims{ID: "tok-1", Service: "billing", Orgs: []string{"acme", "globex"}, Audience: "mcpgw", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Verify claims (-want +got):\n%s", diff)
	}

	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parsed.Header["kid"], key.ID; got != want {
		t.Errorf("header kid = %v, want %v", got, want)
	}
	if got, want := parsed.Header["alg"], "EdDSA"; got != want {
		t.Errorf("header alg = %v, want %v", got, want)
	}
}

func TestIssueFillsID(t *testing.T) {
	ring := NewKeyring([]SigningKey{testKey(1, t0)}, nil, KeyringOptions{})
	ids := map[string]bool{}
	for range 2 {
		tok := mustIssue(t, ring, Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
		c, err := ring.Verify(tok, t0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hex.DecodeString(c.ID); err != nil || len(c.ID) != 32 {
			t.Errorf("ID = %q, want 32 hex digits", c.ID)
		}
		ids[c.ID] = true
	}
	if len(ids) != 2 {
		t.Errorf("two issued tokens share an ID: %v", ids)
	}
}

func TestIssueRejects(t *testing.T) {
	ring := NewKeyring([]SigningKey{testKey(1, t0)}, nil, KeyringOptions{MaxTTL: 24 * time.Hour})
	ok := Claims{Service: "s", Orgs: []string{"acme"}, ExpiresAt: t0.Add(time.Hour)}
	with := func(f func(*Claims)) Claims { c := ok; f(&c); return c }
	tests := []struct {
		name    string
		claims  Claims
		wantErr string
	}{
		{"zero ttl", with(func(c *Claims) { c.ExpiresAt = t0 }), "not after issue time"},
		{"negative ttl", with(func(c *Claims) { c.ExpiresAt = t0.Add(-time.Second) }), "not after issue time"},
		{"ttl over max", with(func(c *Claims) { c.ExpiresAt = t0.Add(24*time.Hour + time.Second) }), "lifetime 24h0m1s exceeds the maximum 24h0m0s"},
		{"no expiry", with(func(c *Claims) { c.ExpiresAt = time.Time{} }), "no expiry"},
		{"no service", with(func(c *Claims) { c.Service = "" }), "service name is empty"},
		{"no orgs", with(func(c *Claims) { c.Orgs = nil }), "no orgs"},
		{"empty org", with(func(c *Claims) { c.Orgs = []string{"acme", ""} }), "empty org name"},
		{"long id", with(func(c *Claims) { c.ID = strings.Repeat("x", 65) }), "longer than 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ring.Issue(tt.claims, t0)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Issue() = %q, %v; want error containing %q", tok, err, tt.wantErr)
			}
		})
	}
	if _, err := ring.Issue(with(func(c *Claims) { c.ExpiresAt = t0.Add(24 * time.Hour) }), t0); err != nil {
		t.Errorf("Issue with ttl == MaxTTL: %v", err)
	}
	if _, err := NewKeyring(nil, nil, KeyringOptions{}).Issue(ok, t0); !errors.Is(err, ErrNoSigningKey) {
		t.Errorf("Issue without keys = %v, want %v", err, ErrNoSigningKey)
	}
}

func TestVerifyErrors(t *testing.T) {
	key := testKey(1, t0.Add(-time.Hour))
	stranger := testKey(2, t0.Add(-time.Hour))
	revokedAt := map[string]time.Time{"revoked-1": t0.Add(time.Hour)}
	ring := NewKeyring([]SigningKey{key}, revokedAt, KeyringOptions{})
	strangerRing := NewKeyring([]SigningKey{stranger}, nil, KeyringOptions{})
	otherAud := NewKeyring([]SigningKey{key}, nil, KeyringOptions{Audience: "other-gateway"})

	base := Claims{ID: "tok-1", Service: "billing", Orgs: []string{"acme"}, ExpiresAt: t0.Add(time.Hour)}
	valid := mustIssue(t, ring, base, t0)
	parts := strings.Split(valid, ".")
	kid := map[string]any{"kid": key.ID}

	without := func(claim string) jwt.MapClaims { m := validMap(); delete(m, claim); return m }
	tamperedPayload := func() string {
		m := validMap()
		m["orgs"] = []string{"*"}
		forged := signMap(t, jwt.SigningMethodEdDSA, key.Private, kid, m)
		return parts[0] + "." + strings.Split(forged, ".")[1] + "." + parts[2]
	}
	editSig := func(edit func([]byte) []byte) string {
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatal(err)
		}
		return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(edit(sig))
	}

	tests := []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"missing", "", t0, ErrTokenMissing},
		{"too long", strings.Repeat("a", MaxTokenLen+1), t0, ErrTokenMalformed},
		{"one segment", "abcdefghijklmnopqrstuvwxyz", t0, ErrTokenMalformed},
		{"two segments", parts[0] + "." + parts[1], t0, ErrTokenMalformed},
		{"four segments", valid + "." + parts[2], t0, ErrTokenMalformed},
		{"empty segment", parts[0] + ".." + parts[2], t0, ErrTokenMalformed},
		{"empty signature", parts[0] + "." + parts[1] + ".", t0, ErrTokenMalformed},
		{"bearer prefix", "Bearer " + valid, t0, ErrTokenMalformed},
		{"trailing newline", valid + "\n", t0, ErrTokenMalformed},
		{"base64 padding", parts[0] + "." + parts[1] + "." + parts[2] + "==", t0, ErrTokenMalformed},
		{"standard base64 alphabet", parts[0] + "." + parts[1] + "+/." + parts[2], t0, ErrTokenMalformed},
		{"header bad base64 length", "a." + parts[1] + "." + parts[2], t0, ErrTokenMalformed},
		{"header not json", b64("not json") + "." + parts[1] + "." + parts[2], t0, ErrTokenMalformed},
		{"header json array", b64("[1,2]") + "." + parts[1] + "." + parts[2], t0, ErrTokenMalformed},
		{"payload not json", parts[0] + "." + b64("{\"sub\":") + "." + parts[2], t0, ErrTokenMalformed},
		{"payload orgs not a list", parts[0] + "." + b64(`{"sub":"s","orgs":"acme"}`) + "." + parts[2], t0, ErrTokenMalformed},
		{"truncated", valid[:len(valid)/2], t0, ErrTokenMalformed},
		{"no kid", signMap(t, jwt.SigningMethodEdDSA, key.Private, nil, validMap()), t0, ErrTokenMalformed},
		{"kid not a string", signMap(t, jwt.SigningMethodEdDSA, key.Private, map[string]any{"kid": 7}, validMap()), t0, ErrTokenMalformed},
		{"kid too long", signMap(t, jwt.SigningMethodEdDSA, key.Private, map[string]any{"kid": strings.Repeat("k", 65)}, validMap()), t0, ErrTokenMalformed},
		{"no sub", signMap(t, jwt.SigningMethodEdDSA, key.Private, kid, without("sub")), t0, ErrTokenMalformed},
		{"no jti", signMap(t, jwt.SigningMethodEdDSA, key.Private, kid, without("jti")), t0, ErrTokenMalformed},
		{"no iat", signMap(t, jwt.SigningMethodEdDSA, key.Private, kid, without("iat")), t0, ErrTokenMalformed},
		{"no exp", signMap(t, jwt.SigningMethodEdDSA, key.Private, kid, without("exp")), t0, ErrTokenMalformed},
		{"unknown kid", mustIssue(t, strangerRing, base, t0), t0, ErrTokenUnknownKey},
		{"stranger key claiming our kid", signMap(t, jwt.SigningMethodEdDSA, stranger.Private, kid, validMap()), t0, ErrTokenSignature},
		{"tampered payload", tamperedPayload(), t0, ErrTokenSignature},
		{"flipped signature bit", editSig(func(b []byte) []byte { b[0] ^= 1; return b }), t0, ErrTokenSignature},
		{"short signature", editSig(func(b []byte) []byte { return b[:63] }), t0, ErrTokenSignature},
		{"long signature", editSig(func(b []byte) []byte { return append(b, 0) }), t0, ErrTokenSignature},
		{"non-canonical base64 signature", parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + nudge(parts[2][len(parts[2])-1]), t0, ErrTokenMalformed},
		{"alg none", signMap(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, validMap()) + parts[2], t0, ErrTokenSignature},
		{"alg none unsigned", signMap(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, validMap()), t0, ErrTokenMalformed},
		{"alg HS256 keyed with public key", signMap(t, jwt.SigningMethodHS256, []byte(key.Public), kid, validMap()), t0, ErrTokenSignature},
		{"alg HS256 keyed with key id", signMap(t, jwt.SigningMethodHS256, []byte(key.ID), kid, validMap()), t0, ErrTokenSignature},
		{"alg unknown", b64(`{"alg":"XYZ","kid":"`+key.ID+`"}`) + "." + parts[1] + "." + parts[2], t0, ErrTokenSignature},
		{"alg missing", b64(`{"kid":"`+key.ID+`"}`) + "." + parts[1] + "." + parts[2], t0, ErrTokenSignature},
		{"alg lowercase", b64(`{"alg":"eddsa","kid":"`+key.ID+`"}`) + "." + parts[1] + "." + parts[2], t0, ErrTokenSignature},
		{"expired at leeway end", valid, t0.Add(time.Hour + DefaultLeeway), ErrTokenExpired},
		{"expired long ago", valid, t0.Add(48 * time.Hour), ErrTokenExpired},
		{"issued in the future", valid, t0.Add(-DefaultLeeway - time.Nanosecond), ErrTokenNotYetValid},
		{"nbf in the future", signMap(t, jwt.SigningMethodEdDSA, key.Private, kid, func() jwt.MapClaims {
			m := validMap()
			m["nbf"] = t0.Add(time.Minute).Unix()
			return m
		}()), t0, ErrTokenNotYetValid},
		{"revoked", mustIssue(t, ring, Claims{ID: "revoked-1", Service: "billing", Orgs: []string{"acme"}, ExpiresAt: t0.Add(time.Hour)}, t0), t0, ErrTokenRevoked},
		{"wrong audience", mustIssue(t, otherAud, base, t0), t0, ErrTokenAudience},
		{"audience for other gateway set explicitly", mustIssue(t, ring, Claims{Service: "s", Orgs: []string{"*"}, Audience: "elsewhere", ExpiresAt: t0.Add(time.Hour)}, t0), t0, ErrTokenAudience},
		{"no audience", signMap(t, jwt.SigningMethodEdDSA, key.Private, kid, without("aud")), t0, ErrTokenAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ring.Verify(tt.token, tt.now)
			if err == nil {
				t.Fatalf("Verify() = %+v, nil; want %v", c, tt.want)
			}
			if c != nil {
				t.Errorf("Verify() returned claims %+v with error", c)
			}
			checkTokenError(t, tt.token, err, tt.want)
		})
	}
}

func TestVerifyTimeBoundaries(t *testing.T) {
	ring := NewKeyring([]SigningKey{testKey(1, t0)}, nil, KeyringOptions{Leeway: 10 * time.Second})
	noLeeway := NewKeyring([]SigningKey{testKey(1, t0)}, nil, KeyringOptions{Leeway: -1})
	tok := mustIssue(t, ring, Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	tests := []struct {
		name string
		ring *Keyring
		now  time.Time
		want error
	}{
		{"at issue", ring, t0, nil},
		{"leeway before issue", ring, t0.Add(-10 * time.Second), nil},
		{"just beyond leeway before issue", ring, t0.Add(-10*time.Second - time.Nanosecond), ErrTokenNotYetValid},
		{"last instant within leeway after expiry", ring, t0.Add(time.Hour + 10*time.Second - time.Nanosecond), nil},
		{"leeway after expiry", ring, t0.Add(time.Hour + 10*time.Second), ErrTokenExpired},
		{"no leeway: just before expiry", noLeeway, t0.Add(time.Hour - time.Nanosecond), nil},
		{"no leeway: at expiry", noLeeway, t0.Add(time.Hour), ErrTokenExpired},
		{"no leeway: before issue", noLeeway, t0.Add(-time.Nanosecond), ErrTokenNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ring.Verify(tok, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify() = %v, want nil", err)
				}
				return
			}
			checkTokenError(t, tok, err, tt.want)
		})
	}
}

func TestVerifyErrorText(t *testing.T) {
	ring := NewKeyring([]SigningKey{testKey(1, t0)}, map[string]time.Time{"r1": t0.Add(time.Hour)}, KeyringOptions{})
	tok := mustIssue(t, ring, Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	_, err := ring.Verify(tok, t0.Add(2*time.Hour))
	if got, want := err.Error(), "service token expired at 2026-03-01T13:00:00Z; issue a new one with `mcpgw token issue`"; got != want {
		t.Errorf("expired error = %q, want %q", got, want)
	}
	revoked := mustIssue(t, ring, Claims{ID: "r1", Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	_, err = ring.Verify(revoked, t0)
	if got, want := err.Error(), "service token r1 for service \"s\" was revoked; issue a new one with `mcpgw token issue`"; got != want {
		t.Errorf("revoked error = %q, want %q", got, want)
	}
	if _, err := ring.Verify("", t0); err != ErrTokenMissing {
		t.Errorf("empty token error = %v, want ErrTokenMissing itself", err)
	}
}

func TestKeyRotation(t *testing.T) {
	const maxTTL = 24 * time.Hour
	opts := KeyringOptions{MaxTTL: maxTTL, Leeway: -1}
	oldKey := testKey(1, t0.Add(-48*time.Hour))
	newKey := testKey(2, t0.Add(-time.Hour))

	before := NewKeyring([]SigningKey{oldKey}, nil, opts)
	oldTok := mustIssue(t, before, Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(20 * time.Hour)}, t0.Add(-2*time.Hour))
	// A token outliving the old key's window can only come from a keyring
	// with a longer MaxTTL; it shows the key itself stops verifying.
	longTok := mustIssue(t, NewKeyring([]SigningKey{oldKey}, nil, KeyringOptions{MaxTTL: 72 * time.Hour}),
		Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(40 * time.Hour)}, t0.Add(-2*time.Hour))

	retired := oldKey
	retired.Retired = t0.Add(-time.Hour)
	after := NewKeyring([]SigningKey{retired, newKey}, nil, opts)
	keyGone := retired.Retired.Add(maxTTL) // t0+23h

	if got, want := after.ActiveKeyID(), newKey.ID; got != want {
		t.Errorf("ActiveKeyID() = %q, want the new key %q", got, want)
	}
	newTok := mustIssue(t, after, Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	parsed, _, err := jwt.NewParser().ParseUnverified(newTok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parsed.Header["kid"], newKey.ID; got != want {
		t.Errorf("new token kid = %v, want %v", got, want)
	}
	if _, err := before.Verify(newTok, t0); !errors.Is(err, ErrTokenUnknownKey) {
		t.Errorf("old keyring verifying new-key token = %v, want ErrTokenUnknownKey", err)
	}

	tests := []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"new token", newTok, t0, nil},
		{"old token after rotation", oldTok, t0, nil},
		{"old token until its expiry", oldTok, t0.Add(20*time.Hour - time.Nanosecond), nil},
		{"old token at its expiry", oldTok, t0.Add(20 * time.Hour), ErrTokenExpired},
		{"long token within key window", longTok, keyGone.Add(-time.Nanosecond), nil},
		{"long token once key window closed", longTok, keyGone, ErrTokenUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := after.Verify(tt.token, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify() = %v, want nil", err)
				}
				return
			}
			checkTokenError(t, tt.token, err, tt.want)
		})
	}

	if got := after.Obsolete(keyGone.Add(-time.Nanosecond)); len(got) != 0 {
		t.Errorf("Obsolete(before window end) = %v, want none", got)
	}
	if diff := cmp.Diff([]string{oldKey.ID}, after.Obsolete(keyGone)); diff != "" {
		t.Errorf("Obsolete(window end) (-want +got):\n%s", diff)
	}
}

func TestActiveKeySelection(t *testing.T) {
	a := testKey(1, t0.Add(-2*time.Hour))
	b := testKey(2, t0.Add(-time.Hour))
	c := testKey(3, t0)
	verifyOnly := SigningKey{ID: c.ID, Public: c.Public, Created: c.Created}
	bad := testKey(4, t0.Add(time.Hour))
	bad.Public = bad.Public[:16]
	retiredNewest := testKey(5, t0.Add(2*time.Hour))
	retiredNewest.Retired = t0.Add(3 * time.Hour)

	tests := []struct {
		name string
		keys []SigningKey
		want string
	}{
		{"newest created wins", []SigningKey{b, a}, b.ID},
		{"order does not matter", []SigningKey{a, b}, b.ID},
		{"verify-only keys never sign", []SigningKey{a, verifyOnly}, a.ID},
		{"invalid keys are left out", []SigningKey{a, bad}, a.ID},
		{"retired keys never sign", []SigningKey{a, retiredNewest}, a.ID},
		{"public half derived from private", []SigningKey{{ID: b.ID, Private: b.Private, Created: b.Created}}, b.ID},
		{"none", []SigningKey{verifyOnly}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewKeyring(tt.keys, nil, KeyringOptions{}).ActiveKeyID(); got != tt.want {
				t.Errorf("ActiveKeyID() = %q, want %q", got, tt.want)
			}
		})
	}

	// A verify-only copy of a key verifies what the signing copy issued.
	signer := NewKeyring([]SigningKey{c}, nil, KeyringOptions{})
	tok := mustIssue(t, signer, Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	if _, err := NewKeyring([]SigningKey{verifyOnly}, nil, KeyringOptions{}).Verify(tok, t0); err != nil {
		t.Errorf("verify-only keyring: %v", err)
	}
	badSigner := testKey(4, t0)
	tok = mustIssue(t, NewKeyring([]SigningKey{badSigner}, nil, KeyringOptions{}), Claims{Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	if _, err := NewKeyring([]SigningKey{bad}, nil, KeyringOptions{}).Verify(tok, t0); !errors.Is(err, ErrTokenUnknownKey) {
		t.Errorf("keyring whose only key is invalid: %v, want ErrTokenUnknownKey", err)
	}
}

func TestKeyringCopiesRevocations(t *testing.T) {
	revoked := map[string]time.Time{}
	ring := NewKeyring([]SigningKey{testKey(1, t0)}, revoked, KeyringOptions{})
	revoked["tok-1"] = t0.Add(time.Hour)
	tok := mustIssue(t, ring, Claims{ID: "tok-1", Service: "s", Orgs: []string{"*"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	if _, err := ring.Verify(tok, t0); err != nil {
		t.Errorf("Verify after mutating the caller's map = %v, want nil (snapshot is immutable)", err)
	}
}

func TestClaimsAllowsOrg(t *testing.T) {
	tests := []struct {
		name   string
		claims *Claims
		org    string
		want   bool
	}{
		{"listed", &Claims{Orgs: []string{"acme", "globex"}}, "globex", true},
		{"not listed", &Claims{Orgs: []string{"acme"}}, "globex", false},
		{"wildcard", &Claims{Orgs: []string{"*"}}, "anything", true},
		{"empty org never", &Claims{Orgs: []string{"*"}}, "", false},
		{"no orgs", &Claims{}, "acme", false},
		{"nil claims", nil, "acme", false},
		{"case sensitive", &Claims{Orgs: []string{"Acme"}}, "acme", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.claims.AllowsOrg(tt.org); got != tt.want {
				t.Errorf("AllowsOrg(%q) = %v, want %v", tt.org, got, tt.want)
			}
		})
	}
}

// TestCheckAgreesWithVerify: Check refuses verified claims exactly when
// Verify would refuse their token: once revoked, and from expiry plus the
// leeway on.
func TestCheckAgreesWithVerify(t *testing.T) {
	key := testKey(1, t0.Add(-time.Hour))
	c := Claims{ID: "tok-1", Service: "billing", Orgs: []string{"acme"}, ExpiresAt: t0.Add(time.Hour)}
	tok := mustIssue(t, NewKeyring([]SigningKey{key}, nil, KeyringOptions{}), c, t0)
	for _, tc := range []struct {
		name    string
		revoked map[string]time.Time
		leeway  time.Duration
		at      time.Time
		want    error
	}{
		{"valid", nil, 0, t0, nil},
		{"past exp inside the default leeway", nil, 0, t0.Add(time.Hour + 29*time.Second), nil},
		{"at exp plus the default leeway", nil, 0, t0.Add(time.Hour + DefaultLeeway), ErrTokenExpired},
		{"past exp with no leeway", nil, -1, t0.Add(time.Hour), ErrTokenExpired},
		{"inside a longer leeway", nil, time.Minute, t0.Add(time.Hour + 59*time.Second), nil},
		{"revoked", map[string]time.Time{"tok-1": c.ExpiresAt}, 0, t0, ErrTokenRevoked},
		{"another token revoked", map[string]time.Time{"tok-2": c.ExpiresAt}, 0, t0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ring := NewKeyring([]SigningKey{key}, tc.revoked, KeyringOptions{Leeway: tc.leeway})
			_, verr := ring.Verify(tok, tc.at)
			if !errors.Is(verr, tc.want) || (tc.want == nil) != (verr == nil) {
				t.Fatalf("Verify = %v, want %v", verr, tc.want)
			}
			// Claims verified earlier, before any revocation.
			verified, err := NewKeyring([]SigningKey{key}, nil, KeyringOptions{}).Verify(tok, t0)
			if err != nil {
				t.Fatal(err)
			}
			cerr := ring.Check(verified, tc.at)
			if !errors.Is(cerr, tc.want) || (tc.want == nil) != (cerr == nil) {
				t.Fatalf("Check = %v, want %v", cerr, tc.want)
			}
			if verr != nil && cerr.Error() != verr.Error() {
				t.Fatalf("Check says %q, Verify says %q", cerr, verr)
			}
		})
	}
}
