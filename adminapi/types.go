package adminapi

import (
	"time"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
	// Code, when set, names the kind of refusal for callers that branch
	// on it: CodeNotCurrent.
	Code string `json:"code,omitempty"`
}

// Route is an upstream MCP server callers may reach: the body of POST
// /v1/routes and an element of GET /v1/routes.
type Route struct {
	Name string `json:"name"`
	// URL is the upstream's address; stdio routes get stdio://<name>.
	URL       string `json:"url"`
	Transport string `json:"transport"` // streamable, sse, websocket or stdio
	// Command is a stdio route's program and arguments.
	Command []string `json:"command,omitempty"`
	Kind    string   `json:"kind"` // internal or external
	// Credential is required, optional or none.
	Credential string    `json:"credential,omitempty"`
	Created    time.Time `json:"created"`
}

func routeFrom(r storage.Route) Route {
	return Route{Name: r.Name, URL: r.URL, Transport: string(r.Transport), Command: r.Command, Kind: string(r.Kind), Credential: string(r.Credential), Created: r.Created}
}

func (r Route) record() storage.Route {
	return storage.Route{Name: r.Name, URL: r.URL, Transport: storage.Transport(r.Transport), Command: r.Command, Kind: storage.RouteKind(r.Kind), Credential: storage.CredentialMode(r.Credential), Created: r.Created}
}

// Rule allows or denies tool calls: the body of POST /v1/rules.
type Rule struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Org     string `json:"org"`
	Account string `json:"account"`
	Route   string `json:"route"`
	Tool    string `json:"tool"`
	Effect  string `json:"effect"` // allow or deny
}

func ruleFrom(r storage.Rule) Rule {
	return Rule{ID: r.ID, Service: r.Service, Org: r.Org, Account: r.Account, Route: r.Route, Tool: r.Tool, Effect: r.Effect}
}

func (r Rule) record() storage.Rule {
	return storage.Rule{ID: r.ID, Service: r.Service, Org: r.Org, Account: r.Account, Route: r.Route, Tool: r.Tool, Effect: r.Effect}
}

// Limit is a token-bucket rate limit: the body of POST /v1/limits.
type Limit struct {
	ID      string  `json:"id"`
	Service string  `json:"service"`
	Org     string  `json:"org"`
	Account string  `json:"account"`
	Route   string  `json:"route"`
	Tool    string  `json:"tool"`
	Rate    float64 `json:"rate"`
	Burst   int     `json:"burst"`
	// Pool names the dimensions sharing one bucket, e.g. "org,route".
	Pool string `json:"pool,omitempty"`
}

func limitFrom(l storage.Limit) Limit {
	return Limit{ID: l.ID, Service: l.Service, Org: l.Org, Account: l.Account, Route: l.Route, Tool: l.Tool, Rate: l.Rate, Burst: l.Burst, Pool: l.Pool}
}

func (l Limit) record() storage.Limit {
	return storage.Limit{ID: l.ID, Service: l.Service, Org: l.Org, Account: l.Account, Route: l.Route, Tool: l.Tool, Rate: l.Rate, Burst: l.Burst, Pool: l.Pool}
}

// CredentialInfo is what the API shows of a credential: never its value.
type CredentialInfo struct {
	Org     string    `json:"org"`
	Account string    `json:"account"`
	Route   string    `json:"route"`
	Kind    string    `json:"kind"`
	KeyID   string    `json:"key_id"`
	Created time.Time `json:"created"`
	Rotated time.Time `json:"rotated"`
}

func credentialInfo(c storage.Credential) CredentialInfo {
	return CredentialInfo{Org: c.Org, Account: c.Account, Route: c.Route, Kind: c.Kind, KeyID: c.KeyID, Created: c.Created, Rotated: c.Rotated}
}

// PutCredentialRequest is the body of PUT /v1/credentials. Secret is the raw
// text an operator piped in, parsed per kind.
type PutCredentialRequest struct {
	Org     string `json:"org"`
	Account string `json:"account"`
	Route   string `json:"route"`
	Kind    string `json:"kind"`
	Secret  string `json:"secret"`
}

// RotateResult is the answer to POST /v1/vault/rotate: the new active data
// key, the data keys now decrypt-only, and the records the background
// resealer still has to move (GET /v1/vault/status follows it).
type RotateResult struct {
	KeyID       string   `json:"key_id"`
	DecryptOnly []string `json:"decrypt_only_key_ids"`
	Pending     int      `json:"pending"`
}

// KEKRotateResult is the answer to POST /v1/vault/rotate-kek[?finish=true].
type KEKRotateResult struct {
	KEKID     string   `json:"kek_id"`
	WrappedTo []string `json:"wrapped_to"`
	Finished  bool     `json:"finished"`
}

// VaultStatus is the answer to GET /v1/vault/status.
type VaultStatus struct {
	// NodeKEKs are the key-encryption keys in this node's key file,
	// current first.
	NodeKEKs []string `json:"node_kek_ids"`
	// KeyFileError says why this node could not read its key file again.
	KeyFileError string `json:"key_file_error,omitempty"`
	// WrappedTo are the key-encryption keys the keyring is wrapped to.
	WrappedTo []string   `json:"wrapped_to"`
	Keys      []VaultKey `json:"keys"`
	Records   int        `json:"records"`
	Pending   int        `json:"pending"`
	Rotating  bool       `json:"rotating"`
}

// VaultKey is one vault key in a VaultStatus.
type VaultKey struct {
	ID          string    `json:"id"`
	State       string    `json:"state"` // active, decrypt-only or legacy
	Created     time.Time `json:"created,omitzero"`
	WrappedTo   []string  `json:"wrapped_to"`
	Unwrapped   bool      `json:"unwrapped"` // this node holds it
	Credentials int       `json:"credentials"`
	SigningKeys int       `json:"signing_keys"`
	// OAuthFlows and OAuthClients count the OAuth pending flows and client
	// registrations the key seals secrets of.
	OAuthFlows   int `json:"oauth_flows"`
	OAuthClients int `json:"oauth_clients"`
}

// IssueTokenRequest is the body of POST /v1/tokens.
type IssueTokenRequest struct {
	Service string   `json:"service"`
	Orgs    []string `json:"orgs"`
	TTL     string   `json:"ttl"` // Go duration, e.g. "24h"
}

// IssuedToken is the answer to POST /v1/tokens: the only time the token
// itself is shown.
type IssuedToken struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	Orgs      []string  `json:"orgs"`
	ExpiresAt time.Time `json:"expires_at"`
}

// TokenInfo is what GET /v1/tokens shows of an issued token.
type TokenInfo struct {
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	Orgs      []string  `json:"orgs"`
	KeyID     string    `json:"key_id"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked"`
}

func tokenInfo(t admin.TokenStatus) TokenInfo {
	return TokenInfo{ID: t.ID, Service: t.Service, Orgs: t.Orgs, KeyID: t.KeyID, IssuedAt: t.IssuedAt, ExpiresAt: t.ExpiresAt, Revoked: t.Revoked}
}

// TokenKeyRotated is the answer to POST /v1/token-keys/rotate.
type TokenKeyRotated struct {
	KeyID string `json:"key_id"`
}

// AuditVerifyResult is the answer to GET /v1/audit/verify.
type AuditVerifyResult struct {
	Node    string `json:"node"`
	Checked int    `json:"checked"`
	OK      bool   `json:"ok"`
	// BrokenSeq is the first record at fault when OK is false.
	BrokenSeq uint64 `json:"broken_seq,omitempty"`
	Error     string `json:"error,omitempty"`
	// Tamper names what was done to the log when OK is false: edited,
	// deleted, truncated, replaced or bad-checkpoint.
	Tamper string `json:"tamper,omitempty"`
	// CheckpointSeq is the replicated, signed checkpoint of this node's
	// chain the log was checked against (0: none yet).
	CheckpointSeq uint64 `json:"checkpoint_seq,omitempty"`
}

// AuditRecord is one entry of GET /v1/audit.
type AuditRecord struct {
	Seq             uint64    `json:"seq"`
	Time            time.Time `json:"time"`
	Node            string    `json:"node"`
	Kind            string    `json:"kind"`
	SessionID       string    `json:"session_id,omitempty"`
	Service         string    `json:"service,omitempty"`
	TokenID         string    `json:"token_id,omitempty"`
	Remote          string    `json:"remote,omitempty"`
	Org             string    `json:"org,omitempty"`
	Account         string    `json:"account,omitempty"`
	Route           string    `json:"route,omitempty"`
	Tool            string    `json:"tool,omitempty"`
	CredentialKeyID string    `json:"credential_key_id,omitempty"`
	Outcome         string    `json:"outcome"`
	Reason          string    `json:"reason,omitempty"`
	Code            int64     `json:"code,omitempty"`
	Error           string    `json:"error,omitempty"`
	LatencyMicros   int64     `json:"latency_us,omitempty"`
	// ArgumentsSHA256 and ResultSHA256 are a tool call's payload hashes,
	// recorded with --audit-hash-payloads.
	ArgumentsSHA256 string `json:"arguments_sha256,omitempty"`
	ResultSHA256    string `json:"result_sha256,omitempty"`
	// Prev and Hash chain the records of one node's log.
	Prev string `json:"prev"`
	Hash string `json:"hash,omitempty"`
}

func auditRecord(r storage.AuditRecord) AuditRecord {
	return AuditRecord{Seq: r.Seq, Time: r.Time, Node: r.Node, Kind: string(r.Kind), SessionID: r.SessionID, Service: r.Service, TokenID: r.TokenID,
		Remote: r.Remote, Org: r.Org, Account: r.Account, Route: r.Route, Tool: r.Tool, CredentialKeyID: r.CredentialKeyID, Outcome: r.Outcome,
		Reason: r.Reason, Code: r.Code, Error: r.Error, LatencyMicros: r.LatencyMicros,
		ArgumentsSHA256: r.ArgumentsSHA256, ResultSHA256: r.ResultSHA256, Prev: r.Prev, Hash: r.Hash}
}

// ClusterJoinRequest is the body of POST /v1/cluster/join.
type ClusterJoinRequest struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // the new node's raft advertise address
}

// ClusterRemoveRequest is the body of POST /v1/cluster/remove.
type ClusterRemoveRequest struct {
	ID string `json:"id"`
}

// ClusterStatus is the answer to GET /v1/cluster/status and to join and
// remove: the answering node's view of the cluster.
type ClusterStatus struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	State string `json:"state"` // Leader, Follower, Candidate or Shutdown

	LeaderID   string `json:"leader_id,omitempty"` // empty while no leader is known
	LeaderAddr string `json:"leader_addr,omitempty"`

	Term              uint64 `json:"term"`
	CommitIndex       uint64 `json:"commit_index"`
	AppliedIndex      uint64 `json:"applied_index"`
	LastIndex         uint64 `json:"last_index"`
	SnapshotIndex     uint64 `json:"snapshot_index"`
	SnapshotsRestored uint64 `json:"snapshots_restored"`
	// Halted says why this node stopped applying the log; empty while
	// healthy.
	Halted string `json:"halted,omitempty"`
	// StateIndex is the last raft index the node's state database holds,
	// what Mcpgw-Index answers carry.
	StateIndex uint64 `json:"state_index"`
	// LeaderChanges counts the changes of leader the node saw since it
	// started.
	LeaderChanges uint64 `json:"leader_changes"`

	Peers []Peer `json:"peers"`
}

// Peer is one server of the raft configuration, the answering node
// included.
type Peer struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"` // Voter, Nonvoter or Staging
	Leader   bool   `json:"leader,omitempty"`
	Self     bool   `json:"self,omitempty"`
	// Health is up, down or unknown.
	Health string `json:"health"`
	// LastContact is when the answering node last heard from the peer.
	LastContact time.Time `json:"last_contact,omitzero"`
}

// Health values of a Peer.
const (
	HealthUp      = string(cluster.HealthUp)
	HealthDown    = string(cluster.HealthDown)
	HealthUnknown = string(cluster.HealthUnknown)
)

func clusterStatus(st cluster.Status) ClusterStatus {
	out := ClusterStatus{ID: st.ID, Addr: st.Addr, State: st.State, LeaderID: st.LeaderID, LeaderAddr: st.LeaderAddr, Term: st.Term,
		CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastIndex: st.LastIndex, SnapshotIndex: st.SnapshotIndex,
		SnapshotsRestored: st.SnapshotsRestored, StateIndex: st.StateIndex, LeaderChanges: st.LeaderChanges, Halted: st.Halted}
	if st.Peers != nil {
		out.Peers = make([]Peer, 0, len(st.Peers))
	}
	for _, p := range st.Peers {
		out.Peers = append(out.Peers, Peer{ID: p.ID, Addr: p.Addr, Suffrage: p.Suffrage, Leader: p.Leader, Self: p.Self, Health: string(p.Health), LastContact: p.LastContact})
	}
	return out
}

// convert maps a list of records to their wire form; an empty list encodes
// as [] rather than null.
func convert[T, U any](in []T, f func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, x := range in {
		out = append(out, f(x))
	}
	return out
}
