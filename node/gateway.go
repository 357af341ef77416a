package node

import (
	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/storage"
)

// The data path reads the store the raft FSM writes.
var _ gateway.State = (*storage.Store)(nil)

// gatewayOptions returns the gateway's options of this node's Config.
func (n *Node) gatewayOptions() *gateway.Options {
	var refresher gateway.OAuthRefresher
	if n.cfg.PublicURL != "" {
		refresher = &oauthRefresher{n: n, svc: n.adminSvc.Load}
	}
	return &gateway.Options{
		OAuth:              refresher,
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
