package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// OAuthRefresher renews oauth credentials for the data path. The node
// implements it over the raft leader, which alone talks to authorization
// servers, so a refresh happens once cluster-wide.
type OAuthRefresher interface {
	// Refresh asks for a new token set for the credential whose
	// ciphertext sealed an upstream refused. When it returns nil, this
	// node's state holds the outcome: a new credential, or one marked as
	// needing consent (storage.CredentialOAuth.Consent).
	Refresh(ctx context.Context, org, account, route string, sealed []byte) error
	// StepUp records that the upstream asked for more scopes than the
	// credential sealed grants.
	StepUp(ctx context.Context, org, account, route string, sealed []byte, c oauth.Challenge) error
}

// ConsentError is why a call or session cannot use an oauth credential
// until the user consents again: the authorization server refused to
// refresh it (its code and description are in the *oauth.ASError), there
// is no refresh token, or the upstream asks for more scopes. It wraps
// oauth.ErrNeedsConsent.
type ConsentError struct {
	Org, Account, Route string
	// Reason is a storage.Consent* reason.
	Reason string
	// Scopes are what the next consent asks for (step-up).
	Scopes []string
	// AS is the authorization server's answer; its Kind is
	// oauth.ErrNeedsConsent.
	AS *oauth.ASError
}

func (e *ConsentError) Error() string {
	return fmt.Sprintf("the oauth credential of org %q, account %q on route %q needs a new consent: %v; get a sign-in link with `mcpgw oauth url --org %s --account %s --route %s` (or client.AuthorizationURL) and approve it",
		e.Org, e.Account, e.Route, e.AS, e.Org, e.Account, e.Route)
}

// Unwrap gives the authorization server's error (so errors.Is finds
// oauth.ErrNeedsConsent) and errNoCredential (so the session refusal is
// CodeNoCredential).
func (e *ConsentError) Unwrap() []error { return []error{e.AS, errNoCredential} }

// RefusalCode is the JSON-RPC code a caller gets for it.
func (e *ConsentError) RefusalCode() int64 { return transport.CodeNoCredential }

// consentError builds the ConsentError of a marked credential.
func consentError(aad vault.AAD, c *storage.CredentialConsent) *ConsentError {
	ase := &oauth.ASError{Kind: oauth.ErrNeedsConsent, Op: "refresh the oauth token", Code: c.Error, Description: c.Description}
	switch c.Reason {
	case storage.ConsentNoRefreshToken:
		ase.Op, ase.Code, ase.Description = "use the oauth token", "expired_token", "the access token expired or was refused and there is no refresh token"
	case storage.ConsentStepUp:
		ase.Op = "call the upstream"
		if ase.Description == "" {
			ase.Description = "the upstream asks for the scopes " + strings.Join(c.Scopes, " ")
		}
	}
	if ase.Code == "" {
		ase.Code = "invalid_grant"
	}
	return &ConsentError{Org: aad.Org, Account: aad.Account, Route: aad.Route, Reason: c.Reason, Scopes: c.Scopes, AS: ase}
}

// reauthorize answers an upstream's 401 or 403 to a request that carried
// the session's oauth credential: a 401 has the leader refresh it (once
// cluster-wide) and says to send the request again with the new token; a
// 403 insufficient_scope records the step-up. It is the transport's
// Upstream.Reauthorize.
func (c *credentialSource) reauthorize(ctx context.Context, status int, challenge []string, injected http.Header) (bool, error) {
	c.mu.Lock()
	cred, sealed, hdr := c.cred, c.sealed, c.hdr
	c.mu.Unlock()
	r := c.g.opts.OAuth
	if r == nil || cred == nil || cred.Kind != vault.KindOAuth {
		return false, nil
	}
	if injected.Get("Authorization") != hdr.Get("Authorization") {
		// The refused request carried an older token than the one in
		// hand: another request of this session saw it refreshed. Asking
		// the leader about the newer one would refresh it again.
		return status == http.StatusUnauthorized, nil
	}
	switch status {
	case http.StatusForbidden:
		ch, err := oauth.ParseChallengeValues(challenge)
		if err != nil || !ch.InsufficientScope() {
			return false, nil
		}
		if err := r.StepUp(ctx, c.aad.Org, c.aad.Account, c.aad.Route, sealed, ch); err != nil {
			c.g.logger.Warn("oauth step-up not recorded", slog.String("org", c.aad.Org), slog.String("account", c.aad.Account), slog.String("route", c.aad.Route), slog.Any("error", err))
		}
		scopes, _ := oauth.StepUpScopes(ch, strings.Fields(cred.OAuth.Scope))
		ce := consentError(c.aad, &storage.CredentialConsent{Reason: storage.ConsentStepUp, Error: "insufficient_scope", Description: ch.ErrorDescription, Scopes: scopes})
		// The call carries a sign-in link asking for the wider scopes, as
		// a session needing consent does, so the user can approve them
		// and the caller retry.
		if cr := c.g.consentRefusal(ctx, sessionSpec{route: c.route, org: c.aad.Org, account: c.aad.Account}, ce); cr != nil {
			return false, cr.ref
		}
		return false, ce
	case http.StatusUnauthorized:
	default:
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.opts.OAuthRefreshWait)
	defer cancel()
	if err := r.Refresh(ctx, c.aad.Org, c.aad.Account, c.aad.Route, sealed); err != nil {
		c.g.metrics.refusalsTotal.WithLabelValues("oauth_refresh").Inc()
		return false, &transport.Refusal{Code: transport.CodeUpstreamError,
			Message: fmt.Sprintf("the upstream of route %q refused the oauth token and the gateway could not refresh it (%v); retry the call shortly", c.aad.Route, err)}
	}
	rec, err := c.g.state.Credential(c.aad.Org, c.aad.Account, c.aad.Route)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return false, fmt.Errorf("%w for org %q, account %q on route %q any more: it was deleted; connect the account again (`mcpgw oauth url`)", errNoCredential, c.aad.Org, c.aad.Account, c.aad.Route)
	case err != nil:
		return false, fmt.Errorf("read credential: %w", err)
	case rec.OAuth != nil && rec.OAuth.Consent.Blocks():
		return false, consentError(c.aad, rec.OAuth.Consent)
	case bytes.Equal(rec.Sealed, sealed):
		// Refreshed, yet refused: the upstream does not take what its
		// authorization server issues.
		return false, nil
	}
	return true, nil
}

// CredentialError returns why sessions of (org, account, route) cannot use
// its stored credential right now: a *ConsentError when it is marked as
// needing consent, nil when it is usable or there is none.
func (g *Gateway) CredentialError(org, account, route string) error {
	rec, err := g.state.Credential(org, account, route)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read credential: %w", err)
	case rec.OAuth != nil && rec.OAuth.Consent.Blocks():
		return consentError(vault.AAD{Org: org, Account: account, Route: route}, rec.OAuth.Consent)
	}
	return nil
}
