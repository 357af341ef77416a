package storage

import (
	"time"
)

// Transport names an upstream wire protocol.
type Transport string

// Upstream transports a route can use.
const (
	TransportStreamable Transport = "streamable" // streamable HTTP, the default
	TransportSSE        Transport = "sse"        // legacy HTTP+SSE (2024-11-05)
	TransportWebSocket  Transport = "websocket"  // one JSON-RPC message per text frame
	TransportStdio      Transport = "stdio"      // a local command speaking newline-delimited JSON
)

// RouteKind says whether a route leaves the company network.
type RouteKind string

// Route kinds.
const (
	KindInternal RouteKind = "internal"
	KindExternal RouteKind = "external"
)

// CredentialMode says whether a route's sessions need a credential.
type CredentialMode string

// Credential modes.
const (
	CredentialRequired CredentialMode = "required"
	CredentialOptional CredentialMode = "optional"
	CredentialNone     CredentialMode = "none"
)

// Route is one entry of the gateway's allow-list: a named upstream MCP server
// and the target URLs it answers for.
type Route struct {
	// Name identifies the route in URLs (/v1/mcp/<name>), rules and credentials.
	Name string `json:"name"`
	// URL is the upstream endpoint and, at the same time, the prefix of the
	// target URLs callers may ask for. For stdio routes it is "stdio://<name>".
	URL string `json:"url"`
	// Transport is the upstream wire protocol.
	Transport Transport `json:"transport"`
	// Command is the argv of a stdio upstream; empty for network transports.
	Command []string `json:"command,omitempty"`
	// Kind records whether the upstream is internal or external.
	Kind RouteKind `json:"kind"`
	// Credential says whether sessions need a stored credential: "required",
	// "optional" (inject one when the account has it) or "none". Empty means
	// required for external routes and optional for internal ones.
	Credential CredentialMode `json:"credential,omitempty"`
	// Created is when the route was first added.
	Created time.Time `json:"created"`
}

// Credential is a sealed credential as stored: the vault's ciphertext plus
// the metadata operators may see. It never holds plaintext.
type Credential struct {
	Org     string    `json:"org"`
	Account string    `json:"account"`
	Route   string    `json:"route"`
	Kind    string    `json:"kind"`
	KeyID   string    `json:"key_id"` // vault identity that sealed it
	Sealed  []byte    `json:"sealed"`
	Created time.Time `json:"created"`
	Rotated time.Time `json:"rotated"` // last replacement; equals Created until then
	// Issuer is the authorization server that issued an oauth credential;
	// empty for other kinds.
	Issuer string `json:"issuer,omitempty"`
}

// CredentialKey returns the storage key of the credential for (org, account,
// route). NUL cannot occur in any of the three (they are validated names).
func CredentialKey(org, account, route string) string {
	return org + "\x00" + account + "\x00" + route
}

// Key returns the credential's storage key.
func (c Credential) Key() string { return CredentialKey(c.Org, c.Account, c.Route) }

// Rule is a stored access rule; the policy package gives it meaning.
type Rule struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Org     string `json:"org"`
	Account string `json:"account"`
	Route   string `json:"route"`
	Tool    string `json:"tool"`
	Effect  string `json:"effect"`
}

// Limit is a stored cluster-wide rate limit.
type Limit struct {
	ID      string  `json:"id"`
	Service string  `json:"service"`
	Org     string  `json:"org"`
	Account string  `json:"account"`
	Route   string  `json:"route"`
	Tool    string  `json:"tool"`
	Rate    float64 `json:"rate"`
	Burst   int     `json:"burst"`
	// Pool names the fields whose values share one bucket (e.g.
	// "org,account"); empty means one bucket per distinct key.
	Pool string `json:"pool,omitempty"`
}

// TokenKey is a service-token signing key. The private half is sealed by the
// vault; the public half is stored in the clear.
type TokenKey struct {
	ID      string    `json:"id"`
	Public  []byte    `json:"public"`
	Sealed  []byte    `json:"sealed"`
	Created time.Time `json:"created"`
	Retired time.Time `json:"retired,omitzero"`
	// KeyID is the vault key that sealed the private half; empty in
	// records written before the keyring (sealed with the key-encryption
	// key itself).
	KeyID string `json:"key_id,omitempty"`
}

// DataKeyState says what a vault data key is used for.
type DataKeyState string

// Data key states.
const (
	// DataKeyActive seals new records; the keyring holds at most one.
	DataKeyActive DataKeyState = "active"
	// DataKeyDecryptOnly only opens records sealed before a rotation; it
	// is deleted once no record references it.
	DataKeyDecryptOnly DataKeyState = "decrypt-only"
)

// DataKey is one vault data-encryption key as replicated: only wrapped,
// i.e. sealed to one or more key-encryption keys (the operators' vault key
// files), which never enter replicated state.
type DataKey struct {
	ID      string       `json:"id"`
	State   DataKeyState `json:"state"`
	Created time.Time    `json:"created"`
	// Wraps maps a key-encryption key id to the data key sealed to it.
	// More than one while a key-encryption key rotation is unfinished.
	Wraps map[string][]byte `json:"wraps"`
}

// Revocation marks a service token id as revoked until the token would have
// expired anyway.
type Revocation struct {
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
}

// Token is the metadata of an issued service token, kept so operators can
// list and revoke tokens. The token itself is never stored.
type Token struct {
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	Orgs      []string  `json:"orgs"`
	KeyID     string    `json:"key_id"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}
