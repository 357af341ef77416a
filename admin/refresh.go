package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// What set a refresh off (RefreshRequest.Trigger, OAuthEvent.Trigger).
const (
	RefreshOnExpiry       = "expiry"
	RefreshOnUnauthorized = "401"
)

// The steps of a consent flow (OAuthEvent.Trigger of an oauth_consent event).
const (
	ConsentStarted   = "started"   // an authorization URL was handed out
	ConsentCompleted = "completed" // its callback stored the tokens
)

// Outcomes of an OAuthEvent.
const (
	OAuthEventOK           = "ok"
	OAuthEventFailed       = "failed"        // transient: the next try may work
	OAuthEventNeedsConsent = "needs_consent" // the credential is marked
)

// OAuthEvent is one consent flow step, refresh or step-up, for the audit
// log and metrics. It never holds a token.
type OAuthEvent struct {
	// Kind is storage.AuditOAuthConsent, AuditOAuthRefresh or AuditStepUp.
	Kind                storage.AuditKind
	Org, Account, Route string
	Issuer              string
	Trigger             string // RefreshOn* for a refresh, Consent* for a consent flow; "" for step-up
	Outcome             string // OAuthEvent*
	// Error is what went wrong, with the authorization server's error code
	// when it answered one; empty on success.
	Error string
}

// RefreshRequest asks for a new token set for one oauth credential.
type RefreshRequest struct {
	Org     string `json:"org"`
	Account string `json:"account"`
	Route   string `json:"route"`
	// Sealed is the ciphertext whose access token is due or was refused:
	// when the stored one differs, someone refreshed (or consented)
	// already and nothing is sent to the authorization server.
	Sealed  []byte `json:"sealed"`
	Trigger string `json:"trigger"`
}

// refreshAttempts is how often one refresh tries the token endpoint when it
// fails transiently (network, 5xx); the backoff between tries doubles from
// refreshBackoff.
const (
	refreshAttempts = 3
	refreshBackoff  = 200 * time.Millisecond
)

func (s *Service) refreshTimeout() time.Duration {
	if s.opts.OAuthRefreshTimeout > 0 {
		return s.opts.OAuthRefreshTimeout
	}
	return 15 * time.Second
}

func (s *Service) event(e OAuthEvent) {
	if s.opts.OAuthEvents != nil {
		s.opts.OAuthEvents(e)
	}
}

// RefreshOAuth refreshes one oauth credential. Only the raft leader may run
// it (a follower asks the leader, see cluster.Raft.Call): concurrent
// requests for the same credential and ciphertext share one token request,
// and a request whose ciphertext is no longer the stored one returns at
// once, so however many sessions on however many nodes see the same 401,
// the authorization server sees one refresh.
//
// A nil answer means the stored state holds the outcome: a new token set
// (committed through raft before this returns, so a rotated refresh token
// is never lost to a leader change, and the old one is never sent again),
// a consent mark (the authorization server refused the refresh; see
// storage.CredentialOAuth.Consent), or a credential written meanwhile.
// An error is transient or internal, and marks nothing.
func (s *Service) RefreshOAuth(ctx context.Context, req RefreshRequest) error {
	if s.d.OAuth == nil || s.d.OAuthState == nil {
		return &Error{Kind: ErrUnavailable, Err: errors.New("upstream oauth is not configured on the leader; start every node with --public-url")}
	}
	sum := sha256.Sum256(req.Sealed)
	key := storage.CredentialKey(req.Org, req.Account, req.Route) + "\x00" + hex.EncodeToString(sum[:])
	ch := s.flights.DoChan(key, func() (any, error) {
		// One caller going away must not fail the others sharing it.
		fctx, cancel := context.WithTimeout(s.opts.Context, s.refreshTimeout())
		defer cancel()
		return nil, s.refresh(fctx, req)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return fmt.Errorf("refresh the oauth token of org %q, account %q, route %q: %w; retry the call", req.Org, req.Account, req.Route, ctx.Err())
	}
}

// storedOAuth returns the oauth credential of (org, account, route) and
// its unsealed token set when the stored ciphertext is still sealed, the one
// a session saw refused; ok is false when it is gone, not oauth, or was
// replaced meanwhile (someone refreshed or consented already), and when skip
// says so of the record before it is unsealed.
func (s *Service) storedOAuth(org, account, route string, sealed []byte, skip func(storage.Credential) bool) (rec storage.Credential, cred vault.Credential, ok bool, err error) {
	rec, err = s.d.State.Credential(org, account, route)
	found, err := exists(err)
	switch {
	case err != nil:
		return rec, cred, false, internal("read credential", err)
	case !found, !bytes.Equal(rec.Sealed, sealed), rec.Kind != string(vault.KindOAuth), skip != nil && skip(rec):
		return rec, cred, false, nil
	}
	cred, err = s.d.VaultKeys.Load().Unseal(rec.Sealed, vault.AAD{Org: org, Account: account, Route: route})
	if err != nil {
		return rec, cred, false, internal("unseal credential", err)
	}
	return rec, cred, true, nil
}

func (s *Service) refresh(ctx context.Context, req RefreshRequest) error {
	rec, cred, ok, err := s.storedOAuth(req.Org, req.Account, req.Route, req.Sealed, func(rec storage.Credential) bool {
		return rec.OAuth != nil && rec.OAuth.Consent.Blocks()
	})
	if !ok || err != nil {
		return err
	}
	meta := storage.CredentialOAuth{}
	if rec.OAuth != nil {
		meta = *rec.OAuth
	}
	ev := OAuthEvent{Kind: storage.AuditOAuthRefresh, Org: req.Org, Account: req.Account, Route: req.Route, Issuer: meta.Issuer, Trigger: req.Trigger}
	needsConsent := func(c storage.CredentialConsent, why string) error {
		ev.Outcome, ev.Error = OAuthEventNeedsConsent, why
		s.event(ev)
		s.opts.Logger.Warn("oauth credential needs consent", "org", req.Org, "account", req.Account, "route", req.Route, "issuer", meta.Issuer, "reason", c.Reason, "error", c.Error)
		return s.markConsent(ctx, rec, c)
	}
	tok := cred.OAuth
	switch {
	case tok.RefreshToken == "":
		return needsConsent(storage.CredentialConsent{Reason: storage.ConsentNoRefreshToken, At: s.now().UTC()}, "no refresh token")
	case meta.Issuer == "":
		return needsConsent(storage.CredentialConsent{Reason: storage.ConsentRefreshFailed, At: s.now().UTC(),
			Description: "the token set was stored by hand, so the gateway does not know its authorization server"}, "no issuer recorded")
	}
	crec, err := s.d.OAuthState.OAuthClient(meta.Issuer)
	found, err := exists(err)
	if err != nil {
		return internal("read oauth client", err)
	}
	var reg oauth.Registration
	if found {
		reg, _, err = s.openClient(crec)
	}
	if !found || err != nil {
		return needsConsent(storage.CredentialConsent{Reason: storage.ConsentRefreshFailed, At: s.now().UTC(),
			Description: "the gateway has no usable client registration with " + meta.Issuer}, "no client registration")
	}
	old := oauth.Token{AccessToken: tok.AccessToken, TokenType: tok.TokenType, RefreshToken: tok.RefreshToken,
		Expiry: tok.Expiry, Scopes: strings.Fields(tok.Scope), Issuer: meta.Issuer, Resource: meta.Resource}
	nt, err := s.refreshWithRetry(ctx, reg, old)
	var ase *oauth.ASError
	switch {
	case errors.Is(err, oauth.ErrNeedsConsent):
		c := storage.CredentialConsent{Reason: storage.ConsentRefreshFailed, At: s.now().UTC()}
		if errors.As(err, &ase) {
			c.Error, c.Description = clip(ase.Code, 100), clip(ase.Description, 300)
		}
		return needsConsent(c, "the authorization server refused the refresh: "+c.Error)
	case err != nil:
		ev.Outcome, ev.Error = OAuthEventFailed, clip(err.Error(), 300)
		s.event(ev)
		return &Error{Kind: ErrFailed, Op: "refresh the oauth token of org " + req.Org + ", account " + req.Account + ", route " + req.Route, Err: err}
	}
	fresh := vault.Credential{Kind: vault.KindOAuth, OAuth: &vault.OAuthToken{
		AccessToken: nt.AccessToken, RefreshToken: nt.RefreshToken, TokenType: nt.TokenType,
		Expiry: nt.Expiry, Scope: strings.Join(nt.Scopes, " "),
	}}
	if err := s.storeRefreshed(ctx, rec, old, fresh); err != nil {
		ev.Outcome, ev.Error = OAuthEventFailed, clip(err.Error(), 300)
		s.event(ev)
		return err
	}
	ev.Outcome = OAuthEventOK
	s.event(ev)
	s.opts.Logger.Info("oauth token refreshed", "org", req.Org, "account", req.Account, "route", req.Route, "issuer", meta.Issuer, "trigger", req.Trigger, "expires", nt.Expiry)
	return nil
}

// refreshWithRetry retries transient token endpoint failures with backoff;
// an answer that needs consent is final.
func (s *Service) refreshWithRetry(ctx context.Context, reg oauth.Registration, tok oauth.Token) (oauth.Token, error) {
	wait := refreshBackoff
	for attempt := 1; ; attempt++ {
		nt, err := s.d.OAuth.Refresh(ctx, reg, tok)
		if err == nil || errors.Is(err, oauth.ErrNeedsConsent) || attempt == refreshAttempts {
			return nt, err
		}
		s.opts.Logger.Info("oauth refresh failed; retrying", "issuer", tok.Issuer, "attempt", attempt, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return oauth.Token{}, err
		case <-t.C:
		}
		wait *= 2
	}
}

// storeRefreshed writes the refreshed token set over rec, compare-and-set
// on rec's ciphertext. A credential written meanwhile wins, except a
// reseal (the same token set under another data key): then the refreshed
// one replaces it, for the authorization server may have rotated the
// refresh token, and the new one must not be lost.
func (s *Service) storeRefreshed(ctx context.Context, rec storage.Credential, old oauth.Token, fresh vault.Credential) error {
	aad := vault.AAD{Org: rec.Org, Account: rec.Account, Route: rec.Route}
	for range 3 {
		keys := s.d.VaultKeys.Load()
		sealed, err := keys.Seal(fresh, aad)
		if err != nil {
			return internal("seal refreshed oauth credential", err)
		}
		meta := storage.CredentialOAuth{}
		if rec.OAuth != nil {
			meta = *rec.OAuth
		}
		// A step-up mark stays: the refresh keeps the grant's scopes.
		meta.Expires, meta.Refreshable = fresh.OAuth.Expiry.UTC(), fresh.OAuth.RefreshToken != ""
		nrec := rec
		nrec.Sealed, nrec.KeyID, nrec.Rotated, nrec.OAuth = sealed, keys.Current().ID(), s.now().UTC().Truncate(time.Second), &meta
		err = s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpRefreshCredential, Credential: &nrec, Expect: rec.Sealed})
		if err == nil {
			return nil
		}
		if !errors.Is(err, cluster.ErrCredentialChanged) {
			s.opts.Logger.Error("refreshed oauth token set not stored; if the authorization server rotated the refresh token, the account needs a new consent",
				"org", rec.Org, "account", rec.Account, "route", rec.Route, "error", err)
			return writeError("write refreshed oauth credential", err)
		}
		cur, err := s.d.State.Credential(rec.Org, rec.Account, rec.Route)
		if found, err := exists(err); err != nil || !found {
			return err
		}
		c, err := keys.Unseal(cur.Sealed, aad)
		if err != nil || c.OAuth == nil || c.OAuth.RefreshToken != old.RefreshToken || c.OAuth.AccessToken != old.AccessToken {
			s.opts.Logger.Info("a newer credential was stored while refreshing; it stays", "org", rec.Org, "account", rec.Account, "route", rec.Route)
			return nil
		}
		rec = cur
	}
	return &Error{Kind: ErrFailed, Op: "write refreshed oauth credential", Err: errors.New("the credential kept changing; retry")}
}

// markConsent records c on rec, compare-and-set on its ciphertext: a
// credential written meanwhile is newer than what failed, and stays
// unmarked.
func (s *Service) markConsent(ctx context.Context, rec storage.Credential, c storage.CredentialConsent) error {
	err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpMarkCredentialConsent,
		Org: rec.Org, Account: rec.Account, RouteName: rec.Route, Expect: rec.Sealed, Consent: &c})
	if err != nil && !errors.Is(err, cluster.ErrCredentialChanged) {
		return writeError("mark oauth credential as needing consent", err)
	}
	return nil
}

// StepUpRequest says an upstream answered 403 insufficient_scope.
type StepUpRequest struct {
	Org, Account, Route string
	// Sealed is the ciphertext of the token set the upstream refused.
	Sealed []byte
	// Challenge is the upstream's WWW-Authenticate challenge.
	Challenge oauth.Challenge
}

// StepUpOAuth marks the credential as needing a consent for the scopes it
// grants plus those the upstream challenged for; the next AuthorizationURL
// for it asks for them. The token set stays in use meanwhile: it still
// works for what it grants.
func (s *Service) StepUpOAuth(ctx context.Context, req StepUpRequest) error {
	rec, cred, ok, err := s.storedOAuth(req.Org, req.Account, req.Route, req.Sealed, nil)
	if !ok || err != nil {
		return err
	}
	scopes, ok := oauth.StepUpScopes(req.Challenge, strings.Fields(cred.OAuth.Scope))
	if !ok {
		return nil
	}
	if rec.OAuth != nil && rec.OAuth.Consent != nil && slices.Equal(rec.OAuth.Consent.Scopes, scopes) {
		return nil // marked already, by another session
	}
	issuer := ""
	if rec.OAuth != nil {
		issuer = rec.OAuth.Issuer
	}
	c := storage.CredentialConsent{Reason: storage.ConsentStepUp, Error: "insufficient_scope",
		Description: clip(req.Challenge.ErrorDescription, 300), Scopes: scopes, At: s.now().UTC()}
	if err := s.markConsent(ctx, rec, c); err != nil {
		return err
	}
	// The refused call's sign-in link is started on this node next and
	// must ask for the wider scopes: wait (briefly) until this node's copy
	// holds the mark the leader applied.
	if _, err := s.found(ctx, func() (bool, error) {
		cur, err := s.d.State.Credential(req.Org, req.Account, req.Route)
		if ok, err := exists(err); !ok || err != nil {
			return false, err
		}
		return cur.OAuth != nil && cur.OAuth.Consent != nil && slices.Equal(cur.OAuth.Consent.Scopes, scopes), nil
	}); err != nil {
		return err
	}
	s.event(OAuthEvent{Kind: storage.AuditStepUp, Org: req.Org, Account: req.Account, Route: req.Route, Issuer: issuer,
		Outcome: OAuthEventNeedsConsent, Error: "insufficient_scope: the upstream asks for " + strings.Join(scopes, " ")})
	s.opts.Logger.Info("oauth step-up needed", "org", req.Org, "account", req.Account, "route", req.Route, "issuer", issuer, "scopes", strings.Join(scopes, " "))
	return nil
}

// refreshDue is when the leader refreshes a credential ahead of its
// expiry: 80 to 90 % into its lifetime (jittered per token set, so a batch
// consented together does not refresh together), at least MinLead before
// it expires, but never in the first half of its lifetime.
func (s *Service) refreshDue(rec storage.Credential) time.Time {
	exp := rec.OAuth.Expires
	life := exp.Sub(rec.Rotated)
	if life <= 0 {
		return rec.Rotated
	}
	sum := sha256.Sum256(append([]byte(rec.Key()), rec.Sealed...))
	frac := 0.10 + 0.10*float64(binary.BigEndian.Uint16(sum[:2]))/65535
	lead := max(time.Duration(float64(life)*frac), s.minLead())
	lead = min(lead, life/2)
	return exp.Add(-lead)
}

func (s *Service) minLead() time.Duration {
	if s.opts.OAuthRefreshMinLead > 0 {
		return s.opts.OAuthRefreshMinLead
	}
	return 30 * time.Second
}

// RunOAuthRefresher refreshes oauth credentials ahead of their expiry
// until ctx ends. Run it on the raft leader only, from gaining leadership
// to losing it: a new leader's refresher reads the committed state and
// picks up where the last one stopped. A transient failure is retried
// with backoff (up to 5 minutes apart) and marks nothing; an expired token
// with no refresh token is marked as needing consent.
func (s *Service) RunOAuthRefresher(ctx context.Context, tick time.Duration) {
	if s.d.OAuth == nil || s.d.OAuthState == nil {
		return
	}
	type retry struct {
		at   time.Time
		wait time.Duration
	}
	backoff := map[string]retry{} // by credential key and ciphertext
	t := time.NewTicker(tick)
	defer t.Stop()
	// The credentials it watches, read again only when the state changed:
	// reading (and decoding) every credential each tick cost tens of
	// milliseconds a second with 10,000 stored.
	var watched []storage.Credential
	var gen uint64
	for {
		if g := s.d.State.Generation(); g != gen || watched == nil {
			creds, err := s.d.State.Credentials()
			if err != nil {
				s.opts.Logger.Warn("oauth refresher cannot read credentials", slog.Any("error", err))
			} else {
				gen, watched = g, make([]storage.Credential, 0, len(watched))
				for _, rec := range creds {
					m := rec.OAuth
					if rec.Kind == string(vault.KindOAuth) && m != nil && !m.Consent.Blocks() && !m.Expires.IsZero() {
						watched = append(watched, rec)
					}
				}
			}
		}
		now := s.now()
		live := map[string]bool{}
		for _, rec := range watched {
			m := rec.OAuth
			key := rec.Key() + "\x00" + string(rec.Sealed)
			live[key] = true
			if now.Before(s.refreshDue(rec)) || now.Before(backoff[key].at) {
				continue
			}
			if !m.Refreshable {
				if !now.Before(m.Expires) {
					_ = s.markConsent(ctx, rec, storage.CredentialConsent{Reason: storage.ConsentNoRefreshToken, At: now.UTC()})
					s.event(OAuthEvent{Kind: storage.AuditOAuthRefresh, Org: rec.Org, Account: rec.Account, Route: rec.Route, Issuer: m.Issuer,
						Trigger: RefreshOnExpiry, Outcome: OAuthEventNeedsConsent, Error: "the access token expired and there is no refresh token"})
				}
				continue
			}
			err := s.RefreshOAuth(ctx, RefreshRequest{Org: rec.Org, Account: rec.Account, Route: rec.Route, Sealed: rec.Sealed, Trigger: RefreshOnExpiry})
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				b := backoff[key]
				b.wait = min(max(2*b.wait, 5*time.Second), 5*time.Minute)
				b.at = now.Add(b.wait)
				backoff[key] = b
				s.opts.Logger.Warn("oauth refresh ahead of expiry failed; retrying later", "org", rec.Org, "account", rec.Account, "route", rec.Route, "retry_in", b.wait, "error", err)
			}
		}
		for k := range backoff {
			if !live[k] {
				delete(backoff, k)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
