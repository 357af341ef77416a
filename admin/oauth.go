package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// OAuthState is the replicated state of upstream OAuth flows.
type OAuthState interface {
	OAuthPending(stateHash string) (storage.OAuthPending, error)
	OAuthClient(issuer string) (storage.OAuthClient, error)
}

var _ OAuthState = (*storage.Store)(nil)

// Header names of the sealed secrets of a pending flow or a registration:
// they are sealed as a headers credential, the vault's sealed map.
const (
	sealedVerifier     = "X-Pkce-Verifier"
	sealedClientSecret = "X-Client-Secret"
)

// OAuthStart asks for a consent URL for an org, account and route.
type OAuthStart struct {
	Org, Account, Route string
	// Scopes overrides the scopes the server's metadata suggests.
	Scopes []string
}

// OAuthStarted is a consent URL to send the user to.
type OAuthStarted struct {
	URL     string
	Issuer  string
	Expires time.Time
}

// OAuthCompleted says whose credential a callback stored.
type OAuthCompleted struct {
	Org, Account, Route string
	Issuer              string
	Scopes              []string
	Expires             time.Time // zero: the server gave no lifetime
}

// OAuth credential states of OAuthStatus.
const (
	OAuthConnected    = "connected"
	OAuthNeedsConsent = "needs consent"
)

// OAuthStatus is what an org's account holds for a route. It never holds a token.
type OAuthStatus struct {
	State        string    // OAuthConnected or OAuthNeedsConsent
	Reason       string    // why consent is needed; empty when connected
	Expires      time.Time // zero: no lifetime known
	Scopes       []string
	Refreshable  bool
	LastConsent  time.Time
	CredentialOf string // kind of the credential stored, when not oauth
	// Issuer is the authorization server that issued the token; empty
	// when none is stored (or it was stored before issuers were kept).
	Issuer string
}

// errFlowGone is the answer to a callback whose flow is not (any longer) there.
func errFlowGone() error {
	return notFoundf("this sign-in link was already used or has expired; ask for a new one (mcpgw oauth url)")
}

func (s *Service) oauthReady() error {
	if s.d.OAuth == nil || s.d.OAuthState == nil {
		return &Error{Kind: ErrUnavailable, Err: errors.New("upstream oauth is not configured on this node; start it with --public-url")}
	}
	if s.opts.OAuthRedirectURL == "" {
		return &Error{Kind: ErrUnavailable, Err: errors.New("upstream oauth needs the gateway's public url; start it with --public-url")}
	}
	return nil
}

// AuthorizationURL discovers the route's authorization server, registers the
// gateway there when it has no client yet, starts a flow and stores it
// (replicated, single use), and returns the consent URL.
func (s *Service) AuthorizationURL(ctx context.Context, in OAuthStart) (OAuthStarted, error) {
	res, err := s.authorizationURL(ctx, in)
	s.consentEvent(ConsentStarted, in.Org, in.Account, in.Route, res.Issuer, err)
	return res, err
}

// consentEvent reports a consent flow started or completed, failed when
// err is set.
func (s *Service) consentEvent(trigger, org, account, route, issuer string, err error) {
	e := OAuthEvent{Kind: storage.AuditOAuthConsent, Org: org, Account: account, Route: route, Issuer: issuer,
		Trigger: trigger, Outcome: OAuthEventOK}
	if err != nil {
		e.Outcome, e.Error = OAuthEventFailed, err.Error()
	}
	s.event(e)
}

func (s *Service) authorizationURL(ctx context.Context, in OAuthStart) (OAuthStarted, error) {
	if err := s.oauthReady(); err != nil {
		return OAuthStarted{}, err
	}
	if err := s.credentialTarget(in.Org, in.Account, in.Route); err != nil {
		return OAuthStarted{}, err
	}
	route, err := s.d.State.Route(in.Route)
	if err != nil {
		return OAuthStarted{}, internal("read route", err)
	}
	if route.Transport == storage.TransportStdio {
		return OAuthStarted{}, invalidf("route %q runs a local command; oauth is for network upstreams", in.Route)
	}
	if in.Scopes == nil {
		// Step-up: the upstream asked for more than the stored grant.
		if cur, err := s.d.State.Credential(in.Org, in.Account, in.Route); err == nil && cur.OAuth != nil && cur.OAuth.Consent != nil {
			in.Scopes = cur.OAuth.Consent.Scopes
		}
	}
	d, err := s.discoverRoute(ctx, in.Route, route.URL)
	if err != nil {
		return OAuthStarted{}, err
	}
	reg, err := s.oauthRegistration(ctx, d)
	if err != nil {
		return OAuthStarted{}, err
	}
	p, consent, err := s.d.OAuth.Begin(ctx, oauth.BeginRequest{
		Binding:      oauth.Binding{Org: in.Org, Account: in.Account, Route: in.Route},
		Discovery:    d,
		Registration: reg,
		RedirectURL:  s.opts.OAuthRedirectURL, Scopes: in.Scopes, RequestRefreshToken: true,
	})
	if err != nil {
		return OAuthStarted{}, &Error{Kind: ErrFailed, Op: "start oauth flow", Err: err}
	}
	rec, err := s.sealPending(p)
	if err != nil {
		return OAuthStarted{}, err
	}
	cmd := cluster.Command{Op: cluster.OpBatch, Batch: []cluster.Command{
		{Op: cluster.OpExpireOAuthPending, At: s.now().UTC()},
		{Op: cluster.OpPutOAuthPending, OAuthPending: &rec},
	}}
	if err := s.d.Writes.Apply(ctx, cmd); err != nil {
		return OAuthStarted{}, writeError("write oauth flow", err)
	}
	s.opts.Logger.Info("oauth flow started", "org", in.Org, "account", in.Account, "route", in.Route, "issuer", d.Issuer)
	return OAuthStarted{URL: consent, Issuer: d.Issuer, Expires: p.ExpiresAt}, nil
}

// discoverRoute finds the authorization server of a route's server,
// starting from the challenge it answers a client without a token with.
func (s *Service) discoverRoute(ctx context.Context, name, serverURL string) (*oauth.Discovery, error) {
	ch, err := s.d.OAuth.Probe(ctx, serverURL)
	if err != nil {
		return nil, &Error{Kind: ErrFailed, Op: "ask route " + name + " for its authorization challenge", Err: err}
	}
	d, err := s.d.OAuth.Discover(ctx, serverURL, ch)
	if err != nil {
		return nil, &Error{Kind: ErrFailed, Op: "discover the authorization server of route " + name, Err: err}
	}
	return d, nil
}

// oauthRegistration returns the stored client at d's issuer, or registers
// one and stores it.
func (s *Service) oauthRegistration(ctx context.Context, d *oauth.Discovery) (oauth.Registration, error) {
	rec, err := s.d.OAuthState.OAuthClient(d.Issuer)
	found, err := exists(err)
	if err != nil {
		return oauth.Registration{}, internal("read oauth client", err)
	}
	if found {
		reg, redirect, err := s.openClient(rec)
		if err == nil && reg.For(d) && reg.Method == oauth.MethodPreregistered {
			// An operator's client: its token endpoint and auth method come
			// from what the server says now.
			reg, err := s.d.OAuth.Register(ctx, d, oauth.RegisterOptions{Preregistered: &reg})
			if err != nil {
				return oauth.Registration{}, &Error{Kind: ErrFailed, Op: "use the pre-registered client at " + d.Issuer, Err: err}
			}
			return reg, nil
		}
		if err == nil && reg.For(d) && redirect == s.opts.OAuthRedirectURL && (reg.Method != oauth.MethodCIMD || reg.ClientID == s.opts.OAuthCIMDURL) {
			return reg, nil
		}
		// An unreadable or stale registration (sealed by a retired key, for
		// an endpoint the server moved, or a client metadata document URL
		// the gateway no longer offers): register again.
	}
	reg, err := s.d.OAuth.Register(ctx, d, oauth.RegisterOptions{CIMDURL: s.opts.OAuthCIMDURL, RedirectURL: s.opts.OAuthRedirectURL})
	if err != nil {
		return oauth.Registration{}, &Error{Kind: ErrFailed, Op: "register with the authorization server " + d.Issuer, Err: err}
	}
	if err := s.putOAuthClient(ctx, reg); err != nil {
		return oauth.Registration{}, err
	}
	s.opts.Logger.Info("oauth client registered", "issuer", reg.Issuer, "method", string(reg.Method))
	return reg, nil
}

// putOAuthClient stores reg as the gateway's client at its issuer, the
// secret sealed.
func (s *Service) putOAuthClient(ctx context.Context, reg oauth.Registration) error {
	out := storage.OAuthClient{Issuer: reg.Issuer, Created: s.now().UTC().Truncate(time.Second)}
	if reg.ClientSecret != "" {
		keys := s.d.VaultKeys.Load()
		sealed, err := keys.Seal(vault.Credential{Kind: vault.KindHeaders, Headers: map[string]string{sealedClientSecret: reg.ClientSecret}}, clientAAD(reg.Issuer))
		if err != nil {
			return internal("seal oauth client secret", err)
		}
		out.KeyID, out.Sealed = keys.Current().ID(), sealed
	}
	bare := reg
	bare.ClientSecret = ""
	var err error
	if out.Registration, err = json.Marshal(redirectedRegistration{bare, s.opts.OAuthRedirectURL}); err != nil {
		return internal("encode oauth client", err)
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpPutOAuthClient, OAuthClient: &out}); err != nil {
		return writeError("write oauth client", err)
	}
	return nil
}

// redirectedRegistration remembers the callback a registration was made
// for: a gateway whose public URL changed must register again.
type redirectedRegistration struct {
	oauth.Registration
	RedirectURL string `json:"redirect_url"`
}

func clientAAD(issuer string) vault.AAD { return vault.AAD{Route: "oauth-client/" + issuer} }

func pendingAAD(p storage.OAuthPending) vault.AAD {
	return vault.AAD{Org: p.Org, Account: p.Account, Route: "oauth-pending/" + p.Route + "/" + p.StateHash}
}

// openClient returns a stored registration with its secret unsealed, and
// the callback it was made for.
func (s *Service) openClient(rec storage.OAuthClient) (oauth.Registration, string, error) {
	var rr redirectedRegistration
	if err := json.Unmarshal(rec.Registration, &rr); err != nil {
		return oauth.Registration{}, "", err
	}
	if len(rec.Sealed) > 0 {
		c, err := s.d.VaultKeys.Load().Unseal(rec.Sealed, clientAAD(rec.Issuer))
		if err != nil {
			return oauth.Registration{}, "", err
		}
		rr.ClientSecret = c.Headers[sealedClientSecret]
	}
	return rr.Registration, rr.RedirectURL, nil
}

// sealPending turns a flow into its stored form: keyed by the state's hash,
// the verifier and client secret sealed, the state itself dropped.
func (s *Service) sealPending(p oauth.Pending) (storage.OAuthPending, error) {
	rec := storage.OAuthPending{
		StateHash: storage.OAuthStateHash(p.State),
		Org:       p.Binding.Org, Account: p.Binding.Account, Route: p.Binding.Route,
		Issuer: p.Issuer, Created: p.CreatedAt.UTC(), Expires: p.ExpiresAt.UTC(),
	}
	secrets := map[string]string{sealedVerifier: p.Verifier}
	if p.Registration.ClientSecret != "" {
		secrets[sealedClientSecret] = p.Registration.ClientSecret
	}
	keys := s.d.VaultKeys.Load()
	sealed, err := keys.Seal(vault.Credential{Kind: vault.KindHeaders, Headers: secrets}, pendingAAD(rec))
	if err != nil {
		return rec, internal("seal oauth flow", err)
	}
	rec.KeyID, rec.Sealed = keys.Current().ID(), sealed
	p.State, p.Verifier, p.Registration.ClientSecret = "", "", ""
	if rec.Flow, err = json.Marshal(p); err != nil {
		return rec, internal("encode oauth flow", err)
	}
	return rec, nil
}

// openPending is sealPending's inverse, given the state the callback carried.
func (s *Service) openPending(rec storage.OAuthPending, state string) (oauth.Pending, error) {
	var p oauth.Pending
	if err := json.Unmarshal(rec.Flow, &p); err != nil {
		return p, internal("decode oauth flow", err)
	}
	c, err := s.d.VaultKeys.Load().Unseal(rec.Sealed, pendingAAD(rec))
	if err != nil {
		return p, internal("unseal oauth flow", err)
	}
	p.State, p.Verifier, p.Registration.ClientSecret = state, c.Headers[sealedVerifier], c.Headers[sealedClientSecret]
	return p, nil
}

// CompleteOAuth finishes a flow on its callback's query (state and code, or
// the authorization server's error): it claims the flow through raft, so a
// replayed callback on any node is refused, exchanges the code and stores
// the token as the oauth credential of the flow's org, account and route.
func (s *Service) CompleteOAuth(ctx context.Context, q url.Values) (OAuthCompleted, error) {
	res, err := s.completeOAuth(ctx, q)
	s.consentEvent(ConsentCompleted, res.Org, res.Account, res.Route, res.Issuer, err)
	return res, err
}

func (s *Service) completeOAuth(ctx context.Context, q url.Values) (OAuthCompleted, error) {
	if err := s.oauthReady(); err != nil {
		return OAuthCompleted{}, err
	}
	state := q.Get("state")
	if state == "" {
		return OAuthCompleted{}, invalidf("the callback has no state parameter; open the sign-in link the gateway gave, not a copy of the page")
	}
	hash := storage.OAuthStateHash(state)
	var rec storage.OAuthPending
	ok, err := s.found(ctx, func() (bool, error) {
		var err error
		rec, err = s.d.OAuthState.OAuthPending(hash)
		return exists(err)
	})
	if err != nil {
		return OAuthCompleted{}, internal("read oauth flow", err)
	}
	if !ok {
		return OAuthCompleted{}, errFlowGone()
	}
	done := OAuthCompleted{Org: rec.Org, Account: rec.Account, Route: rec.Route, Issuer: rec.Issuer}
	p, err := s.openPending(rec, state)
	if err != nil {
		return done, err
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpClaimOAuthPending, Name: hash}); err != nil {
		if errors.Is(err, cluster.ErrAlreadyClaimed) {
			return done, errFlowGone()
		}
		return done, writeError("claim oauth flow", err)
	}
	tok, err := s.d.OAuth.Complete(ctx, &p, q)
	if err != nil {
		var ase *oauth.ASError
		switch {
		case errors.As(err, &ase) && errors.Is(err, oauth.ErrAuthorizationDenied):
			return done, &Error{Kind: ErrFailed, Err: err, Hint: "; ask for a new sign-in link (mcpgw oauth url) and approve the request"}
		case errors.Is(err, oauth.ErrFlowExpired):
			return done, errFlowGone()
		}
		return done, &Error{Kind: ErrFailed, Op: "finish oauth flow", Err: err, Hint: "; ask for a new sign-in link (mcpgw oauth url)"}
	}
	cred := vault.Credential{Kind: vault.KindOAuth, OAuth: &vault.OAuthToken{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType,
		Expiry: tok.Expiry, Scope: strings.Join(tok.Scopes, " "),
	}}
	meta := &storage.CredentialOAuth{Issuer: tok.Issuer, Resource: tok.Resource, Expires: tok.Expiry.UTC(), Refreshable: tok.RefreshToken != ""}
	if err := s.storeCredential(ctx, rec.Org, rec.Account, rec.Route, cred, meta); err != nil {
		return done, err
	}
	done.Scopes, done.Expires = tok.Scopes, tok.Expiry
	s.opts.Logger.Info("oauth flow completed", "org", rec.Org, "account", rec.Account, "route", rec.Route, "issuer", rec.Issuer)
	return done, nil
}

// storeCredential seals cred and stores it, as PutCredential does, with
// what the leader needs to refresh it.
func (s *Service) storeCredential(ctx context.Context, org, account, route string, cred vault.Credential, meta *storage.CredentialOAuth) error {
	keys := s.d.VaultKeys.Load()
	sealed, err := keys.Seal(cred, vault.AAD{Org: org, Account: account, Route: route})
	if err != nil {
		return &Error{Kind: ErrFailed, Op: "seal oauth credential", Err: err}
	}
	now := s.now().UTC().Truncate(time.Second)
	rec := storage.Credential{Org: org, Account: account, Route: route, Kind: string(cred.Kind), KeyID: keys.Current().ID(), Sealed: sealed, Created: now, Rotated: now, OAuth: meta}
	old, err := s.d.State.Credential(org, account, route)
	found, err := exists(err)
	if err != nil {
		return internal("read credential", err)
	}
	if found {
		rec.Created = old.Created
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpPutCredential, Credential: &rec}); err != nil {
		return writeError("write credential", err)
	}
	return nil
}

// OAuthStatus reports whether an org's account is connected to a route
// through oauth, and if not, why.
func (s *Service) OAuthStatus(ctx context.Context, org, account, route string) (OAuthStatus, error) {
	if err := s.credentialTarget(org, account, route); err != nil {
		return OAuthStatus{}, err
	}
	rec, err := s.d.State.Credential(org, account, route)
	found, err := exists(err)
	if err != nil {
		return OAuthStatus{}, internal("read credential", err)
	}
	if !found {
		return OAuthStatus{State: OAuthNeedsConsent, Reason: "no credential yet: open a sign-in link (mcpgw oauth url) and approve"}, nil
	}
	if rec.Kind != string(vault.KindOAuth) {
		return OAuthStatus{State: OAuthConnected, CredentialOf: rec.Kind, LastConsent: rec.Rotated}, nil
	}
	c, err := s.d.VaultKeys.Load().Unseal(rec.Sealed, vault.AAD{Org: org, Account: account, Route: route})
	if err != nil {
		return OAuthStatus{}, internal("unseal credential", err)
	}
	st := OAuthStatus{State: OAuthConnected, Expires: c.OAuth.Expiry, Scopes: strings.Fields(c.OAuth.Scope),
		Refreshable: c.OAuth.RefreshToken != "", LastConsent: rec.Rotated}
	if rec.OAuth != nil {
		st.Issuer = rec.OAuth.Issuer
	}
	if m := rec.OAuth; m != nil && m.Consent != nil {
		st.State, st.Reason = OAuthNeedsConsent, consentReason(*m.Consent, m.Issuer)
		return st, nil
	}
	if !st.Expires.IsZero() && !st.Expires.After(s.now()) && !st.Refreshable {
		st.State, st.Reason = OAuthNeedsConsent, fmt.Sprintf("the access token expired at %s and the server gave no refresh token: open a new sign-in link (mcpgw oauth url)", st.Expires.UTC().Format(time.RFC3339))
	}
	return st, nil
}

// RevokeOAuth deletes the oauth credential of an org, account and route;
// the next session needs a new consent.
func (s *Service) RevokeOAuth(ctx context.Context, org, account, route string) error {
	rec, err := s.d.State.Credential(org, account, route)
	found, err := exists(err)
	if err != nil {
		return internal("read credential", err)
	}
	if found && rec.Kind != string(vault.KindOAuth) {
		return invalidf("the credential of org %q, account %q, route %q is a %s credential, not oauth; delete it with `mcpgw vault delete`", org, account, route, rec.Kind)
	}
	return s.DeleteCredential(ctx, org, account, route)
}

// consentReason says why a marked credential needs consent, and what to do.
func consentReason(c storage.CredentialConsent, issuer string) string {
	as := "the authorization server"
	if issuer != "" {
		as += " " + issuer
	}
	said := ""
	if c.Error != "" {
		said = fmt.Sprintf(" (%s", c.Error)
		if c.Description != "" {
			said += ": " + c.Description
		}
		said += ")"
	} else if c.Description != "" {
		said = " (" + c.Description + ")"
	}
	const next = "open a new sign-in link (mcpgw oauth url) and approve"
	switch c.Reason {
	case storage.ConsentStepUp:
		return fmt.Sprintf("the upstream asks for more scopes than were granted%s: %s; the link asks for %s", said, next, strings.Join(c.Scopes, " "))
	case storage.ConsentNoRefreshToken:
		return fmt.Sprintf("the access token expired or was refused and %s issued no refresh token: %s", as, next)
	}
	return fmt.Sprintf("%s refused to refresh the token%s at %s: %s", as, said, c.At.UTC().Format(time.RFC3339), next)
}
