package policy

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// DefaultAudience is the audience (aud) tokens are issued for and checked
	// against when KeyringOptions.Audience is empty.
	DefaultAudience = "mcpgw"
	// DefaultMaxTTL is the longest token lifetime when KeyringOptions.MaxTTL
	// is zero.
	DefaultMaxTTL = 30 * 24 * time.Hour
	// DefaultLeeway is the clock skew tolerated between issuer and verifier
	// when KeyringOptions.Leeway is zero.
	DefaultLeeway = 30 * time.Second
	// MaxTokenLen is the longest token Verify will parse. Issued tokens are a
	// few hundred bytes; the cap bounds the work an unauthenticated caller can
	// cause.
	MaxTokenLen = 8 << 10

	// maxIDLen bounds key IDs and token IDs so that they stay printable in
	// error messages and audit records.
	maxIDLen = 64
	// algEdDSA is the only signing algorithm accepted.
	algEdDSA = "EdDSA"
	// issueHint tells a user how to recover from most token errors.
	issueHint = "issue a new one with `mcpgw token issue`"
)

// Errors returned by Verify. Each is wrapped with details, so test with
// errors.Is. None of them, wrapped or not, contains the token.
var (
	ErrTokenMissing     = errors.New("service token missing; present one issued by `mcpgw token issue`")
	ErrTokenMalformed   = errors.New("service token malformed; pass the token exactly as `mcpgw token issue` printed it")
	ErrTokenSignature   = errors.New("service token signature invalid; " + issueHint)
	ErrTokenUnknownKey  = errors.New("service token signed by a key this gateway does not know; " + issueHint)
	ErrTokenExpired     = errors.New("service token expired; " + issueHint)
	ErrTokenNotYetValid = errors.New("service token not yet valid; check the clocks of the issuer and this node")
	ErrTokenRevoked     = errors.New("service token revoked; " + issueHint)
	ErrTokenAudience    = errors.New("service token issued for another audience; " + issueHint + " for this gateway")
)

// ErrNoSigningKey is returned by Issue when the keyring has no active
// signing key.
var ErrNoSigningKey = errors.New("no active service-token signing key; create one with `mcpgw token rotate-key`")

// tokenError carries a complete, user-facing message and the sentinel it
// belongs to. The message is built from fixed text and values that are safe
// to show; it never includes the token.
type tokenError struct {
	kind error
	msg  string
}

func (e *tokenError) Error() string { return e.msg }
func (e *tokenError) Unwrap() error { return e.kind }

func tokenErr(kind error, format string, args ...any) error {
	return &tokenError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Claims are the facts a service token asserts.
type Claims struct {
	ID        string    // token id (jti): 128-bit random, hex; the handle used to revoke it
	Service   string    // service name (sub)
	Orgs      []string  // orgs the service may act for; "*" means any
	Audience  string    // aud; the keyring's audience when empty at issue
	IssuedAt  time.Time // iat; set by Issue
	ExpiresAt time.Time // exp
}

// AllowsOrg reports whether the token lets its service act for org.
func (c *Claims) AllowsOrg(org string) bool {
	if c == nil || org == "" {
		return false
	}
	for _, o := range c.Orgs {
		if o == "*" || o == org {
			return true
		}
	}
	return false
}

// SigningKey is an Ed25519 key that signs service tokens.
type SigningKey struct {
	ID      string             // KeyID(Public); the JWT header kid
	Private ed25519.PrivateKey // nil in a verify-only keyring
	Public  ed25519.PublicKey
	Created time.Time
	Retired time.Time // zero while the key is active
}

// NewSigningKey creates a fresh active key from crypto/rand.
func NewSigningKey(now time.Time) (SigningKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	return SigningKey{ID: KeyID(pub), Private: priv, Public: pub, Created: now}, nil
}

// KeyID returns the ID of a public key: the first 8 bytes of its SHA-256,
// in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Validate reports whether the key material is usable.
func (k SigningKey) Validate() error {
	if k.ID == "" || len(k.ID) > maxIDLen {
		return fmt.Errorf("signing key id %q must be 1 to %d characters", k.ID, maxIDLen)
	}
	if len(k.Public) != ed25519.PublicKeySize {
		return fmt.Errorf("signing key %s: public key is %d bytes, want %d", k.ID, len(k.Public), ed25519.PublicKeySize)
	}
	if k.Private != nil {
		if len(k.Private) != ed25519.PrivateKeySize {
			return fmt.Errorf("signing key %s: private key is %d bytes, want %d", k.ID, len(k.Private), ed25519.PrivateKeySize)
		}
		if subtle.ConstantTimeCompare(k.Private[32:], k.Public) != 1 {
			return fmt.Errorf("signing key %s: private and public key do not match", k.ID)
		}
	}
	return nil
}

// KeyringOptions tune token issue and verification.
type KeyringOptions struct {
	Audience string        // aud issued and required; default DefaultAudience ("mcpgw")
	MaxTTL   time.Duration // longest token lifetime; default DefaultMaxTTL (30 days)
	Leeway   time.Duration // tolerated clock skew; default DefaultLeeway (30s), negative for none
}

// Keyring is an immutable snapshot of the signing keys and revocations. It
// signs with the active key and verifies with every key that may still have
// live tokens. It is safe for concurrent use; build a new one when keys or
// revocations change.
type Keyring struct {
	active   *SigningKey           // newest unretired key with a private half; nil if none
	keys     map[string]SigningKey // by ID, every key that passed Validate
	revoked  map[string]time.Time  // token id -> token expiry
	audience string
	maxTTL   time.Duration
	leeway   time.Duration
	parser   *jwt.Parser
}

// NewKeyring builds a keyring.
//
// The active key is the unretired key with a private half and the latest
// Created time (the later one in keys on a tie). A retired key keeps
// verifying while now < Retired+MaxTTL: Issue caps lifetimes at MaxTTL, so by
// then every token it signed has expired. Keys that fail Validate are left
// out; validate keys before storing them.
//
// revoked maps revoked token IDs to the token's expiry. An entry is needed
// only until that expiry plus the leeway; afterwards the token fails as
// expired anyway and the caller may drop it. The map is copied.
func NewKeyring(keys []SigningKey, revoked map[string]time.Time, opts KeyringOptions) *Keyring {
	k := &Keyring{
		keys:     make(map[string]SigningKey, len(keys)),
		revoked:  make(map[string]time.Time, len(revoked)),
		audience: opts.Audience,
		maxTTL:   opts.MaxTTL,
		leeway:   opts.Leeway,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{algEdDSA}),
			jwt.WithStrictDecoding(),
			// Times are checked in Verify against the caller's now, with
			// errors that say what to do.
			jwt.WithoutClaimsValidation(),
		),
	}
	if k.audience == "" {
		k.audience = DefaultAudience
	}
	if k.maxTTL <= 0 {
		k.maxTTL = DefaultMaxTTL
	}
	switch {
	case k.leeway == 0:
		k.leeway = DefaultLeeway
	case k.leeway < 0:
		k.leeway = 0
	}
	for _, key := range keys {
		if key.Public == nil && len(key.Private) == ed25519.PrivateKeySize {
			key.Public = key.Private.Public().(ed25519.PublicKey)
		}
		if key.Validate() != nil {
			continue
		}
		k.keys[key.ID] = key
		if key.Private != nil && key.Retired.IsZero() && (k.active == nil || !key.Created.Before(k.active.Created)) {
			active := key
			k.active = &active
		}
	}
	for id, exp := range revoked {
		k.revoked[id] = exp
	}
	return k
}

// ActiveKeyID returns the ID of the key Issue signs with, or "" if none.
func (k *Keyring) ActiveKeyID() string {
	if k.active == nil {
		return ""
	}
	return k.active.ID
}

// Audience returns the audience tokens are issued for and checked against.
func (k *Keyring) Audience() string { return k.audience }

// Obsolete returns the IDs, sorted, of retired keys that verify no token at
// now any more and may be deleted.
func (k *Keyring) Obsolete(now time.Time) []string {
	var ids []string
	for id, key := range k.keys {
		if !key.Retired.IsZero() && !now.Before(key.Retired.Add(k.maxTTL)) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// NewTokenID returns a fresh 128-bit random token ID in hex.
func NewTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// jwtClaims is the wire form of Claims.
type jwtClaims struct {
	jwt.RegisteredClaims
	Orgs []string `json:"orgs"`
}

// Issue signs a token for c with the active key. It sets IssuedAt to now and
// fills ID with NewTokenID when empty, and Audience with the keyring's when
// empty. The lifetime c.ExpiresAt-now must be positive and at most MaxTTL.
// Times are encoded with one-second precision.
func (k *Keyring) Issue(c Claims, now time.Time) (string, error) {
	if k.active == nil {
		return "", ErrNoSigningKey
	}
	if c.Service == "" {
		return "", errors.New("issue service token: service name is empty; name the service the token is for")
	}
	if len(c.Orgs) == 0 {
		return "", fmt.Errorf("issue service token for %q: no orgs; name the orgs it may act for, or \"*\" for any", c.Service)
	}
	if slices.Contains(c.Orgs, "") {
		return "", fmt.Errorf("issue service token for %q: empty org name; name each org, or \"*\" for any", c.Service)
	}
	if c.ExpiresAt.IsZero() {
		return "", fmt.Errorf("issue service token for %q: no expiry; set a lifetime of at most %s", c.Service, k.maxTTL)
	}
	switch ttl := c.ExpiresAt.Sub(now); {
	case ttl <= 0:
		return "", fmt.Errorf("issue service token for %q: expiry %s is not after issue time %s; use a positive lifetime",
			c.Service, c.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case ttl > k.maxTTL:
		return "", fmt.Errorf("issue service token for %q: lifetime %s exceeds the maximum %s; use a shorter lifetime",
			c.Service, ttl, k.maxTTL)
	}
	if c.ID == "" {
		id, err := NewTokenID()
		if err != nil {
			return "", fmt.Errorf("issue service token for %q: %w", c.Service, err)
		}
		c.ID = id
	}
	if len(c.ID) > maxIDLen {
		return "", fmt.Errorf("issue service token for %q: token id is longer than %d characters", c.Service, maxIDLen)
	}
	if c.Audience == "" {
		c.Audience = k.audience
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwtClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        c.ID,
			Subject:   c.Service,
			Audience:  jwt.ClaimStrings{c.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
		},
		Orgs: c.Orgs,
	})
	t.Header["kid"] = k.active.ID
	s, err := t.SignedString(k.active.Private)
	if err != nil {
		return "", fmt.Errorf("issue service token for %q: sign: %w", c.Service, err)
	}
	return s, nil
}

// Verify checks a token's shape, algorithm, key, signature, audience,
// revocation and validity window at now, in that order, and returns its
// claims. Errors wrap one of the ErrToken* sentinels.
func (k *Keyring) Verify(token string, now time.Time) (*Claims, error) {
	if token == "" {
		return nil, ErrTokenMissing
	}
	if err := checkShape(token); err != nil {
		return nil, err
	}
	var jc jwtClaims
	tok, err := k.parser.ParseWithClaims(token, &jc, func(t *jwt.Token) (any, error) {
		return k.verificationKey(t, now)
	})
	if err != nil {
		return nil, parseError(tok, err)
	}

	switch {
	case jc.Subject == "":
		return nil, tokenErr(ErrTokenMalformed, "service token malformed: it names no service (sub); %s", issueHint)
	case jc.ID == "":
		return nil, tokenErr(ErrTokenMalformed, "service token malformed: it has no token id (jti); %s", issueHint)
	case jc.IssuedAt == nil:
		return nil, tokenErr(ErrTokenMalformed, "service token malformed: it has no issue time (iat); %s", issueHint)
	case jc.ExpiresAt == nil:
		return nil, tokenErr(ErrTokenMalformed, "service token malformed: it has no expiry (exp); %s", issueHint)
	}
	if !slices.Contains(jc.Audience, k.audience) {
		return nil, tokenErr(ErrTokenAudience, "service token is for audience %s, but this gateway is %q; %s for this gateway",
			describeAudience(jc.Audience), k.audience, issueHint)
	}
	if _, ok := k.revoked[jc.ID]; ok {
		return nil, tokenErr(ErrTokenRevoked, "service token %s for service %q was revoked; %s", jc.ID, jc.Subject, issueHint)
	}
	exp := jc.ExpiresAt.UTC()
	if !now.Before(exp.Add(k.leeway)) {
		return nil, tokenErr(ErrTokenExpired, "service token expired at %s; %s", exp.Format(time.RFC3339), issueHint)
	}
	notBefore := jc.IssuedAt.UTC()
	if jc.NotBefore != nil && jc.NotBefore.After(notBefore) {
		notBefore = jc.NotBefore.UTC()
	}
	if now.Add(k.leeway).Before(notBefore) {
		return nil, tokenErr(ErrTokenNotYetValid, "service token not valid until %s, and this node's clock reads %s; check the clocks of the issuer and this node",
			notBefore.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return &Claims{
		ID:        jc.ID,
		Service:   jc.Subject,
		Orgs:      jc.Orgs,
		Audience:  k.audience,
		IssuedAt:  jc.IssuedAt.UTC(),
		ExpiresAt: exp,
	}, nil
}

// Check re-checks claims this keyring (or an older one) verified: it
// reports ErrTokenRevoked once the token's id is revoked and ErrTokenExpired
// from its expiry plus the leeway on, exactly as Verify would. It lets a
// cache of verified claims, or a session opened with them, learn what
// happened to the token since, without parsing it again.
func (k *Keyring) Check(c *Claims, now time.Time) error {
	if _, ok := k.revoked[c.ID]; ok {
		return tokenErr(ErrTokenRevoked, "service token %s for service %q was revoked; %s", c.ID, c.Service, issueHint)
	}
	if !now.Before(c.ExpiresAt.Add(k.leeway)) {
		return tokenErr(ErrTokenExpired, "service token expired at %s; %s", c.ExpiresAt.UTC().Format(time.RFC3339), issueHint)
	}
	return nil
}

// verificationKey is the jwt.Keyfunc: it picks the public key named by the
// header's kid, if that key may still verify tokens at now.
func (k *Keyring) verificationKey(t *jwt.Token, now time.Time) (any, error) {
	if t.Method == nil || t.Method.Alg() != algEdDSA {
		return nil, errNotEdDSA
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, tokenErr(ErrTokenMalformed, "service token malformed: its header names no signing key (kid); %s", issueHint)
	}
	if len(kid) > maxIDLen {
		return nil, tokenErr(ErrTokenMalformed, "service token malformed: its key id is longer than %d characters; %s", maxIDLen, issueHint)
	}
	key, ok := k.keys[kid]
	if !ok {
		return nil, tokenErr(ErrTokenUnknownKey, "service token signed with key %q, which this gateway does not know (removed, or from another gateway); %s", kid, issueHint)
	}
	if !key.Retired.IsZero() && !now.Before(key.Retired.Add(k.maxTTL)) {
		return nil, tokenErr(ErrTokenUnknownKey, "service token signed with key %q, which was retired at %s and no longer verifies tokens; %s",
			kid, key.Retired.UTC().Format(time.RFC3339), issueHint)
	}
	return key.Public, nil
}

var errNotEdDSA = tokenErr(ErrTokenSignature, "service token is not signed with EdDSA, the only algorithm this gateway accepts; %s", issueHint)

// checkShape rejects oversized tokens and anything that is not three
// non-empty base64url segments before the JWT parser sees it, so that error
// messages can say precisely what is wrong.
func checkShape(token string) error {
	if len(token) > MaxTokenLen {
		return tokenErr(ErrTokenMalformed, "service token malformed: it is %d bytes, more than the %d-byte limit; pass the token exactly as `mcpgw token issue` printed it",
			len(token), MaxTokenLen)
	}
	segments, segLen := 1, 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c == '.':
			if segLen == 0 {
				return errShape
			}
			segments++
			segLen = 0
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			segLen++
		default:
			return tokenErr(ErrTokenMalformed, "service token malformed: byte %d is not a base64url character; pass only the token, without a scheme, quotes or whitespace", i)
		}
	}
	if segments != 3 || segLen == 0 {
		return errShape
	}
	return nil
}

var errShape = tokenErr(ErrTokenMalformed, "service token malformed: want three non-empty base64url segments separated by dots; pass the token exactly as `mcpgw token issue` printed it")

// parseError turns a jwt parse error into one of ours. jwt's own messages
// are not passed on: they may quote decoded token bytes.
func parseError(tok *jwt.Token, err error) error {
	var te *tokenError
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errUndecodable
	case tok != nil && (tok.Method == nil || tok.Method.Alg() != algEdDSA):
		// Unknown, missing or disallowed alg ("none", HS256 keyed with
		// our public key, ...).
		return errNotEdDSA
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return tokenErr(ErrTokenSignature, "service token signature does not match its content: the token was altered or signed by another key; %s", issueHint)
	default:
		return errUndecodable
	}
}

var errUndecodable = tokenErr(ErrTokenMalformed, "service token malformed: its header, payload or signature does not decode; pass the token exactly as `mcpgw token issue` printed it")

func describeAudience(aud []string) string {
	if len(aud) == 0 {
		return "(none)"
	}
	q := make([]string, len(aud))
	for i, a := range aud {
		if len(a) > maxIDLen {
			a = a[:maxIDLen] + "..."
		}
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}
