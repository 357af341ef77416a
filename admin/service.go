package admin

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// State is the replicated state the use cases read: the local copy,
// which on a follower may lag the leader by a moment.
type State interface {
	Route(name string) (storage.Route, error)
	Routes() ([]storage.Route, error)
	Credential(org, account, route string) (storage.Credential, error)
	Credentials() ([]storage.Credential, error)
	Rules() ([]storage.Rule, error)
	Limits() ([]storage.Limit, error)
	TokenKeys() ([]storage.TokenKey, error)
	DataKeys() ([]storage.DataKey, error)
	Tokens() ([]storage.Token, error)
	Revocations() ([]storage.Revocation, error)
	AuditCheckpoints(node string) ([]storage.AuditCheckpoint, error)
	AppliedIndex() (uint64, error)
	Snapshot(w io.Writer) (int64, error)
	// Generation changes after every committed write: readers that keep
	// what they derived from the state re-read it only when it moved.
	Generation() uint64
}

var _ State = (*storage.Store)(nil)

// Writer is the replicated write path: raft in a cluster, the local store
// in tests.
type Writer interface {
	Apply(ctx context.Context, cmd cluster.Command) error
}

// VaultKeys returns the vault keys in force: the keyring's active data key
// seals. An atomic.Pointer[vault.Keys] is one.
type VaultKeys interface {
	Load() *vault.Keys
}

// VaultRing is this node's side of the vault keyring: the key-encryption
// keys of its key file, which never enter replicated state, and the
// background resealer.
type VaultRing interface {
	// KEK returns the key-encryption keys, current first.
	KEK() *vault.Keys
	// SetKEK takes new key-encryption keys after the key file was rewritten.
	SetKEK(*vault.Keys)
	// Kick has the resealer start now.
	Kick()
	// ReloadKEK reads the key file again and returns the key-encryption
	// key ids in force.
	ReloadKEK() ([]string, error)
}

// Keyring returns the service-token keyring of the current state.
type Keyring func() (*policy.Keyring, error)

// SigningKeys writes a new token signing key and retires the given ones in
// the same replicated batch. It lives beside the data path that unseals
// signing keys, since both must agree on how a key is sealed.
type SigningKeys func(ctx context.Context, retire []storage.TokenKey) error

// AuditLog is this node's audit log.
type AuditLog interface {
	Query(q storage.AuditQuery) ([]storage.AuditRecord, error)
	Verify() (int, error)
	AuditHead() (uint64, string, error)
	After(seq uint64, limit int) ([]storage.AuditRecord, error)
	Appended() <-chan struct{}
	RecordHash(seq uint64) (hash string, pruned, found bool, err error)
}

// Cluster is this node's raft member.
type Cluster interface {
	Status() cluster.Status
	Join(ctx context.Context, id, addr string) error
	Remove(ctx context.Context, id string) error
}

var _ Cluster = (*cluster.Raft)(nil)

// Checks are validations the use cases share with the data path, which must
// agree with them on what a valid name, route or limit is.
type Checks struct {
	// Name checks an org, account or service name; what names it in the
	// error.
	Name func(what, s string) error
	// Route checks a route and fills in its defaults (transport, kind,
	// credential mode, normalised URL).
	Route func(r *storage.Route) error
	// Limit converts a stored limit into the limiter's form, refusing an
	// unparsable pool.
	Limit func(l storage.Limit) (policy.Limit, error)
}

// Deps are what a Service needs. Every field is required except VaultRing
// (nil: vault key rotation and status answer ErrUnavailable), Cluster
// (nil: a single node outside raft, which never waits for replication and
// has no membership) and Audit (nil: audit endpoints answer ErrUnavailable).
type Deps struct {
	State       State
	Writes      Writer
	VaultKeys   VaultKeys
	VaultRing   VaultRing
	Keyring     Keyring
	SigningKeys SigningKeys
	Audit       AuditLog
	Cluster     Cluster
	Checks      Checks
	// OAuth runs upstream OAuth flows; nil: the OAuth use cases answer
	// ErrUnavailable. OAuthState must then be set too.
	OAuth      *oauth.Client
	OAuthState OAuthState
}

// Options tune a Service. The zero value is valid.
type Options struct {
	// NodeID names this node in audit verification results and backup
	// file names. Default: the Cluster's id.
	NodeID string
	// VaultKeyFile is where the vault keys came from; rotating the vault
	// key rewrites it. Empty: rotation is refused.
	VaultKeyFile string
	// VaultPassphrase protects VaultKeyFile when rewritten; nil writes it
	// unprotected.
	VaultPassphrase []byte
	// Clock returns the current time. Default: time.Now.
	Clock func() time.Time
	// Logger receives one line per change made. Default: discard.
	Logger *slog.Logger
	// CheckpointRoots is the cluster CA that audit checkpoint signatures
	// are verified against. Default: nil, checkpoints are compared but
	// their signatures not checked.
	CheckpointRoots *x509.CertPool
	// ReplicationWait is how long a follower waits for a record it does
	// not see yet before answering that it does not exist. Default: 2s.
	ReplicationWait time.Duration
	// OAuthRedirectURL is the gateway's public OAuth callback, which
	// authorization servers send the browser back to.
	OAuthRedirectURL string
	// OAuthCIMDURL is where the gateway serves its Client ID Metadata
	// Document; empty: it does not offer one.
	OAuthCIMDURL string
	// OAuthRefreshMinLead is how long before its expiry a token is
	// refreshed at the latest. Default: 30s.
	OAuthRefreshMinLead time.Duration
	// OAuthRefreshTimeout bounds one refresh, retries included.
	// Default: 15s.
	OAuthRefreshTimeout time.Duration
	// OAuthEvents receives every consent flow started or completed,
	// refresh and step-up, for the audit log and metrics. Default: nil, none.
	OAuthEvents func(OAuthEvent)
	// Context ends work that outlives the request that started it (a
	// refresh shared by several callers): the node's lifetime. Default:
	// context.Background().
	Context context.Context
}

// Service carries out the admin use cases. Its methods are safe for
// concurrent use.
type Service struct {
	d        Deps
	opts     Options
	rotateMu sync.Mutex // serialises vault key rotations
	// flights coalesces concurrent refreshes of one credential.
	flights singleflight.Group
}

// New returns a Service over deps. It does no I/O.
func New(deps Deps, opts *Options) (*Service, error) {
	switch {
	case deps.State == nil, deps.Writes == nil, deps.VaultKeys == nil, deps.Keyring == nil, deps.SigningKeys == nil:
		return nil, errors.New("admin: State, Writes, VaultKeys, Keyring and SigningKeys are required")
	case deps.Checks.Name == nil, deps.Checks.Route == nil, deps.Checks.Limit == nil:
		return nil, errors.New("admin: Checks.Name, Checks.Route and Checks.Limit are required")
	}
	s := &Service{d: deps}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Clock == nil {
		s.opts.Clock = time.Now
	}
	if s.opts.Logger == nil {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	if s.opts.Context == nil {
		s.opts.Context = context.Background()
	}
	if s.opts.ReplicationWait == 0 {
		s.opts.ReplicationWait = 2 * time.Second
	}
	return s, nil
}

func (s *Service) now() time.Time { return s.opts.Clock() }

// NodeID returns the id of the node this Service runs on.
func (s *Service) NodeID() string {
	if s.opts.NodeID == "" && s.d.Cluster != nil {
		return s.d.Cluster.Status().ID
	}
	return s.opts.NodeID
}

// found reports whether find sees a record. Reads are local, so a follower
// may not have applied a write the leader acknowledged a moment ago (say, a
// token issued through another node): before answering "not found" it waits
// briefly for its copy to catch up.
func (s *Service) found(ctx context.Context, find func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(s.opts.ReplicationWait)
	for {
		ok, err := find()
		if ok || err != nil || s.d.Cluster == nil || time.Now().After(deadline) {
			return ok, err
		}
		if st := s.d.Cluster.Status(); st.LeaderID == st.ID {
			return ok, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
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
