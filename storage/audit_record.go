package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// AuditKind says what an audit record describes.
type AuditKind string

// Audit record kinds.
const (
	AuditSessionOpen  AuditKind = "session_open"
	AuditSessionClose AuditKind = "session_close"
	AuditToolCall     AuditKind = "tool_call"
	// AuditRefusal is a session refused before it opened: no or bad service
	// token, a forbidden org, no route, no credential, upstream unreachable.
	AuditRefusal AuditKind = "refusal"
	// AuditOAuthRefresh is the leader refreshing an upstream oauth token
	// set: ahead of its expiry, or after the upstream answered 401.
	AuditOAuthRefresh AuditKind = "oauth_refresh"
	// AuditStepUp is an upstream asking for more scopes than an oauth
	// credential grants (403 insufficient_scope).
	AuditStepUp AuditKind = "oauth_step_up"
	// AuditOAuthConsent is a consent flow handed out (reason "started") or
	// completed by its callback (reason "completed"), or either failing.
	AuditOAuthConsent AuditKind = "oauth_consent"
	// AuditUpstreamReestablished is an open session's stdio or WebSocket
	// upstream connection re-established because the credential it
	// carried was replaced (Reason credential_rotated) or closed because
	// it was removed (credential_removed).
	AuditUpstreamReestablished AuditKind = "upstream_reestablished"
)

// Valid reports whether k is one of the kinds above.
func (k AuditKind) Valid() bool {
	switch k {
	case AuditSessionOpen, AuditSessionClose, AuditToolCall, AuditRefusal, AuditOAuthRefresh, AuditStepUp, AuditOAuthConsent, AuditUpstreamReestablished:
		return true
	}
	return false
}

// Audit record outcomes. A refusal or an error also carries a short reason
// code (rate_limited, no_route, upstream_error…) in AuditRecord.Reason.
const (
	AuditOK      = "ok"
	AuditError   = "error"
	AuditRefused = "refused"
)

// AuditRecord is one entry of a node's audit log. It holds identities and
// outcomes only: never a credential, a service token, or the arguments or
// results of a call (at most their hashes).
type AuditRecord struct {
	// Seq numbers the node's records from 1 without gaps; Append sets it.
	Seq uint64 `json:"seq"`
	// Time is when the record was made: when a session opened or closed, or
	// a call was answered or refused.
	Time time.Time `json:"time"`
	// Node names the node that wrote the record.
	Node string    `json:"node"`
	Kind AuditKind `json:"kind"`
	// SessionID is the gateway's id of the session, empty for refusals.
	SessionID string `json:"session_id,omitempty"`
	// Service and TokenID identify the caller by its service token; empty
	// when the refusal came before the token was verified.
	Service string `json:"service,omitempty"`
	TokenID string `json:"token_id,omitempty"`
	// Remote is the downstream network address.
	Remote  string `json:"remote,omitempty"`
	Org     string `json:"org,omitempty"`
	Account string `json:"account,omitempty"`
	Route   string `json:"route,omitempty"`
	Tool    string `json:"tool,omitempty"`
	// CredentialKeyID is the id of the vault key that sealed the credential
	// injected into the upstream connection, empty when none was.
	CredentialKeyID string `json:"credential_key_id,omitempty"`
	// Issuer is the upstream authorization server of an oauth record.
	Issuer string `json:"issuer,omitempty"`
	// Outcome is AuditOK, AuditError or AuditRefused.
	Outcome string `json:"outcome"`
	// Reason is a short code saying why a call or session was refused or
	// failed, e.g. rate_limited, rule_denied, no_route, upstream_error.
	Reason string `json:"reason,omitempty"`
	// Code is the JSON-RPC error code the caller got, if any.
	Code int64 `json:"code,omitempty"`
	// Error is the message of a refusal the gateway itself wrote; errors
	// that came from an upstream are recorded by Code only.
	Error string `json:"error,omitempty"`
	// LatencyMicros is how long a call took, or a session lasted.
	LatencyMicros int64 `json:"latency_us,omitempty"`
	// ArgumentsSHA256 and ResultSHA256 are, when the node hashes payloads
	// (--audit-hash-payloads), the hex SHA-256 of a tool call's arguments
	// as forwarded upstream and of its result as the upstream sent it:
	// proof of what was asked and answered, never the values. Empty when
	// off, or when the call had no arguments or no result.
	ArgumentsSHA256 string `json:"arguments_sha256,omitempty"`
	ResultSHA256    string `json:"result_sha256,omitempty"`
	// Prev is the Hash of the record before this one (or the pruning
	// anchor); empty for the node's first record.
	Prev string `json:"prev"`
	// Hash is the hex SHA-256 of the record's canonical encoding without
	// Hash. Since that includes Prev, each record commits to every record
	// before it, and changing, removing or reordering one shows.
	//
	// The canonical encoding is encoding/json's, fields in the order above;
	// a record is stored as that encoding with Hash, the last field, added,
	// so the hash covers every stored byte but its own.
	Hash string `json:"hash,omitempty"`
}

// AuditHash returns the hash r's Hash field must hold: the hex SHA-256 of
// the canonical JSON encoding of r without Hash.
func AuditHash(r AuditRecord) (string, error) {
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// validUTF8 replaces invalid UTF-8 in r's strings, which JSON would
// otherwise encode in a form that does not survive a round trip.
func validUTF8(r *AuditRecord) {
	for _, s := range []*string{&r.Node, &r.SessionID, &r.Service, &r.TokenID, &r.Remote, &r.Org, &r.Account,
		&r.Route, &r.Tool, &r.CredentialKeyID, &r.Issuer, &r.Outcome, &r.Reason, &r.Error, &r.ArgumentsSHA256, &r.ResultSHA256} {
		*s = strings.ToValidUTF8(*s, "\uFFFD")
	}
	r.Kind = AuditKind(strings.ToValidUTF8(string(r.Kind), "\uFFFD"))
}

// hashField starts the last field of a stored record; 64 hex digits and
// `"}` follow.
var hashField = []byte(`,"hash":"`)

const hashTailLen = len(`,"hash":""}`) + 2*sha256.Size

// encodeAuditRecord sets r.Hash and returns r's stored form.
func encodeAuditRecord(r *AuditRecord) ([]byte, error) {
	r.Hash = ""
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	r.Hash = hex.EncodeToString(sum[:])
	out := make([]byte, 0, len(body)-1+hashTailLen)
	out = append(append(out, body[:len(body)-1]...), hashField...)
	return append(append(out, r.Hash...), '"', '}'), nil
}

// errAuditAltered is what decodeAuditRecord says of bytes whose hash does
// not match.
var errAuditAltered = errors.New("hash does not match the record's content: it was altered")

// checkHash checks the hash at the end of a stored record covers the rest
// of it, so no stored byte can change without the change showing, and
// returns the record without its hash field (and without its closing
// brace).
func checkHash(b []byte) ([]byte, error) {
	n := len(b) - hashTailLen
	if n < 1 || !bytes.Equal(b[n:n+len(hashField)], hashField) || !bytes.HasSuffix(b, []byte(`"}`)) {
		return nil, errors.New("not an audit record: no hash at its end")
	}
	sum := sha256.Sum256(append(b[:n:n], '}'))
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], b[n+len(hashField):len(b)-2]); err != nil || want != sum {
		return nil, errAuditAltered
	}
	return b[:n], nil
}

// chainLink reads what Verify needs of a stored record without decoding
// all of it: its seq, which the encoder writes first, its prev, which it
// writes just before the hash, and its hash, checked.
func chainLink(b []byte) (seq uint64, prev, hash string, err error) {
	body, err := checkHash(b)
	if err != nil {
		return 0, "", "", err
	}
	rest, ok := bytes.CutPrefix(body, []byte(`{"seq":`))
	i := bytes.IndexByte(rest, ',')
	// JSON escapes every quote inside a string, so `,"prev":"` only
	// occurs as the prev field itself.
	j := bytes.LastIndex(body, []byte(`,"prev":"`))
	if !ok || i < 1 || j < 0 || body[len(body)-1] != '"' || j+len(`,"prev":"`) > len(body)-1 {
		return 0, "", "", errors.New("not an audit record in canonical form")
	}
	if seq, err = strconv.ParseUint(string(rest[:i]), 10, 64); err != nil {
		return 0, "", "", errors.New("not an audit record in canonical form")
	}
	return seq, string(body[j+len(`,"prev":"`) : len(body)-1]), string(b[len(body)+len(hashField) : len(b)-2]), nil
}

// canonicalTime reads the time of a record in canonical form, whose
// encoding starts {"seq":N,"time":"…", as decoding it would.
func canonicalTime(body []byte) (time.Time, bool) {
	rest, ok := bytes.CutPrefix(body, []byte(`{"seq":`))
	i := bytes.IndexByte(rest, ',')
	if !ok || i < 1 {
		return time.Time{}, false
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(`,"time":"`))
	j := bytes.IndexByte(rest, '"')
	if !ok || j < 0 {
		return time.Time{}, false
	}
	var t time.Time
	if err := t.UnmarshalJSON(body[len(body)-len(rest)-1 : len(body)-len(rest)+j+1]); err != nil {
		return time.Time{}, false
	}
	return t, true
}

// decodeAuditRecord parses a stored record after checking its hash.
func decodeAuditRecord(b []byte) (AuditRecord, error) {
	if _, err := checkHash(b); err != nil {
		return AuditRecord{}, err
	}
	var r AuditRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return AuditRecord{}, fmt.Errorf("not an audit record: %v", err)
	}
	if dec.More() {
		return AuditRecord{}, errors.New("not an audit record: data after it")
	}
	return r, nil
}
