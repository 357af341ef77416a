package node

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/cluster"
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

// tokenKeyAAD binds a sealed signing key to its id.
func tokenKeyAAD(id string) vault.AAD {
	return vault.AAD{Org: "mcpgw", Account: "token-signing-key", Route: id}
}

// policy returns the current policy view, rebuilding it after writes.
func (n *Node) policy() (*policyState, error) {
	gen := n.store.Generation()
	if st := n.pol.state.Load(); st != nil && st.gen == gen {
		return st, nil
	}
	n.pol.mu.Lock()
	defer n.pol.mu.Unlock()
	if st := n.pol.state.Load(); st != nil && st.gen == gen {
		return st, nil
	}
	st, err := n.buildPolicy(gen)
	if err != nil {
		return nil, err
	}
	n.pol.state.Store(st)
	return st, nil
}

func (n *Node) buildPolicy(gen uint64) (*policyState, error) {
	stored, err := n.store.TokenKeys()
	if err != nil {
		return nil, err
	}
	keys := make([]policy.SigningKey, 0, len(stored))
	for _, k := range stored {
		cred, err := n.vaultKeys().Unseal(k.Sealed, tokenKeyAAD(k.ID))
		if err != nil {
			n.logger.Error("token signing key cannot be unsealed; tokens it signed will not verify", "key_id", k.ID, "error", err)
			continue
		}
		seed, err := base64.StdEncoding.DecodeString(cred.Token)
		if err != nil || len(seed) != ed25519.SeedSize {
			n.logger.Error("token signing key is malformed", "key_id", k.ID)
			continue
		}
		priv := ed25519.NewKeyFromSeed(seed)
		keys = append(keys, policy.SigningKey{ID: k.ID, Private: priv, Public: priv.Public().(ed25519.PublicKey), Created: k.Created, Retired: k.Retired})
	}
	revs, err := n.store.Revocations()
	if err != nil {
		return nil, err
	}
	revoked := make(map[string]time.Time, len(revs))
	for _, r := range revs {
		revoked[r.ID] = r.Expires
	}
	storedRules, err := n.store.Rules()
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
	storedLimits, err := n.store.Limits()
	if err != nil {
		return nil, err
	}
	limits := make([]policy.Limit, 0, len(storedLimits))
	for _, l := range storedLimits {
		pl, err := toPolicyLimit(l)
		if err != nil {
			return nil, err
		}
		limits = append(limits, pl)
	}
	if err := n.pol.limiter.SetLimits(limits); err != nil {
		return nil, fmt.Errorf("stored limits: %w", err)
	}
	routes, err := n.store.Routes()
	if err != nil {
		return nil, err
	}
	return &policyState{gen: gen, routes: newRouteTable(routes), keyring: policy.NewKeyring(keys, revoked, policy.KeyringOptions{}), rules: compiled}, nil
}

func toPolicyLimit(l storage.Limit) (policy.Limit, error) {
	pool, err := policy.ParseDims(l.Pool)
	if err != nil {
		return policy.Limit{}, err
	}
	return policy.Limit{ID: l.ID, Service: l.Service, Org: l.Org, Account: l.Account, Route: l.Route, Tool: l.Tool, Rate: l.Rate, Burst: l.Burst, Pool: pool}, nil
}

// ensureSigningKey creates the first service-token signing key of a fresh
// cluster.
//
// When signing keys exist it checks the vault key opens them: a node
// started with the wrong --vault-key would otherwise run and fail every
// session.
func (n *Node) ensureSigningKey(ctx context.Context) error {
	keys, err := n.store.TokenKeys()
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return n.addSigningKey(ctx, nil)
	}
	var lastErr error
	sealedWith := make([]string, 0, len(keys))
	for _, k := range keys {
		_, err := n.vaultKeys().Unseal(k.Sealed, tokenKeyAAD(k.ID))
		if err == nil {
			return nil
		}
		lastErr = err
		if env, err := vault.DecodeEnvelope(k.Sealed); err == nil {
			sealedWith = append(sealedWith, env.KeyID)
		}
	}
	return fmt.Errorf("the vault key (id %s) cannot open the secrets in %s, sealed with key %s (%v): start with the --vault-key that sealed them, or restore that key file from backup",
		n.vaultKeys().Current().ID(), n.cfg.DataDir, strings.Join(slices.Compact(sealedWith), ", "), lastErr)
}

// addSigningKey creates a signing key and, in the same batch, retires the
// given ones.
func (n *Node) addSigningKey(ctx context.Context, retire []storage.TokenKey) error {
	now := n.now().UTC()
	k, err := policy.NewSigningKey(now)
	if err != nil {
		return err
	}
	seed := base64.StdEncoding.EncodeToString(k.Private.Seed())
	sealed, err := n.vaultKeys().Seal(vault.Credential{Kind: vault.KindBearer, Token: seed}, tokenKeyAAD(k.ID))
	if err != nil {
		return fmt.Errorf("seal token signing key: %w", err)
	}
	batch := []cluster.Command{{Op: cluster.OpPutTokenKey, TokenKey: &storage.TokenKey{ID: k.ID, Public: k.Public, Sealed: sealed, Created: now}}}
	for _, old := range retire {
		old.Retired = now
		batch = append(batch, cluster.Command{Op: cluster.OpPutTokenKey, TokenKey: &old})
	}
	return n.writes.Apply(ctx, cluster.Command{Op: cluster.OpBatch, Batch: batch})
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
// HTTP 401 refusals that say what was wrong, never quoting the token.
func (n *Node) verifyToken(token string) (*policy.Claims, error) {
	if n.cfg.InsecureDev {
		return insecureClaims, nil
	}
	refuse := func(kind, msg string) error {
		n.metrics.refusalsTotal.WithLabelValues(kind).Inc()
		return &transport.HTTPError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: msg}
	}
	if token == "" {
		return nil, refuse("token_missing", "no service token: send Authorization: Bearer <token> (or access_token=<token>); get one with `mcpgw token issue`")
	}
	st, err := n.policy()
	if err != nil {
		return nil, err
	}
	now := n.now()
	sum := sha256.Sum256([]byte(token))
	if v, ok := st.verified.Load(sum); ok {
		// A hit expires exactly when Verify would refuse the token, leeway
		// included.
		if st.keyring.Check(v.(*policy.Claims), now) == nil {
			return v.(*policy.Claims), nil
		}
		if _, loaded := st.verified.LoadAndDelete(sum); loaded {
			st.cached.Add(-1)
		}
	}
	claims, err := st.keyring.Verify(token, now)
	if err == nil {
		st.cacheVerified(sum, claims)
	}
	if err != nil {
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
func (n *Node) authenticate(r *http.Request) (*policy.Claims, error) {
	return n.verifyToken(bearerToken(r))
}

// authorizeDriver checks that a request on an open streamable HTTP session
// carries a token that could have opened it: valid now (not revoked, not
// expired), for the same service, and allowing the session's org. Any such
// token may drive the session, so a service can swap in a fresh token
// without reopening it.
func (s *session) authorizeDriver(r *http.Request) error {
	n := s.n
	c, err := n.authenticate(r)
	if err != nil {
		return err
	}
	if c.Service != s.claims.Service || !c.AllowsOrg(s.org) {
		n.metrics.refusalsTotal.WithLabelValues("session_forbidden").Inc()
		return &transport.HTTPError{Status: http.StatusForbidden, Code: CodeForbidden,
			Message: fmt.Sprintf("this session was opened by service %q for org %q, and this token (service %q) could not have opened it; send initialize to open your own session",
				s.claims.Service, s.org, c.Service)}
	}
	return nil
}

// authorizeSession applies the token's org list and the access rules to a
// session about to open.
func (n *Node) authorizeSession(claims *policy.Claims, spec sessionSpec) error {
	if !claims.AllowsOrg(spec.org) {
		n.metrics.refusalsTotal.WithLabelValues("org_forbidden").Inc()
		return &transport.HTTPError{Status: http.StatusForbidden, Code: CodeForbidden,
			Message: fmt.Sprintf("service %q may not act for org %q; issue it a token with --org %s", claims.Service, spec.org, spec.org)}
	}
	st, err := n.policy()
	if err != nil {
		return err
	}
	d := st.rules.Decide(policy.Request{Service: claims.Service, Org: spec.org, Account: spec.account, Route: spec.route.Name})
	if !d.Allowed {
		n.metrics.refusalsTotal.WithLabelValues("rule_denied").Inc()
		return &transport.HTTPError{Status: http.StatusForbidden, Code: CodeForbidden, Message: d.Reason}
	}
	return nil
}

// admitToolCall applies rules, rate limits and the in-flight cap to one
// tools/call. A nil error admits it; the caller must then release the
// in-flight slot when the call completes.
func (s *session) admitToolCall(tool string) *jsonrpc.Error {
	n := s.n
	st, err := n.policy()
	if err != nil {
		return rpcError(jsonrpc.CodeInternalError, "policy unavailable; see the gateway log", nil)
	}
	req := policy.Request{Service: s.claims.Service, Org: s.org, Account: s.account, Route: s.route.Name, Tool: tool}
	if d := st.rules.Decide(req); !d.Allowed {
		n.metrics.refusalsTotal.WithLabelValues("rule_denied").Inc()
		return rpcError(CodeForbidden, d.Reason, map[string]string{"rule": d.RuleID})
	}
	if ok, retry, limitID := n.pol.limiter.Allow(policy.Key(req), n.now()); !ok {
		n.metrics.refusalsTotal.WithLabelValues("rate_limited").Inc()
		ms := retry.Milliseconds() + 1
		return rpcError(CodeRateLimited, fmt.Sprintf("rate limit %q reached for tool %q on route %q; retry in %dms", limitID, tool, s.route.Name, ms),
			map[string]any{"retryAfterMs": ms, "limit": limitID})
	}
	if !n.pol.inflight.TryAcquire() {
		n.metrics.refusalsTotal.WithLabelValues("overloaded").Inc()
		return rpcError(CodeOverloaded, fmt.Sprintf("this node is forwarding its maximum of %d calls; retry shortly or on another node", n.pol.inflight.Max()), nil)
	}
	return nil
}
