package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// testKeyring stands in for the data path's keyring, which unseals the
// stored signing keys: here the keys stay in memory, and SigningKeys
// rotates them.
type testKeyring struct {
	mu      sync.Mutex
	kr      *policy.Keyring
	retired [][]storage.TokenKey
}

func (k *testKeyring) rotate(now time.Time) error {
	sk, err := policy.NewSigningKey(now)
	if err != nil {
		return err
	}
	k.kr = policy.NewKeyring([]policy.SigningKey{sk}, nil, policy.KeyringOptions{})
	return nil
}

var testName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)

// testChecks stand in for the data path's validation, which node wires:
// names as the gateway accepts them, and a route needs a name and a URL.
var testChecks = Checks{
	Name: func(what, s string) error {
		if !testName.MatchString(s) {
			return fmt.Errorf("%s %q is invalid", what, s)
		}
		return nil
	},
	Route: func(r *storage.Route) error {
		if !testName.MatchString(r.Name) || r.URL == "" {
			return fmt.Errorf("route %q needs a name and a URL", r.Name)
		}
		if r.Transport == "" {
			r.Transport = storage.TransportStreamable
		}
		return nil
	},
	Limit: func(l storage.Limit) (policy.Limit, error) {
		pool, err := policy.ParseDims(l.Pool)
		return policy.Limit{ID: l.ID, Service: l.Service, Org: l.Org, Account: l.Account, Route: l.Route, Tool: l.Tool, Rate: l.Rate, Burst: l.Burst, Pool: pool}, err
	},
}

type fixture struct {
	svc   *Service
	store *storage.Store
	w     *clustertest.LocalWriter
	keys  *atomic.Pointer[vault.Keys]
	kr    *testKeyring
	now   time.Time
}

func newFixture(t *testing.T, mutate ...func(*Deps, *Options)) *fixture {
	t.Helper()
	store, err := storage.Open(filepath.Join(t.TempDir(), storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: store, w: clustertest.NewLocalWriter(store), keys: &atomic.Pointer[vault.Keys]{}, kr: &testKeyring{},
		now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	f.keys.Store(vault.NewKeys(id))
	if err := f.kr.rotate(f.now); err != nil {
		t.Fatal(err)
	}
	deps := Deps{
		State: store, Writes: f.w, VaultKeys: f.keys, Checks: testChecks,
		Keyring: func() (*policy.Keyring, error) { f.kr.mu.Lock(); defer f.kr.mu.Unlock(); return f.kr.kr, nil },
		SigningKeys: func(ctx context.Context, retire []storage.TokenKey) error {
			f.kr.mu.Lock()
			defer f.kr.mu.Unlock()
			f.kr.retired = append(f.kr.retired, retire)
			return f.kr.rotate(f.now)
		},
	}
	opts := Options{NodeID: "n1", Clock: func() time.Time { return f.now }}
	for _, m := range mutate {
		m(&deps, &opts)
	}
	if f.svc, err = New(deps, &opts); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNewRefusesMissingDeps(t *testing.T) {
	if _, err := New(Deps{}, nil); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("New(Deps{}) = %v, want a refusal naming what is required", err)
	}
}

// TestPutRoute: a new route is stamped with the clock and reported new; a
// replaced one keeps its creation time.
func TestPutRoute(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	got, created, err := f.svc.PutRoute(ctx, storage.Route{Name: "echo", URL: "http://127.0.0.1:9/mcp"})
	if err != nil || !created {
		t.Fatalf("PutRoute = %v, created %v; want a new route", err, created)
	}
	if got.Transport != storage.TransportStreamable || !got.Created.Equal(f.now) {
		t.Fatalf("PutRoute = %+v, want the checks' defaults and created %v", got, f.now)
	}
	first := f.now
	f.now = f.now.Add(time.Hour)
	got, created, err = f.svc.PutRoute(ctx, storage.Route{Name: "echo", URL: "http://127.0.0.1:10/mcp"})
	if err != nil || created {
		t.Fatalf("replace: %v, created %v; want a replacement", err, created)
	}
	if !got.Created.Equal(first) || got.URL != "http://127.0.0.1:10/mcp" {
		t.Fatalf("replaced route %+v, want the new URL and created %v", got, first)
	}
	routes, err := f.svc.Routes(ctx)
	if err != nil || len(routes) != 1 || routes[0].URL != got.URL {
		t.Fatalf("Routes = %+v, %v; want the replaced route only", routes, err)
	}
	if err := f.svc.DeleteRoute(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if routes, _ := f.svc.Routes(ctx); len(routes) != 0 {
		t.Fatalf("Routes after delete = %+v, want none", routes)
	}
}

// TestErrorKinds: every refusal carries the kind a transport maps to a
// status, and says what was wrong and what to do.
func TestErrorKinds(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		writeErr error // the write path fails with this
		call     func(s *Service) error
		kind     error
		message  string
	}{
		{name: "invalid route", call: func(s *Service) error { _, _, err := s.PutRoute(ctx, storage.Route{Name: "a/b"}); return err },
			kind: ErrInvalid, message: `route "a/b" needs a name and a URL`},
		{name: "unknown route", call: func(s *Service) error { return s.DeleteRoute(ctx, "nope") },
			kind: ErrNotFound, message: `no route named "nope"; list them with ` + "`mcpgw route list`"},
		{name: "unknown credential", call: func(s *Service) error { return s.DeleteCredential(ctx, "acme", "alice", "echo") },
			kind: ErrNotFound, message: `no credential for org "acme", account "alice", route "echo"; list them with ` + "`mcpgw vault list`"},
		{name: "credential for an unknown route", call: func(s *Service) error {
			_, _, err := s.PutCredential(ctx, CredentialInput{Org: "acme", Account: "alice", Route: "nope", Kind: "bearer", Secret: "t"})
			return err
		}, kind: ErrInvalid, message: `no route named "nope"; add the route first with ` + "`mcpgw route add`"},
		{name: "credential with a bad org", call: func(s *Service) error {
			_, _, err := s.PutCredential(ctx, CredentialInput{Org: "a b", Account: "alice", Route: "echo", Kind: "bearer", Secret: "t"})
			return err
		}, kind: ErrInvalid, message: `org "a b" is invalid`},
		{name: "unknown token", call: func(s *Service) error { return s.RevokeToken(ctx, "t1") },
			kind: ErrNotFound, message: `no token with id "t1"; list them with ` + "`mcpgw token list`"},
		{name: "token with a bad service", call: func(s *Service) error {
			_, err := s.IssueToken(ctx, TokenRequest{Service: "", TTL: time.Hour})
			return err
		}, kind: ErrInvalid, message: `service "" is invalid`},
		{name: "unknown rule", call: func(s *Service) error { return s.DeleteRule(ctx, "r1") },
			kind: ErrNotFound, message: `no rule with id "r1"; list them with ` + "`mcpgw rule list`"},
		{name: "unknown limit", call: func(s *Service) error { return s.DeleteLimit(ctx, "l1") },
			kind: ErrNotFound, message: `no limit with id "l1"; list them with ` + "`mcpgw limit list`"},
		{name: "invalid rule", call: func(s *Service) error { _, err := s.PutRule(ctx, storage.Rule{ID: "r1", Effect: "maybe"}); return err },
			kind: ErrInvalid, message: "rule: "},
		{name: "limit with a bad pool", call: func(s *Service) error {
			_, err := s.PutLimit(ctx, storage.Limit{ID: "l1", Rate: 1, Burst: 1, Pool: "colour"})
			return err
		}, kind: ErrInvalid, message: "limit: "},
		{name: "kek rotation without a key file", call: func(s *Service) error { _, err := s.RotateKEK(ctx, false); return err },
			kind: ErrConflict, message: "rotate vault key-encryption key: this node was started without a vault key file"},
		{name: "no leader", writeErr: fmt.Errorf("apply: %w", cluster.ErrNoLeader),
			call: func(s *Service) error {
				_, _, err := s.PutRoute(ctx, storage.Route{Name: "b", URL: "http://x/"})
				return err
			},
			kind: ErrUnavailable, message: "write route: apply: " + cluster.ErrNoLeader.Error() + "; retry shortly, or send it to another node (mcpgw cluster status)"},
		{name: "removed node", writeErr: cluster.ErrNotMember,
			call: func(s *Service) error {
				_, err := s.PutRule(ctx, storage.Rule{ID: "r1", Service: "*", Org: "*", Account: "*", Route: "*", Tool: "*", Effect: "allow"})
				return err
			},
			kind: ErrConflict, message: "write rule: " + cluster.ErrNotMember.Error() + "; send it to a member (mcpgw cluster status), or join this node again"},
		{name: "command refused", writeErr: cluster.ErrInvalidCommand,
			call: func(s *Service) error { return s.DeleteRoute(ctx, "echo") },
			kind: ErrInvalid, message: "delete route: " + cluster.ErrInvalidCommand.Error()},
		{name: "write failed", writeErr: errors.New("timed out enqueuing operation"),
			call: func(s *Service) error {
				_, err := s.PutLimit(ctx, storage.Limit{ID: "l1", Service: "*", Org: "*", Account: "*", Route: "*", Tool: "*", Rate: 1, Burst: 1})
				return err
			},
			kind: ErrFailed, message: "write limit: timed out enqueuing operation"},
		{name: "outside a cluster", call: func(s *Service) error { _, err := s.ClusterStatus(ctx); return err },
			kind: ErrUnavailable, message: "cluster status: this node runs outside a cluster"},
		{name: "join without an address", call: func(s *Service) error { _, err := s.JoinNode(ctx, "n2", ""); return err },
			kind: ErrInvalid, message: "join needs the new node's id and raft address"},
		{name: "audit kind unknown", call: func(s *Service) error {
			_, err := s.QueryAudit(ctx, storage.AuditQuery{Kind: "nap", Limit: 1})
			return err
		}, kind: ErrInvalid, message: `kind "nap" is unknown: use session_open, session_close, tool_call, refusal, oauth_consent, oauth_refresh, oauth_step_up or upstream_reestablished`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if _, _, err := f.svc.PutRoute(ctx, storage.Route{Name: "echo", URL: "http://127.0.0.1:9/mcp"}); err != nil {
				t.Fatal(err)
			}
			f.w.Fail(tc.writeErr)
			err := tc.call(f.svc)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("error %v, want kind %v", err, tc.kind)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not an *admin.Error", err)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q, want it to contain %q", err, tc.message)
			}
			if tc.writeErr != nil && !errors.Is(err, tc.writeErr) {
				t.Fatalf("error %v does not wrap the write path's %v", err, tc.writeErr)
			}
		})
	}
}

// TestStoreReadFailureIsInternal: a state read that fails is ErrInternal
// naming the operation, never "not found" or a new record.
func TestStoreReadFailureIsInternal(t *testing.T) {
	f := newFixture(t)
	f.store.Close() // every read fails from here on
	_, _, err := f.svc.PutRoute(context.Background(), storage.Route{Name: "echo", URL: "http://127.0.0.1:9/mcp"})
	var e *Error
	if !errors.Is(err, ErrInternal) || !errors.As(err, &e) || e.Op != "read route" {
		t.Fatalf("PutRoute on a closed store = %v, want ErrInternal with Op %q", err, "read route")
	}
	if n := f.w.Applied(); n != 0 {
		t.Fatalf("%d writes after a failed read, want none", n)
	}
}

// TestPutCredentialSeals: the stored credential opens with the vault keys
// in force and the org/account/route it was stored for.
func TestPutCredentialSeals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.svc.PutRoute(ctx, storage.Route{Name: "echo", URL: "http://127.0.0.1:9/mcp"}); err != nil {
		t.Fatal(err)
	}
	rec, created, err := f.svc.PutCredential(ctx, CredentialInput{Org: "acme", Account: "alice", Route: "echo", Kind: "bearer", Secret: "s3cret"})
	if err != nil || !created {
		t.Fatalf("PutCredential = %v, created %v", err, created)
	}
	if got, want := rec.KeyID, f.keys.Load().Current().ID(); got != want {
		t.Fatalf("sealed with key %s, want %s", got, want)
	}
	stored, err := f.store.Credential("acme", "alice", "echo")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := f.keys.Load().Unseal(stored.Sealed, vault.AAD{Org: "acme", Account: "alice", Route: "echo"})
	if err != nil || cred.Token != "s3cret" {
		t.Fatalf("unseal = %+v, %v; want the secret back", cred, err)
	}
	if _, err := f.keys.Load().Unseal(stored.Sealed, vault.AAD{Org: "acme", Account: "bob", Route: "echo"}); err == nil {
		t.Fatal("the credential opens for another account")
	}
	if _, created, err := f.svc.PutCredential(ctx, CredentialInput{Org: "acme", Account: "alice", Route: "echo", Kind: "bearer", Secret: "s3cret2"}); err != nil || created {
		t.Fatalf("replace: %v, created %v; want a replacement", err, created)
	}
}

// testRing is the node side of the keyring for these tests: the
// key-encryption keys in memory, and a count of resealer kicks.
type testRing struct {
	kek   atomic.Pointer[vault.Keys]
	kicks atomic.Int32
}

func (r *testRing) KEK() *vault.Keys             { return r.kek.Load() }
func (r *testRing) SetKEK(k *vault.Keys)         { r.kek.Store(k) }
func (r *testRing) Kick()                        { r.kicks.Add(1) }
func (r *testRing) ReloadKEK() ([]string, error) { return r.kek.Load().IDs(), nil }

// TestRotateVaultKey: a rotation is one replicated write adding a new
// active data key, wrapped to the key-encryption key and never in the
// clear; the previous data key becomes decrypt-only, the resealer is
// kicked, and the key file is not touched.
func TestRotateVaultKey(t *testing.T) {
	ring := &testRing{}
	f := newFixture(t, func(d *Deps, o *Options) { d.VaultRing = ring })
	ring.kek.Store(f.keys.Load())
	ctx := context.Background()
	var ids []string
	for range 2 {
		res, err := f.svc.RotateVaultKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.KeyID)
	}
	dks, err := f.store.DataKeys()
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]storage.DataKeyState{}
	for _, dk := range dks {
		states[dk.ID] = dk.State
		if len(dk.Wraps) != 1 || dk.Wraps[f.keys.Load().Current().ID()] == nil {
			t.Fatalf("data key %s wrapped to %v, want the key-encryption key only", dk.ID, dk.Wraps)
		}
		id, err := f.keys.Load().UnwrapDataKey(dk.ID, dk.Wraps)
		if err != nil || id.ID() != dk.ID {
			t.Fatalf("unwrap %s: %v, %v", dk.ID, id, err)
		}
		if bytes.Contains(dk.Wraps[f.keys.Load().Current().ID()], []byte("AGE-SECRET-KEY-")) {
			t.Fatal("a wrapped data key holds an age secret key in the clear")
		}
	}
	want := map[string]storage.DataKeyState{ids[0]: storage.DataKeyDecryptOnly, ids[1]: storage.DataKeyActive}
	if diff := cmp.Diff(want, states); diff != "" {
		t.Fatalf("keyring states (-want +got):\n%s", diff)
	}
	if got := ring.kicks.Load(); got != 2 {
		t.Fatalf("resealer kicked %d times, want 2", got)
	}
	noRing := newFixture(t)
	if _, err := noRing.svc.RotateVaultKey(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("RotateVaultKey without a keyring: %v, want ErrUnavailable", err)
	}
}

// TestTokens: an issued token verifies with the keyring and is recorded;
// revoking marks it; rotating the signing key retires the active ones.
func TestTokens(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, err := f.svc.IssueToken(ctx, TokenRequest{Service: "billing", Orgs: []string{"*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := f.svc.d.Keyring()
	claims, err := kr.Verify(tok.Token, f.now)
	if err != nil || claims.ID != tok.Meta.ID || claims.Service != "billing" {
		t.Fatalf("Verify = %+v, %v; want the issued claims", claims, err)
	}
	if !tok.Meta.ExpiresAt.Equal(f.now.Add(time.Hour)) || tok.Meta.KeyID != kr.ActiveKeyID() {
		t.Fatalf("meta %+v, want expiry %v and key %s", tok.Meta, f.now.Add(time.Hour), kr.ActiveKeyID())
	}
	if err := f.svc.RevokeToken(ctx, tok.Meta.ID); err != nil {
		t.Fatal(err)
	}
	toks, err := f.svc.Tokens(ctx)
	if err != nil || len(toks) != 1 || !toks[0].Revoked || toks[0].ID != tok.Meta.ID {
		t.Fatalf("Tokens = %+v, %v; want the one token, revoked", toks, err)
	}
	id, err := f.svc.RotateTokenKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id == kr.ActiveKeyID() || id == "" {
		t.Fatalf("RotateTokenKey = %q, want a new key id", id)
	}
}

// stubCluster reports this node as a follower, or as the leader.
type stubCluster struct{ leader bool }

func (c stubCluster) Status() cluster.Status {
	st := cluster.Status{ID: "n1", LeaderID: "n2"}
	if c.leader {
		st.LeaderID = "n1"
	}
	return st
}
func (stubCluster) Join(context.Context, string, string) error { return nil }
func (stubCluster) Remove(context.Context, string) error       { return nil }

// lagging is state whose route "late" shows up on the third read, as on a
// follower applying the leader's write.
type lagging struct {
	State
	reads atomic.Int32
}

func (l *lagging) Route(name string) (storage.Route, error) {
	if name == "late" && l.reads.Add(1) >= 3 {
		return storage.Route{Name: "late"}, nil
	}
	return l.State.Route(name)
}

// TestFollowerWaitsForReplication: a follower that does not see a record
// yet reads again until it does, before answering "not found"; a leader
// answers at once.
func TestFollowerWaitsForReplication(t *testing.T) {
	for _, tc := range []struct {
		name      string
		leader    bool
		wantErr   error
		wantReads int32
	}{
		{name: "follower", leader: false, wantErr: nil, wantReads: 3},
		{name: "leader", leader: true, wantErr: ErrNotFound, wantReads: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l *lagging
			f := newFixture(t, func(d *Deps, o *Options) {
				l = &lagging{State: d.State}
				d.State, d.Cluster = l, stubCluster{leader: tc.leader}
				o.ReplicationWait = 20 * time.Second // generous: the third read ends the wait
			})
			err := f.svc.DeleteRoute(context.Background(), "late")
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("DeleteRoute = %v, want %v", err, tc.wantErr)
			}
			if got := l.reads.Load(); got != tc.wantReads {
				t.Fatalf("%d reads, want %d", got, tc.wantReads)
			}
		})
	}
}
