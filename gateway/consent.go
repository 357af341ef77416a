package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/transport"
)

// Consent starts upstream OAuth flows for the data path, so that a session
// refused for want of an OAuth credential can carry the link that fixes
// it. The node wires it to the admin use case that discovers the
// authorization server, registers and replicates the pending flow.
type Consent interface {
	// StartConsent starts a flow for (org, account, route) and returns its
	// authorization URL. It fails for a route whose server does not do
	// OAuth.
	StartConsent(ctx context.Context, org, account, route string) (ConsentLink, error)
	// ConsentOpen reports whether link's flow can still be completed:
	// stored, not used, not expired. StartConsent returns once it is
	// stored where ConsentOpen looks.
	ConsentOpen(link ConsentLink) bool
}

// ConsentLink is an authorization URL and when its flow expires.
type ConsentLink struct {
	URL     string
	Expires time.Time
}

// State returns the link's state parameter, which names its flow.
func (l ConsentLink) State() string {
	u, err := url.Parse(l.URL)
	if err != nil {
		return ""
	}
	return u.Query().Get("state")
}

// Bounds on consent links, so that a service retrying in a loop does not
// mint a pending flow per attempt.
const (
	// consentMinLife is the least lifetime a link must have left to be
	// handed out again: enough for a user to open it and approve.
	consentMinLife = time.Minute
	// consentFailureTTL is how long a route that could not start a flow
	// (its server does not do OAuth, or the authorization server is down)
	// is not asked again, per account.
	consentFailureTTL = 30 * time.Second
	// maxConsentLinks caps the (org, account, route) links one node keeps.
	maxConsentLinks = 4096
	// consentStartTimeout bounds discovery, registration and the flow's write.
	consentStartTimeout = 30 * time.Second
)

// errTooManyConsents refuses to start a flow when the node already holds
// maxConsentLinks live ones.
var errTooManyConsents = errors.New("this gateway node holds too many pending sign-in links; retry in a few minutes")

// consentLinks deduplicates link issuance per (org, account, route): one
// flow is started at a time per key, and its link is handed to every
// session refused while it stays open.
type consentLinks struct {
	mu    sync.Mutex
	byKey map[string]*consentEntry // guarded by mu
}

type consentEntry struct {
	ready chan struct{} // closed once link or err is set
	link  ConsentLink
	err   error
	at    time.Time // when the flow was started, or failed
}

// link returns an authorization URL for (org, account, route): the open
// flow's when there is one, else a new flow's.
func (g *Gateway) consentLink(ctx context.Context, org, account, route string) (ConsentLink, error) {
	key := org + "\x00" + account + "\x00" + route
	c := &g.consents
	for {
		now := g.opts.Clock()
		c.mu.Lock()
		if c.byKey == nil {
			c.byKey = map[string]*consentEntry{}
		}
		e, ok := c.byKey[key]
		if !ok {
			if len(c.byKey) >= maxConsentLinks {
				c.sweepLocked(now)
			}
			if len(c.byKey) >= maxConsentLinks {
				c.mu.Unlock()
				return ConsentLink{}, errTooManyConsents
			}
			e = &consentEntry{ready: make(chan struct{})}
			c.byKey[key] = e
			c.mu.Unlock()
			g.startConsent(e, org, account, route)
			g.metrics.consentLinks.WithLabelValues(consentOutcome(e.err)).Inc()
			return e.link, e.err
		}
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return ConsentLink{}, ctx.Err()
		}
		switch {
		case e.err != nil && now.Sub(e.at) < consentFailureTTL:
			return ConsentLink{}, e.err
		case e.err == nil && e.link.Expires.Sub(now) >= consentMinLife && g.opts.Consent.ConsentOpen(e.link):
			g.metrics.consentLinks.WithLabelValues("reused").Inc()
			return e.link, nil
		}
		// Used, expired or failed long enough ago: start afresh, unless
		// another session already did.
		c.mu.Lock()
		if c.byKey[key] == e {
			delete(c.byKey, key)
		}
		c.mu.Unlock()
	}
}

// startConsent fills e from a new flow and marks it ready.
func (g *Gateway) startConsent(e *consentEntry, org, account, route string) {
	defer close(e.ready)
	// Not the session's context: the flow serves every session of the
	// key that waits on it, and a caller giving up should not waste it.
	ctx, cancel := context.WithTimeout(g.ctx, consentStartTimeout)
	defer cancel()
	e.link, e.err = g.opts.Consent.StartConsent(ctx, org, account, route)
	e.at = g.opts.Clock()
	if e.err != nil {
		g.logger.Info("could not start an oauth flow for a session that needs consent", slog.String("org", org),
			slog.String("account", account), slog.String("route", route), slog.Any("error", e.err))
	}
}

// sweepLocked drops the entries no session can use any more.
func (c *consentLinks) sweepLocked(now time.Time) {
	for k, e := range c.byKey {
		select {
		case <-e.ready:
		default:
			continue
		}
		if (e.err != nil && now.Sub(e.at) >= consentFailureTTL) || (e.err == nil && e.link.Expires.Sub(now) < consentMinLife) {
			delete(c.byKey, k)
		}
	}
}

func consentOutcome(err error) string {
	if err != nil {
		return "failed"
	}
	return "issued"
}

// needsConsent reports whether a credential lookup failed in a way the
// account's user fixes by consenting: no credential yet, or an OAuth
// credential that can no longer be refreshed.
func needsConsent(err error) bool {
	return errors.Is(err, errNoCredential) || errors.Is(err, oauth.ErrNeedsConsent)
}

// consentReason is what a consent refusal says about why consent is needed.
func consentReason(err error) string {
	if errors.Is(err, oauth.ErrNeedsConsent) {
		return "the stored authorization can no longer be refreshed: " + err.Error()
	}
	return "no credential yet"
}

// consentRefusal is the refusal of a session whose account must consent
// first, carrying the authorization URL, or nil when no flow could be
// started (the route's server does not do OAuth, or this node has no
// --public-url): then the caller refuses as it would without consent.
func (g *Gateway) consentRefusal(ctx context.Context, spec sessionSpec, cause error) *consentRequired {
	if g.opts.Consent == nil || !needsConsent(cause) {
		return nil
	}
	link, err := g.consentLink(ctx, spec.org, spec.account, spec.route.Name)
	if err != nil {
		return nil
	}
	reason := consentReason(cause)
	data, _ := json.Marshal(transport.ConsentData{AuthorizationURL: link.URL, Reason: reason})
	g.metrics.refusalsTotal.WithLabelValues("consent_required").Inc()
	return &consentRequired{link: link, ref: &transport.Refusal{Code: transport.CodeConsentRequired, Data: data,
		// The URL stays out of the message: messages reach logs and the
		// audit log, and the URL's state completes the flow.
		Message: fmt.Sprintf("account %q of org %q must connect route %q first (%s): send the user to the authorization URL in this error's data (authorizationUrl), valid until %s; once they approve, connect again",
			spec.account, spec.org, spec.route.Name, reason, link.Expires.UTC().Format(time.RFC3339))}}
}
