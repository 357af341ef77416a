package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// adminError is the admin API's error body.
type adminError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeAdminError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, adminError{Error: fmt.Sprintf(format, args...)})
}

// writeInternalError answers a failure on the gateway's side, such as a
// failed read of local state. The cause (a damaged record, a closed
// database) is nothing the caller can act on and may name internal keys, so
// it goes to the log for the operator.
func (n *Node) writeInternalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	n.logger.Error("admin request failed on the gateway's side", slog.String("op", what), slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
	writeAdminError(w, http.StatusInternalServerError, "%s: internal error; see the gateway log", what)
}

// exists turns the error of a typed storage getter into whether the record
// exists: storage.ErrNotFound means it does not; any other error is a
// failed read, not an answer.
func exists(err error) (bool, error) {
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// adminHandler serves the admin API: /healthz and /metrics openly, every
// /v1/ endpoint and, with Pprof, /debug/pprof/ with the admin token.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/routes", n.listRoutes)
	mux.HandleFunc("POST /v1/routes", n.putRoute)
	mux.HandleFunc("DELETE /v1/routes/{name}", n.deleteRoute)
	n.registerVaultAdmin(mux)
	n.registerPolicyAdmin(mux)
	n.registerAuditAdmin(mux)
	n.registerClusterAdmin(mux)
	// Importing net/http/pprof also registers it on http.DefaultServeMux,
	// which no listener of the node serves.
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves the named profiles: heap, goroutine, allocs…
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return http.MaxBytesHandler(n.requireAdmin(mux), 1<<20)
}

func (n *Node) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") || strings.HasPrefix(r.URL.Path, "/debug/") {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || !n.checkAdminToken(tok) {
				writeAdminError(w, http.StatusUnauthorized, "admin token missing or wrong: send Authorization: Bearer <token from %s/%s>", n.cfg.DataDir, AdminTokenFile)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (n *Node) listRoutes(w http.ResponseWriter, r *http.Request) {
	routes, err := n.store.Routes()
	if err != nil {
		n.writeInternalError(w, r, "read routes", err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(routes))
}

func (n *Node) putRoute(w http.ResponseWriter, r *http.Request) {
	var route storage.Route
	if err := decodeAdminBody(r, &route); err != nil {
		writeAdminError(w, http.StatusBadRequest, "route: %v", err)
		return
	}
	if err := validateRoute(&route); err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	status := http.StatusCreated
	old, err := n.store.Route(route.Name)
	switch found, err := exists(err); {
	case err != nil:
		n.writeInternalError(w, r, "read route", err)
		return
	case found:
		route.Created = old.Created
		status = http.StatusOK
	default:
		route.Created = time.Now().UTC().Truncate(time.Second)
	}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpPutRoute, Route: &route}); err != nil {
		writeApplyError(w, err, "write route")
		return
	}
	writeJSON(w, status, route)
}

func (n *Node) deleteRoute(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ok, err := n.found(r.Context(), func() (bool, error) {
		_, err := n.store.Route(name)
		return exists(err)
	})
	if err != nil {
		n.writeInternalError(w, r, "read route", err)
		return
	}
	if !ok {
		writeAdminError(w, http.StatusNotFound, "no route named %q; list them with `mcpgw route list`", name)
		return
	}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpDeleteRoute, Name: name}); err != nil {
		writeApplyError(w, err, "delete route")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// found reports whether find sees a record. Reads are local, so a follower
// may not have applied a write the leader acknowledged a moment ago (say, a
// token issued through another node): before answering "not found" it waits
// briefly for its copy to catch up.
func (n *Node) found(ctx context.Context, find func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		ok, err := find()
		if ok || err != nil || n.raft == nil || n.raft.Status().LeaderID == n.NodeID() || time.Now().After(deadline) {
			return ok, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
