package node

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/gateway"
)

// newAdmin builds the admin use cases over this node's state, write path,
// vault keys, token keyring, audit log and raft member.
func (n *Node) newAdmin() (*admin.Service, error) {
	deps := admin.Deps{
		State:       n.store,
		Writes:      n.writes,
		VaultKeys:   n.ring,
		VaultRing:   n.ring,
		Keyring:     n.tokenKeyring,
		SigningKeys: n.addSigningKey,
		// The admin API checks what it writes by the rules the data path
		// reads it with.
		Checks: admin.Checks{Name: gateway.ValidName, Route: gateway.ValidateRoute, Limit: gateway.PolicyLimit},
	}
	if n.raft != nil {
		deps.Cluster = n.raft
	}
	if n.audit.log != nil {
		deps.Audit = n.audit.log
	}
	redirect, err := n.setupOAuth(&deps)
	if err != nil {
		return nil, err
	}
	var events func(admin.OAuthEvent)
	if n.oauth != nil {
		events = n.oauthEvent(newOAuthMetrics(n.metrics.registry))
	}
	return admin.New(deps, &admin.Options{
		OAuthRedirectURL: redirect,
		OAuthCIMDURL:     n.cimdURL,
		OAuthEvents:      events,
		Context:          n.ctx,
		NodeID:           n.NodeID(),
		VaultKeyFile:     n.cfg.VaultKeyFile,
		VaultPassphrase:  n.cfg.VaultPassphrase,
		Clock:            n.now,
		Logger:           n.logger,
		CheckpointRoots:  n.audit.roots,
	})
}

// adminHandler serves the admin API: /healthz (the process answers),
// /readyz (it should get traffic) and /metrics openly, every /v1/ endpoint
// with the admin token.
func (n *Node) adminHandler(svc *admin.Service) http.Handler {
	healthz := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"status": "ok"})
	})
	var protected map[string]http.Handler
	if n.cfg.Pprof {
		// Importing net/http/pprof also registers it on http.DefaultServeMux,
		// which nothing here serves: the profiles are reachable only here,
		// behind the admin token.
		protected = map[string]http.Handler{
			"/debug/pprof/":        http.HandlerFunc(pprof.Index), // also serves the named profiles: heap, goroutine, allocs…
			"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
			"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
			"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
			"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
		}
	}
	return adminapi.NewHandler(svc, n.adminToken, &adminapi.Options{
		// Not filepath.Join: the hint names the data dir as configured.
		TokenHint: n.cfg.DataDir + string(filepath.Separator) + AdminTokenFile,
		Open: map[string]http.Handler{
			"GET /healthz": healthz,
			"GET /readyz":  http.HandlerFunc(n.readyz),
			"GET /metrics": promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}),
		},
		Protected:   protected,
		Logger:      n.logger,
		Consistency: readBarrier{n.raft},
	})
}
