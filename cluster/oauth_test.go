package cluster

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/storage"
)

func TestFSMOAuthPendingIsClaimedOnce(t *testing.T) {
	s := openStore(t)
	f := newFSM(t, s)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	live := storage.OAuthStateHash("state-live")
	old := storage.OAuthStateHash("state-old")
	put := func(hash string, exp time.Time) Command {
		return Command{Op: OpPutOAuthPending, OAuthPending: &storage.OAuthPending{StateHash: hash, Org: "acme", Account: "alice", Route: "docs", Issuer: "https://as", Created: t0, Expires: exp, Sealed: []byte{1}, Flow: json.RawMessage(`{}`)}}
	}
	steps := []struct {
		cmd  Command
		want error
	}{
		{put(live, t0.Add(10*time.Minute)), nil},
		{put(old, t0.Add(time.Minute)), nil},
		{Command{Op: OpExpireOAuthPending, At: t0.Add(time.Minute)}, nil},
		{Command{Op: OpClaimOAuthPending, Name: old}, ErrAlreadyClaimed},
		{Command{Op: OpClaimOAuthPending, Name: live}, nil},
		{Command{Op: OpClaimOAuthPending, Name: live}, ErrAlreadyClaimed},
		{Command{Op: OpClaimOAuthPending}, ErrInvalidCommand},
		{Command{Op: OpExpireOAuthPending}, ErrInvalidCommand},
		{Command{Op: OpPutOAuthPending}, ErrInvalidCommand},
	}
	for i, st := range steps {
		err := applyResult(t, f, entry(t, uint64(i+1), st.cmd))
		if st.want == nil && err != nil {
			t.Fatalf("step %d (%s): %v", i, st.cmd.Op, err)
		}
		if st.want != nil && (!errors.Is(err, st.want) || !errors.Is(err, ErrInvalidCommand)) {
			t.Fatalf("step %d (%s): got %v, want %v", i, st.cmd.Op, err, st.want)
		}
	}
	if got := appliedIndex(t, s); got != uint64(len(steps)) {
		t.Fatalf("applied index %d, want %d (refused claims count as applied)", got, len(steps))
	}
	left, err := s.OAuthPendings()
	if err != nil || len(left) != 0 {
		t.Fatalf("pending flows left: %v %v", left, err)
	}
}

func TestFSMOAuthClientByIssuer(t *testing.T) {
	s := openStore(t)
	f := newFSM(t, s)
	c := storage.OAuthClient{Issuer: "https://as.example", Registration: json.RawMessage(`{"client_id":"c1"}`)}
	if err := applyResult(t, f, entry(t, 1, Command{Op: OpPutOAuthClient, OAuthClient: &c})); err != nil {
		t.Fatal(err)
	}
	got, err := s.OAuthClient("https://as.example")
	if err != nil || string(got.Registration) != `{"client_id":"c1"}` {
		t.Fatalf("got %+v, %v", got, err)
	}
	if err := applyResult(t, f, entry(t, 2, Command{Op: OpPutOAuthClient, OAuthClient: &storage.OAuthClient{}})); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("client without issuer: %v", err)
	}
}

func TestAlreadyClaimedSurvivesForwarding(t *testing.T) {
	resp := encodeError(errors.Join(ErrInvalidCommand, ErrAlreadyClaimed))
	if resp.Code != "already-claimed" {
		t.Fatalf("code %q", resp.Code)
	}
	if err := resp.err(); !errors.Is(err, ErrAlreadyClaimed) {
		t.Fatalf("decoded %v", err)
	}
}

// TestFSMRefreshIsCompareAndSet: a refreshed token set or a consent mark
// lands only on the ciphertext it was made from; a credential written
// meanwhile (a new consent, vault put, a delete) is newer and stays.
func TestFSMRefreshIsCompareAndSet(t *testing.T) {
	s := openStore(t)
	f := newFSM(t, s)
	cred := func(sealed string) *storage.Credential {
		return &storage.Credential{Org: "acme", Account: "alice", Route: "docs", Kind: "oauth", Sealed: []byte(sealed),
			OAuth: &storage.CredentialOAuth{Issuer: "https://as", Refreshable: true}}
	}
	mark := func(expect string) Command {
		return Command{Op: OpMarkCredentialConsent, Org: "acme", Account: "alice", RouteName: "docs", Expect: []byte(expect),
			Consent: &storage.CredentialConsent{Reason: storage.ConsentRefreshFailed, Error: "invalid_grant"}}
	}
	steps := []struct {
		name string
		cmd  Command
		want error
		// sealed and marked are what the record holds afterwards.
		sealed string
		marked bool
	}{
		{"consent", Command{Op: OpPutCredential, Credential: cred("t0")}, nil, "t0", false},
		{"refresh of t0", Command{Op: OpRefreshCredential, Credential: cred("t1"), Expect: []byte("t0")}, nil, "t1", false},
		{"second refresh of t0", Command{Op: OpRefreshCredential, Credential: cred("t2"), Expect: []byte("t0")}, ErrCredentialChanged, "t1", false},
		{"vault put meanwhile", Command{Op: OpPutCredential, Credential: cred("put")}, nil, "put", false},
		{"refresh of t1 after the put", Command{Op: OpRefreshCredential, Credential: cred("t2"), Expect: []byte("t1")}, ErrCredentialChanged, "put", false},
		{"mark of t1 after the put", mark("t1"), ErrCredentialChanged, "put", false},
		{"mark of the put", mark("put"), nil, "put", true},
		{"refresh without expect", Command{Op: OpRefreshCredential, Credential: cred("t3")}, ErrInvalidCommand, "put", true},
		{"mark without consent", Command{Op: OpMarkCredentialConsent, Org: "acme", Account: "alice", RouteName: "docs", Expect: []byte("put")}, ErrInvalidCommand, "put", true},
		{"new consent clears the mark", Command{Op: OpPutCredential, Credential: cred("c2")}, nil, "c2", false},
		{"deleted", Command{Op: OpDeleteCredential, Org: "acme", Account: "alice", RouteName: "docs"}, nil, "", false},
		{"refresh of a deleted one", Command{Op: OpRefreshCredential, Credential: cred("t4"), Expect: []byte("c2")}, ErrCredentialChanged, "", false},
	}
	for i, st := range steps {
		err := applyResult(t, f, entry(t, uint64(i+1), st.cmd))
		if st.want == nil && err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.want != nil && (!errors.Is(err, st.want) || !errors.Is(err, ErrInvalidCommand)) {
			t.Fatalf("%s: got %v, want %v", st.name, err, st.want)
		}
		got, err := s.Credential("acme", "alice", "docs")
		if st.sealed == "" {
			if !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("%s: credential %+v, %v; want none", st.name, got, err)
			}
			continue
		}
		if err != nil || string(got.Sealed) != st.sealed || (got.OAuth.Consent != nil) != st.marked {
			t.Fatalf("%s: credential %q marked=%v, %v; want %q marked=%v", st.name, got.Sealed, got.OAuth.Consent != nil, err, st.sealed, st.marked)
		}
	}
}
