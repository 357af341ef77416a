package node

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
)

// ClusterJoinRequest is the body of POST /v1/cluster/join.
type ClusterJoinRequest struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // the new node's raft advertise address
}

// ClusterRemoveRequest is the body of POST /v1/cluster/remove.
type ClusterRemoveRequest struct {
	ID string `json:"id"`
}

// retryAfterSeconds is the Retry-After of a write refused while the
// cluster has no reachable leader: about one election.
const retryAfterSeconds = 1

func (n *Node) registerClusterAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cluster/status", n.clusterStatus)
	mux.HandleFunc("POST /v1/cluster/join", n.clusterJoin)
	mux.HandleFunc("POST /v1/cluster/remove", n.clusterRemove)
	mux.HandleFunc("GET /v1/backup", n.backup)
}

// writeApplyError answers a failed replicated write: 503 with Retry-After
// while no leader can take it, 409 from a node the cluster removed, 400
// for a command the state refuses, 500 otherwise. The error text says what
// happened and is never a secret.
func writeApplyError(w http.ResponseWriter, err error, what string) {
	status := http.StatusInternalServerError
	hint := ""
	switch {
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrClosed):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		hint = "; retry shortly, or send it to another node (mcpgw cluster status)"
	case errors.Is(err, cluster.ErrNotMember):
		status = http.StatusConflict
		hint = "; send it to a member (mcpgw cluster status), or join this node again"
	case errors.Is(err, cluster.ErrInvalidCommand):
		status = http.StatusBadRequest
	}
	writeAdminError(w, status, "%s: %v%s", what, err, hint)
}

func (n *Node) clusterStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.raft.Status())
}

func (n *Node) clusterJoin(w http.ResponseWriter, r *http.Request) {
	var req ClusterJoinRequest
	if err := decodeAdminBody(r, &req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if req.ID == "" || req.Addr == "" {
		writeAdminError(w, http.StatusBadRequest, "join needs the new node's id and raft address (its --raft-advertise, or --raft)")
		return
	}
	if err := n.raft.Join(r.Context(), req.ID, req.Addr); err != nil {
		writeApplyError(w, err, "join "+req.ID)
		return
	}
	writeJSON(w, http.StatusOK, n.raft.Status())
}

func (n *Node) clusterRemove(w http.ResponseWriter, r *http.Request) {
	var req ClusterRemoveRequest
	if err := decodeAdminBody(r, &req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if req.ID == "" {
		writeAdminError(w, http.StatusBadRequest, "remove needs the node id (see mcpgw cluster status)")
		return
	}
	if err := n.raft.Remove(r.Context(), req.ID); err != nil {
		writeApplyError(w, err, "remove "+req.ID)
		return
	}
	writeJSON(w, http.StatusOK, n.raft.Status())
}

// backup streams a consistent copy of the state database: routes, rules,
// limits, token metadata and credentials, the latter sealed by the vault
// (restoring needs the vault key as well).
func (n *Node) backup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=mcpgw-%s-%s.db", n.NodeID(), time.Now().UTC().Format("20060102T150405Z")))
	if applied, err := n.store.AppliedIndex(); err == nil {
		w.Header().Set("X-Mcpgw-Applied-Index", strconv.FormatUint(applied, 10))
	}
	if _, err := n.store.Snapshot(w); err != nil {
		// Headers are gone: cut the stream so the client sees a failure
		// rather than a short file.
		n.logger.Error("backup failed", "error", err)
		panic(http.ErrAbortHandler)
	}
}
