package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mcpgw/mcpgw/storage"
)

// Op names what a Command does.
type Op uint8

// Operations. Values are part of the log format: never renumber, only add.
const (
	OpPutRoute Op = iota + 1
	OpDeleteRoute
	OpPutCredential
	OpDeleteCredential
	OpPutRule
	OpDeleteRule
	OpPutLimit
	OpDeleteLimit
	OpPutTokenKey
	OpRevokeToken
	OpBatch
	OpPutToken
	// Vault keyring: see applyKeyring.
	OpInitKeyring
	OpRotateDataKey
	OpResealCredential
	OpResealTokenKey
	OpRetireDataKey
	OpWrapDataKeys
	OpDropKEK
	// Upstream OAuth: see applyOAuth.
	OpPutOAuthPending
	OpClaimOAuthPending
	OpExpireOAuthPending
	OpPutOAuthClient
	// OpAuditCheckpoint records a node's signed audit chain head.
	OpAuditCheckpoint
	// Upstream OAuth refresh: see applyOAuth.
	OpRefreshCredential
	OpMarkCredentialConsent
	// OpResealOAuthClient moves an OAuth client registration's sealed
	// secret to another vault key: see applyKeyring.
	OpResealOAuthClient
)

var opNames = map[Op]string{
	OpPutRoute:         "put-route",
	OpDeleteRoute:      "delete-route",
	OpPutCredential:    "put-credential",
	OpDeleteCredential: "delete-credential",
	OpPutRule:          "put-rule",
	OpDeleteRule:       "delete-rule",
	OpPutLimit:         "put-limit",
	OpDeleteLimit:      "delete-limit",
	OpPutTokenKey:      "put-token-key",
	OpRevokeToken:      "revoke-token",
	OpBatch:            "batch",
	OpPutToken:         "put-token",
	OpInitKeyring:      "init-keyring",
	OpRotateDataKey:    "rotate-data-key",
	OpResealCredential: "reseal-credential",
	OpResealTokenKey:   "reseal-token-key",
	OpRetireDataKey:    "retire-data-key",
	OpWrapDataKeys:     "wrap-data-keys",
	OpDropKEK:          "drop-kek",

	OpPutOAuthPending:    "put-oauth-pending",
	OpClaimOAuthPending:  "claim-oauth-pending",
	OpExpireOAuthPending: "expire-oauth-pending",
	OpPutOAuthClient:     "put-oauth-client",
	OpAuditCheckpoint:    "audit-checkpoint",

	OpRefreshCredential:     "refresh-credential",
	OpMarkCredentialConsent: "mark-credential-consent",
	OpResealOAuthClient:     "reseal-oauth-client",
}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// CommandVersion is the command encoding this build writes.
const CommandVersion = 1

// Command is one replicated write. Exactly the fields its Op needs are set.
// Credentials and signing keys inside are already sealed by the vault.
type Command struct {
	Op Op    `json:"op"`
	V  uint8 `json:"v"`

	Route      *storage.Route           `json:"route,omitempty"`
	Credential *storage.Credential      `json:"credential,omitempty"`
	Rule       *storage.Rule            `json:"rule,omitempty"`
	Limit      *storage.Limit           `json:"limit,omitempty"`
	TokenKey   *storage.TokenKey        `json:"token_key,omitempty"`
	Revocation *storage.Revocation      `json:"revocation,omitempty"`
	Token      *storage.Token           `json:"token,omitempty"`
	DataKey    *storage.DataKey         `json:"data_key,omitempty"`
	Checkpoint *storage.AuditCheckpoint `json:"checkpoint,omitempty"`

	OAuthPending *storage.OAuthPending `json:"oauth_pending,omitempty"`
	OAuthClient  *storage.OAuthClient  `json:"oauth_client,omitempty"`
	// At is the time an OpExpireOAuthPending expires flows as of, set by
	// the writer so every node removes the same flows.
	At time.Time `json:"at,omitzero"`

	// Expect is the sealed bytes a compare-and-set reseal replaces: the
	// reseal is skipped when the record holds anything else by then. An
	// OpRefreshCredential or OpMarkCredentialConsent is refused instead.
	Expect []byte `json:"expect,omitempty"`
	// Consent is what an OpMarkCredentialConsent records on the credential
	// Org, Account and RouteName name.
	Consent *storage.CredentialConsent `json:"consent,omitempty"`
	// Wraps are the data key wraps an OpWrapDataKeys adds.
	Wraps []KeyWrap `json:"wraps,omitempty"`

	// Name is the key of a delete: route name, rule id or limit id; the
	// data key id of OpRetireDataKey, the key-encryption key id of
	// OpDropKEK, the state hash of OpClaimOAuthPending.
	Name string `json:"name,omitempty"`
	// Org, Account and RouteName identify a credential to delete.
	Org       string `json:"org,omitempty"`
	Account   string `json:"account,omitempty"`
	RouteName string `json:"route_name,omitempty"`

	// Batch holds the commands of an OpBatch, applied in one transaction.
	Batch []Command `json:"batch,omitempty"`

	// RequestID names one write request. Apply sets it; a command whose id
	// was applied before (a write resent after a leader change) is a
	// no-op, so a write may be resent whenever its fate is unknown.
	RequestID string `json:"request_id,omitempty"`
}

// KeyWrap is one data key sealed to one key-encryption key.
type KeyWrap struct {
	DataKey string `json:"data_key"`
	KEK     string `json:"kek"`
	Sealed  []byte `json:"sealed"`
}

// requestRetention is how many log indexes a request id is remembered
// for. A resend happens within one ApplyTimeout, far fewer writes.
const requestRetention = 100_000

// ErrInvalidCommand is returned for a command that cannot be applied.
var ErrInvalidCommand = errors.New("invalid command")

// Encode returns the command's log encoding.
func (c Command) Encode() ([]byte, error) {
	c.V = CommandVersion
	return json.Marshal(c)
}

// DecodeCommand parses a log entry written by Encode.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrInvalidCommand, err)
	}
	if c.V != CommandVersion {
		return c, fmt.Errorf("%w: version %d, this build applies %d", ErrInvalidCommand, c.V, CommandVersion)
	}
	return c, nil
}

// Apply applies cmd to store in one transaction and records index as the
// last applied raft index (0 for a write that bypasses raft). It is
// deterministic: no clock, no randomness, no I/O beyond the store.
func Apply(store *storage.Store, index uint64, cmd Command) error {
	return store.Update(func(tx *storage.Tx) error {
		if cmd.RequestID != "" {
			if _, dup := tx.AppliedRequest(cmd.RequestID); dup {
				// Applied already, and successfully: only successes are
				// recorded.
				return setApplied(tx, index)
			}
		}
		if err := applyTx(tx, cmd, 0); err != nil {
			return err
		}
		if cmd.RequestID != "" && index != 0 {
			if err := tx.PutAppliedRequest(cmd.RequestID, index, requestRetention); err != nil {
				return err
			}
		}
		return setApplied(tx, index)
	})
}

func setApplied(tx *storage.Tx, index uint64) error {
	if index == 0 {
		return nil
	}
	return tx.SetAppliedIndex(index)
}

func applyTx(tx *storage.Tx, c Command, depth int) error {
	missing := func(field string) error {
		return fmt.Errorf("%w: %s without %s", ErrInvalidCommand, c.Op, field)
	}
	var err error
	switch c.Op {
	case OpPutRoute:
		if c.Route == nil {
			return missing("route")
		}
		err = tx.PutRoute(*c.Route)
	case OpDeleteRoute:
		_, err = tx.DeleteRoute(c.Name)
	case OpPutCredential:
		if c.Credential == nil {
			return missing("credential")
		}
		if err := knownKey(tx, c.Credential.KeyID); err != nil {
			return err
		}
		err = tx.PutCredential(*c.Credential)
	case OpDeleteCredential:
		_, err = tx.DeleteCredential(c.Org, c.Account, c.RouteName)
	case OpPutRule:
		if c.Rule == nil {
			return missing("rule")
		}
		err = tx.PutRule(*c.Rule)
	case OpDeleteRule:
		_, err = tx.DeleteRule(c.Name)
	case OpPutLimit:
		if c.Limit == nil {
			return missing("limit")
		}
		err = tx.PutLimit(*c.Limit)
	case OpDeleteLimit:
		_, err = tx.DeleteLimit(c.Name)
	case OpPutTokenKey:
		if c.TokenKey == nil {
			return missing("token key")
		}
		if err := knownKey(tx, c.TokenKey.KeyID); err != nil {
			return err
		}
		err = tx.PutTokenKey(*c.TokenKey)
	case OpRevokeToken:
		if c.Revocation == nil {
			return missing("revocation")
		}
		err = tx.PutRevocation(*c.Revocation)
	case OpPutToken:
		if c.Token == nil {
			return missing("token")
		}
		err = tx.PutToken(*c.Token)
	case OpPutOAuthPending, OpClaimOAuthPending, OpExpireOAuthPending, OpPutOAuthClient, OpRefreshCredential, OpMarkCredentialConsent:
		err = applyOAuth(tx, c)
	case OpInitKeyring, OpRotateDataKey, OpResealCredential, OpResealTokenKey, OpRetireDataKey, OpWrapDataKeys, OpDropKEK, OpResealOAuthClient:
		err = applyKeyring(tx, c)
	case OpAuditCheckpoint:
		if c.Checkpoint == nil || c.Checkpoint.Node == "" {
			return missing("checkpoint")
		}
		err = tx.PutAuditCheckpoint(*c.Checkpoint)
	case OpBatch:
		if depth > 0 {
			return fmt.Errorf("%w: nested batch", ErrInvalidCommand)
		}
		for _, sub := range c.Batch {
			if err := applyTx(tx, sub, depth+1); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w: unknown op %d", ErrInvalidCommand, uint8(c.Op))
	}
	return err
}
