package node

import (
	"context"
	"errors"
	"time"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/storage"
)

// The data path reads the store the raft FSM writes.
var _ gateway.State = (*storage.Store)(nil)

// gatewayOptions returns the gateway's options of this node's Config.
func (n *Node) gatewayOptions() *gateway.Options {
	var (
		refresher gateway.OAuthRefresher
		consent   gateway.Consent
	)
	if n.cfg.PublicURL != "" {
		refresher = &oauthRefresher{n: n, svc: n.adminSvc.Load}
		consent = &consentStarter{svc: n.adminSvc.Load, store: n.store, now: n.now}
	}
	return &gateway.Options{
		OAuth:              refresher,
		Consent:            consent,
		Logger:             n.logger,
		Clock:              n.cfg.Clock,
		Registerer:         n.metrics.registry,
		AuditLog:           n.audit.log,
		NodeID:             n.audit.node,
		MaxMessageBytes:    n.cfg.MaxMessageBytes,
		ConnectTimeout:     n.cfg.ConnectTimeout,
		SessionIdleTimeout: n.cfg.SessionIdleTimeout,
		OpenFrameTimeout:   n.cfg.OpenFrameTimeout,
		MaxSessions:        n.cfg.MaxSessions,
		MaxInFlightCalls:   n.cfg.MaxInFlightCalls,
		MaxCallsPerSession: n.cfg.MaxCallsPerSession,
		InsecureDev:        n.cfg.InsecureDev,
		AllowedOrigins:     n.cfg.AllowedOrigins,
		Admit:              n.admit,

		SessionAbandonTimeout: n.cfg.SessionAbandonTimeout,
		MaxStdioPerRoute:      n.cfg.MaxStdioPerRoute,
		AuditSync:             gateway.AuditSync(n.cfg.AuditSync),
		AuditFlushInterval:    n.cfg.AuditFlushInterval,
		AuditHashPayloads:     n.cfg.AuditHashPayloads,
		RotationDrainTimeout:  n.cfg.RotationDrainTimeout,
	}
}

// consentStarter gives the data path the admin use case that starts OAuth
// flows (discovery, registration, the replicated pending flow), so the
// gateway package needs no admin import. The admin service is built after
// the gateway, hence the function that returns it once it exists.
type consentStarter struct {
	svc   func() *admin.Service
	store *storage.Store
	now   func() time.Time
}

var _ gateway.Consent = (*consentStarter)(nil)

// StartConsent implements gateway.Consent.
func (c *consentStarter) StartConsent(ctx context.Context, org, account, route string) (gateway.ConsentLink, error) {
	svc := c.svc()
	if svc == nil {
		return gateway.ConsentLink{}, errors.New("upstream oauth is not ready on this node yet; retry shortly")
	}
	res, err := svc.AuthorizationURL(ctx, admin.OAuthStart{Org: org, Account: account, Route: route})
	if err != nil {
		return gateway.ConsentLink{}, err
	}
	link := gateway.ConsentLink{URL: res.URL, Expires: res.Expires}
	// The flow was written through the leader; wait (briefly) until this
	// node's copy has it, so ConsentOpen tells an open flow from a used
	// one from the start.
	deadline := time.Now().Add(consentVisibleWait)
	for !c.ConsentOpen(link) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return link, nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	return link, nil
}

// consentVisibleWait bounds StartConsent's wait for its flow to reach this
// node's copy of the state.
const consentVisibleWait = 5 * time.Second

// ConsentOpen implements gateway.Consent: the flow is still in this node's
// copy of the replicated state (a completed flow is deleted) and unexpired.
func (c *consentStarter) ConsentOpen(l gateway.ConsentLink) bool {
	state := l.State()
	if state == "" {
		return false
	}
	p, err := c.store.OAuthPending(storage.OAuthStateHash(state))
	return err == nil && p.Expires.After(c.now())
}
