package gateway

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// insecureClaims stand in for a service token when --insecure-dev is set.
var insecureClaims = &policy.Claims{ID: "insecure-dev", Service: "insecure-dev", Orgs: []string{"*"}}

// policyState is an immutable view of the replicated allow-list and policy
// (routes, signing keys, revocations, rules), rebuilt after every write to
// the store.
type policyState struct {
	gen     uint64
	routes  *routeTable
	keyring *policy.Keyring
	rules   *policy.Rules
	// verified caches the claims of tokens this view has verified, keyed
	// by the token's SHA-256, so a client of the stateless protocol (one
	// HTTP request per call) pays the Ed25519 check once, not per call. A
	// new view (any write: a revocation, a key rotation) starts empty.
	verified sync.Map // [32]byte → *policy.Claims
	cached   atomic.Int64
}

// maxVerifiedTokens bounds the verified-token cache of one policy view.
const maxVerifiedTokens = 10000

// cacheVerified remembers verified claims while the cache has room. cached
// counts the entries held: a slot is taken before the store and given back
// when the entry was already there or is deleted, so the count never drifts
// above what the map holds and the cache keeps caching.
func (st *policyState) cacheVerified(sum [32]byte, c *policy.Claims) {
	if st.cached.Add(1) > maxVerifiedTokens {
		st.cached.Add(-1)
		return
	}
	if _, loaded := st.verified.LoadOrStore(sum, c); loaded {
		st.cached.Add(-1)
	}
}

// policyCache owns the node's policy view and its rate limiter, whose
// buckets outlive rebuilds.
type policyCache struct {
	state    atomic.Pointer[policyState]
	mu       sync.Mutex // serialises rebuilds
	limiter  *policy.Limiter
	inflight *policy.Gate // node-wide cap on calls being forwarded
}

// SigningKeyAAD binds a sealed signing key to its id. Node seals
// service-token signing keys with it; the policy view unseals them.
func SigningKeyAAD(id string) vault.AAD {
	return vault.AAD{Org: "mcpgw", Account: "token-signing-key", Route: id}
}

// policy returns the current policy view, rebuilding it after writes.
func (g *Gateway) policy() (*policyState, error) {
	gen := g.state.Generation()
	if st := g.pol.state.Load(); st != nil && st.gen == gen {
		return st, nil
	}
	g.pol.mu.Lock()
	defer g.pol.mu.Unlock()
	if st := g.pol.state.Load(); st != nil && st.gen == gen {
		return st, nil
	}
	st, err := g.buildPolicy(gen)
	if err != nil {
		return nil, err
	}
	g.pol.state.Store(st)
	return st, nil
}

func (g *Gateway) buildPolicy(gen uint64) (*policyState, error) {
	stored, err := g.state.TokenKeys()
	if err != nil {
		return nil, err
	}
	keys := make([]policy.SigningKey, 0, len(stored))
	for _, k := range stored {
		cred, err := g.vaultKeys().Unseal(k.Sealed, SigningKeyAAD(k.ID))
		if err != nil {
			g.logger.Error("token signing key cannot be unsealed; tokens it signed will not verify", "key_id", k.ID, "error", err)
			continue
		}
		seed, err := base64.StdEncoding.DecodeString(cred.Token)
		if err != nil || len(seed) != ed25519.SeedSize {
			g.logger.Error("token signing key is malformed", "key_id", k.ID)
			continue
		}
		priv := ed25519.NewKeyFromSeed(seed)
		keys = append(keys, policy.SigningKey{ID: k.ID, Private: priv, Public: priv.Public().(ed25519.PublicKey), Created: k.Created, Retired: k.Retired})
	}
	revs, err := g.state.Revocations()
	if err != nil {
		return nil, err
	}
	revoked := make(map[string]time.Time, len(revs))
	for _, r := range revs {
		revoked[r.ID] = r.Expires
	}
	storedRules, err := g.state.Rules()
	if err != nil {
		return nil, err
	}
	rules := make([]policy.Rule, 0, len(storedRules))
	for _, r := range storedRules {
		rules = append(rules, policy.Rule{ID: r.ID, Service: r.Service, Org: r.Org, Account: r.Account, Route: r.Route, Tool: r.Tool, Effect: policy.Effect(r.Effect)})
	}
	compiled, err := policy.CompileRules(rules)
	if err != nil {
		return nil, fmt.Errorf("stored rules: %w", err)
	}
	storedLimits, err := g.state.Limits()
	if err != nil {
		return nil, err
	}
	limits := make([]policy.Limit, 0, len(storedLimits))
	for _, l := range storedLimits {
		pl, err := PolicyLimit(l)
		if err != nil {
			return nil, err
		}
		limits = append(limits, pl)
	}
	if err := g.pol.limiter.SetLimits(limits); err != nil {
		return nil, fmt.Errorf("stored limits: %w", err)
	}
	routes, err := g.state.Routes()
	if err != nil {
		return nil, err
	}
	// Every route and limit has its series from the first scrape on, and
	// only while it exists.
	routeNames, limitIDs := make(map[string]bool, len(routes)), make(map[string]bool, len(storedLimits))
	for _, r := range routes {
		g.metrics.route(r.Name)
		routeNames[r.Name] = true
	}
	for _, l := range storedLimits {
		limitIDs[l.ID] = true
	}
	g.metrics.keepRoutes(routeNames, limitIDs)
	return &policyState{gen: gen, routes: newRouteTable(routes), keyring: policy.NewKeyring(keys, revoked, policy.KeyringOptions{}), rules: compiled}, nil
}

// PolicyLimit converts a stored rate limit to the limiter's form, checking its
// pool dimensions.
func PolicyLimit(l storage.Limit) (policy.Limit, error) {
	pool, err := policy.ParseDims(l.Pool)
	if err != nil {
		return policy.Limit{}, err
	}
	return policy.Limit{ID: l.ID, Service: l.Service, Org: l.Org, Account: l.Account, Route: l.Route, Tool: l.Tool, Rate: l.Rate, Burst: l.Burst, Pool: pool}, nil
}

// bearerToken extracts a service token: the Authorization header, or the
// access_token query parameter for clients that cannot set headers
// (browsers, the TypeScript SDK's WebSocket transport).
func bearerToken(r *http.Request) string {
	if auth := r.Header.Get("Authorization"); len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	return r.URL.Query().Get("access_token")
}

// verifyToken checks a service token and returns its claims; errors are
// CodeUnauthorized refusals that say what was wrong, never quoting the
// token.
func (g *Gateway) verifyToken(token string) (*policy.Claims, error) {
	if g.opts.InsecureDev {
		return insecureClaims, nil
	}
	refuse := func(kind, msg string) error {
		g.metrics.refusalsTotal.WithLabelValues(kind).Inc()
		return &transport.Refusal{Code: transport.CodeUnauthorized, Message: msg}
	}
	if token == "" {
		return nil, refuse("token_missing", "no service token: send Authorization: Bearer <token> (or access_token=<token>); get one with `mcpgw token issue`")
	}
	st, err := g.policy()
	if err != nil {
		return nil, err
	}
	now := g.now()
	sum := sha256.Sum256([]byte(token))
	if v, ok := st.verified.Load(sum); ok {
		// A hit expires exactly when Verify would refuse the token, leeway
		// included.
		if st.keyring.Check(v.(*policy.Claims), now) == nil {
			g.metrics.tokenHit.Inc()
			return v.(*policy.Claims), nil
		}
		if _, loaded := st.verified.LoadAndDelete(sum); loaded {
			st.cached.Add(-1)
		}
	}
	claims, err := st.keyring.Verify(token, now)
	if err == nil {
		g.metrics.tokenMissOK.Inc()
		st.cacheVerified(sum, claims)
	}
	if err != nil {
		g.metrics.tokenRefused.Inc()
		kind := "token_invalid"
		for _, k := range []struct {
			err  error
			kind string
		}{{policy.ErrTokenExpired, "token_expired"}, {policy.ErrTokenRevoked, "token_revoked"}, {policy.ErrTokenSignature, "token_signature"},
			{policy.ErrTokenMalformed, "token_malformed"}, {policy.ErrTokenAudience, "token_audience"}, {policy.ErrTokenUnknownKey, "token_unknown_key"}} {
			if errors.Is(err, k.err) {
				kind = k.kind
				break
			}
		}
		return nil, refuse(kind, err.Error())
	}
	return claims, nil
}

// authenticate identifies the service behind an HTTP request.
func (g *Gateway) authenticate(r *http.Request) (*policy.Claims, error) {
	return g.verifyToken(bearerToken(r))
}

// authorizeDriver checks that a request on an open streamable HTTP session
// carries a token that could have opened it: valid now (not revoked, not
// expired), for the same service, and allowing the session's org. Any such
// token may drive the session, so a service can swap in a fresh token
// without reopening it.
func (s *session) authorizeDriver(r *http.Request) error {
	g := s.g
	c, err := g.authenticate(r)
	if err != nil {
		return err
	}
	if c.Service != s.claims.Service || !c.AllowsOrg(s.org) {
		g.metrics.refusalsTotal.WithLabelValues("session_forbidden").Inc()
		return &transport.Refusal{Code: transport.CodeForbidden,
			Message: fmt.Sprintf("this session was opened by service %q for org %q, and this token (service %q) could not have opened it; send initialize to open your own session",
				s.claims.Service, s.org, c.Service)}
	}
	return nil
}

// authorizeSession applies the token's org list and the access rules to a
// session about to open.
func (g *Gateway) authorizeSession(claims *policy.Claims, spec sessionSpec) error {
	if !claims.AllowsOrg(spec.org) {
		g.metrics.refusalsTotal.WithLabelValues("org_forbidden").Inc()
		return &transport.Refusal{Code: transport.CodeForbidden,
			Message: fmt.Sprintf("service %q may not act for org %q; issue it a token that allows org %q", claims.Service, spec.org, spec.org)}
	}
	st, err := g.policy()
	if err != nil {
		return err
	}
	d := st.rules.Decide(policy.Request{Service: claims.Service, Org: spec.org, Account: spec.account, Route: spec.route.Name})
	if !d.Allowed {
		g.metrics.refusalsTotal.WithLabelValues("rule_denied").Inc()
		return &transport.Refusal{Code: transport.CodeForbidden, Message: d.Reason}
	}
	return nil
}

// admitToolCall applies rules, rate limits and the in-flight cap to one
// tools/call. A nil error admits it; the caller must then release the
// in-flight slot when the call completes.
func (s *session) admitToolCall(tool string) *jsonrpc.Error {
	g := s.g
	st, err := g.policy()
	if err != nil {
		return rpcError(jsonrpc.CodeInternalError, "policy unavailable; see the gateway log", nil)
	}
	req := policy.Request{Service: s.claims.Service, Org: s.org, Account: s.account, Route: s.route.Name, Tool: tool}
	if d := st.rules.Decide(req); !d.Allowed {
		g.metrics.refusalsTotal.WithLabelValues("rule_denied").Inc()
		return rpcError(transport.CodeForbidden, d.Reason, map[string]string{"rule": d.RuleID})
	}
	if ok, retry, limitID := g.pol.limiter.Allow(policy.Key(req), g.now()); !ok {
		g.metrics.refusalsTotal.WithLabelValues("rate_limited").Inc()
		g.metrics.limiterRefusals.WithLabelValues(limitID).Inc()
		ms := retry.Milliseconds() + 1
		return rpcError(transport.CodeRateLimited, fmt.Sprintf("rate limit %q reached for tool %q on route %q; retry in %dms", limitID, tool, s.route.Name, ms),
			map[string]any{"retryAfterMs": ms, "limit": limitID})
	}
	if !g.pol.inflight.TryAcquire() {
		g.metrics.refusalsTotal.WithLabelValues("overloaded").Inc()
		return rpcError(transport.CodeOverloaded, fmt.Sprintf("this node is forwarding its maximum of %d calls; retry shortly or on another node", g.pol.inflight.Max()), nil)
	}
	return nil
}
