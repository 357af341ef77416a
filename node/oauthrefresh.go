package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
)

// callOAuthRefresh names the leader's refresh handler on the forwarding
// connection.
const callOAuthRefresh = "oauth-refresh"

// oauthRefreshTick is how often the leader looks for tokens due for a
// refresh ahead of their expiry.
const oauthRefreshTick = time.Second

// oauthRefresher is the data path's way to the leader's refresher: a
// follower's sessions ask the leader over the cluster's forwarding
// connection (mutual TLS from the cluster CA, as forwarded writes), the
// leader's own sessions call it in place. Either way concurrent 401s for
// one credential become one token request.
type oauthRefresher struct {
	n   *Node
	svc func() *admin.Service // nil until the admin use cases exist
}

var _ gateway.OAuthRefresher = (*oauthRefresher)(nil)

func (r *oauthRefresher) Refresh(ctx context.Context, org, account, route string, sealed []byte) error {
	b, err := json.Marshal(admin.RefreshRequest{Org: org, Account: account, Route: route, Sealed: sealed, Trigger: admin.RefreshOnUnauthorized})
	if err != nil {
		return err
	}
	return r.n.raft.Call(ctx, callOAuthRefresh, b)
}

func (r *oauthRefresher) StepUp(ctx context.Context, org, account, route string, sealed []byte, c oauth.Challenge) error {
	svc := r.svc()
	if svc == nil {
		return fmt.Errorf("the node is still starting")
	}
	// A mark is one replicated write, which any node forwards to the leader.
	return svc.StepUpOAuth(ctx, admin.StepUpRequest{Org: org, Account: account, Route: route, Sealed: sealed, Challenge: c})
}

// serveOAuthRefresh registers the leader's side of oauthRefresher.
func (n *Node) serveOAuthRefresh(svc *admin.Service) {
	n.raft.Handle(callOAuthRefresh, func(ctx context.Context, payload []byte) (uint64, error) {
		var req admin.RefreshRequest
		if err := json.Unmarshal(payload, &req); err != nil {
			return 0, fmt.Errorf("oauth refresh request is not JSON: %w", err)
		}
		return 0, svc.RefreshOAuth(ctx, req)
	})
}

// runOAuthRefresher runs the ahead-of-expiry refresher while this node
// leads: it starts when the node gains leadership and stops when it loses
// it, so exactly one node refreshes at a time.
func (n *Node) runOAuthRefresher(svc *admin.Service) {
	if n.oauth == nil {
		return
	}
	changes, stop := n.raft.Observe()
	n.clusterWG.Add(1)
	go func() {
		defer n.clusterWG.Done()
		defer stop()
		// loop is the running refresher; its stop is nil while none runs.
		var loop struct {
			stop func()
			done chan struct{}
		}
		halt := func() {
			if loop.stop != nil {
				loop.stop()
				<-loop.done
				loop.stop = nil
				n.logger.Debug("oauth refresher stopped: no longer the leader")
			}
		}
		defer halt()
		t := time.NewTicker(time.Second) // leadership is also re-checked, in case a change went unobserved
		defer t.Stop()
		for {
			leads := n.raft.Status().State == "Leader"
			switch {
			case leads && loop.stop == nil:
				ctx, stop := context.WithCancel(n.ctx)
				loop.stop, loop.done = stop, make(chan struct{})
				go func(done chan struct{}) {
					defer close(done)
					svc.RunOAuthRefresher(ctx, oauthRefreshTick)
				}(loop.done)
				n.logger.Debug("oauth refresher started: this node leads")
			case !leads:
				halt()
			}
			select {
			case <-n.ctx.Done():
				return
			case <-changes:
			case <-t.C:
			}
		}
	}()
}

// oauthMetrics count refreshes and step-ups; labels never name an account.
type oauthMetrics struct {
	refreshes *prometheus.CounterVec // trigger, outcome
	stepUps   prometheus.Counter
}

func newOAuthMetrics(reg prometheus.Registerer) *oauthMetrics {
	m := &oauthMetrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_oauth_refreshes_total",
			Help: "Upstream oauth token refreshes this node made as leader, by trigger (expiry, 401) and outcome (ok, failed: transient, needs_consent).",
		}, []string{"trigger", "outcome"}),
		stepUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcpgw_oauth_step_ups_total",
			Help: "Upstream 403 insufficient_scope answers recorded as a step-up (the credential needs consent for more scopes).",
		}),
	}
	reg.MustRegister(m.refreshes, m.stepUps)
	return m
}

// oauthEvent records a consent flow step, refresh or step-up in this
// node's audit log and metrics.
func (n *Node) oauthEvent(m *oauthMetrics) func(admin.OAuthEvent) {
	return func(e admin.OAuthEvent) {
		switch e.Kind {
		case storage.AuditOAuthConsent:
			event := e.Trigger
			if e.Outcome != admin.OAuthEventOK {
				event = oauthFlowFailed
			}
			n.metrics.oauthEvent(event)
		case storage.AuditStepUp:
			m.stepUps.Inc()
		default:
			m.refreshes.WithLabelValues(e.Trigger, e.Outcome).Inc()
		}
		outcome := storage.AuditOK
		if e.Outcome != admin.OAuthEventOK {
			outcome = storage.AuditError
		}
		reason := e.Trigger
		if e.Outcome != admin.OAuthEventOK {
			reason = e.Outcome
		}
		n.gw.RecordAudit(storage.AuditRecord{Time: n.now(), Kind: e.Kind, Org: e.Org, Account: e.Account, Route: e.Route,
			Issuer: e.Issuer, Outcome: outcome, Reason: reason, Error: e.Error})
		n.logger.Debug("oauth event", slog.String("kind", string(e.Kind)), slog.String("outcome", e.Outcome))
	}
}
