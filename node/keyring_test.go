package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// vaultStatus reads GET /v1/vault/status from n.
func vaultStatus(t testing.TB, n *Node) adminapi.VaultStatus {
	t.Helper()
	resp := adminDo(t, n, http.MethodGet, "/v1/vault/status", nil)
	defer resp.Body.Close()
	var st adminapi.VaultStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("vault status: HTTP %d, %v", resp.StatusCode, err)
	}
	return st
}

// rotateDataKey runs POST /v1/vault/rotate on n.
func rotateDataKey(t testing.TB, n *Node) adminapi.RotateResult {
	t.Helper()
	resp := adminDo(t, n, http.MethodPost, "/v1/vault/rotate", nil)
	defer resp.Body.Close()
	var res adminapi.RotateResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("rotate: HTTP %d, %v", resp.StatusCode, err)
	}
	return res
}

// waitResealed waits until n reports every record sealed with key and no
// other data key left.
func waitResealed(t testing.TB, n *Node, key string) adminapi.VaultStatus {
	t.Helper()
	return waitResealedWithin(t, n, key, 60*time.Second)
}

func waitResealedWithin(t testing.TB, n *Node, key string, within time.Duration) adminapi.VaultStatus {
	t.Helper()
	var st adminapi.VaultStatus
	deadline := time.Now().Add(within)
	for {
		st = vaultStatus(t, n)
		if !st.Rotating && len(st.Keys) == 1 && st.Keys[0].ID == key {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still rotating after %v: %d of %d records pending", n.NodeID(), within, st.Pending, st.Records)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// steadyRaft gives a test cluster timeouts long enough that leadership
// does not move on a loaded machine in the middle of a test that is not
// about failover.
func steadyRaft(c *Config) {
	c.RaftHeartbeatTimeout, c.RaftElectionTimeout = time.Second, time.Second
}

// scanForSecrets fails t if any file under dir holds one of secrets.
func scanForSecrets(t *testing.T, dir string, secrets ...string) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds %q in the clear", path, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestKeyRotationAcrossCluster: a data key rotation on one node is one
// replicated write: sessions with credentials through the two other nodes
// keep working with no restart, during and after the rotation; the
// credential and the token signing key are resealed, the old data key is
// retired, and no age secret key is in any node's raft log, state or
// snapshot.
func TestKeyRotationAcrossCluster(t *testing.T) {
	up := upstreamtest.New()
	secret := "rotation-upstream-secret-8e1d"
	up.RequireBearer.Store(&secret)
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	nodes := startCluster(t, 3, steadyRaft)
	// Writes go to the leader so each is in force there when the next
	// one is checked; the rotation goes through a follower.
	n1 := waitForLeader(t, nodes, 3)
	rot := others(nodes, n1)[0]
	route := addRoute(t, n1, storage.Route{Name: "gh", URL: url, Credential: storage.CredentialRequired})
	putCredential(t, n1, "acme", "alice", "gh", "bearer", secret)
	tok := issueToken(t, n1, "svc-a", []string{"acme"}, "1h")
	waitFor(t, "the signing key and credential on "+rot.NodeID(), func() bool { return vaultStatus(t, rot).Records == 2 })
	before := vaultStatus(t, rot)
	if len(before.Keys) != 1 || before.Keys[0].State != "active" || before.Pending != 0 {
		t.Fatalf("status before rotation: %+v, want one active data key sealing everything", before)
	}
	oldKey := before.Keys[0].ID

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	session := func(n *Node, text string) {
		t.Helper()
		sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(tok.Token))
		if err != nil {
			t.Fatalf("session through %s: %v", n.NodeID(), err)
		}
		defer sess.Close()
		if got := callText(t, ctx, sess, "echo", text); got != text {
			t.Fatalf("echo through %s = %q, want %q", n.NodeID(), got, text)
		}
	}
	for _, n := range others(nodes, rot) {
		waitFor(t, "the credential on "+n.NodeID(), func() bool { _, err := n.store.Credential("acme", "alice", "gh"); return err == nil })
		session(n, "before "+n.NodeID())
	}

	res := rotateDataKey(t, rot)
	if res.KeyID == oldKey || !slices.Equal(res.DecryptOnly, []string{oldKey}) {
		t.Fatalf("rotate = %+v, want a new key with %s decrypt-only", res, oldKey)
	}
	for _, n := range nodes {
		st := waitResealed(t, n, res.KeyID)
		if k := st.Keys[0]; k.Credentials != 1 || k.SigningKeys != 1 || !k.Unwrapped {
			t.Fatalf("%s: status %+v, want the new key sealing 1 credential and 1 signing key, open on this node", n.NodeID(), st)
		}
	}
	for _, n := range others(nodes, rot) {
		session(n, "after "+n.NodeID())
	}
	// A token issued after the rotation is signed with the resealed key and
	// verifies everywhere.
	tok2 := issueToken(t, n1, "svc-b", []string{"acme"}, "1h")
	for _, n := range nodes {
		waitFor(t, n.NodeID()+" to accept the new token", func() bool { return !tokenRefused(n, tok2.Token) })
		c, err := n.store.Credential("acme", "alice", "gh")
		if err != nil || c.KeyID != res.KeyID {
			t.Fatalf("%s: credential sealed with %s (%v), want %s", n.NodeID(), c.KeyID, err, res.KeyID)
		}
		tks, _ := n.store.TokenKeys()
		for _, k := range tks {
			if env, err := vault.DecodeEnvelope(k.Sealed); err != nil || env.KeyID != res.KeyID || k.KeyID != res.KeyID {
				t.Fatalf("%s: signing key %s sealed with %s/%s, want %s", n.NodeID(), k.ID, env.KeyID, k.KeyID, res.KeyID)
			}
		}
	}
	// No plaintext key material: not the upstream secret, and no age
	// secret key (the data keys' form in memory) in the raft log, the state
	// database, or a snapshot of it (what raft snapshots hold).
	for _, n := range nodes {
		f, err := os.Create(filepath.Join(n.cfg.DataDir, "fsm-snapshot.db"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.store.Snapshot(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if files := scanForSecrets(t, n.cfg.DataDir, secret, "AGE-SECRET-KEY-1"); files < 3 {
			t.Fatalf("%s: scanned %d files, want the raft log, state db and snapshot", n.NodeID(), files)
		}
	}
}

// TestRotationRacingWritesWin: puts and deletes acknowledged while a
// rotation runs (both while the rotate request is handled and while the
// resealer works through the records) are never undone: every credential
// ends up with the value last written, and a deleted one stays deleted.
func TestRotationRacingWritesWin(t *testing.T) {
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "gh", URL: "http://127.0.0.1:1/mcp"})
	const total = 600
	seedCredentials(t, n, "gh", total, "old")
	want := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := w; i < total; i += 17 {
				acct := fmt.Sprintf("a%04d", i)
				if i%2 == 0 {
					putCredential(t, n, "acme", acct, "gh", "bearer", "new-"+acct)
					mu.Lock()
					want[acct] = "new-" + acct
					mu.Unlock()
				} else {
					if resp := adminDo(t, n, http.MethodDelete, "/v1/credentials?org=acme&account="+acct+"&route=gh", nil); resp.StatusCode != http.StatusNoContent {
						t.Errorf("delete %s: HTTP %d", acct, resp.StatusCode)
					}
					mu.Lock()
					want[acct] = ""
					mu.Unlock()
				}
			}
		}()
	}
	close(start)
	res := rotateDataKey(t, n)
	wg.Wait()
	if st := vaultStatus(t, n); !st.Rotating {
		t.Logf("the resealer finished before the racing writes did")
	}
	st := waitResealed(t, n, res.KeyID)
	keys := n.vaultKeys()
	for i := range total {
		acct := fmt.Sprintf("a%04d", i)
		v, raced := want[acct]
		if !raced {
			v = "old-" + acct
		}
		c, err := n.store.Credential("acme", acct, "gh")
		if v == "" {
			if err == nil {
				t.Fatalf("%s was deleted during the rotation and came back", acct)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", acct, err)
		}
		cred, err := keys.Unseal(c.Sealed, vault.AAD{Org: "acme", Account: acct, Route: "gh"})
		if err != nil || cred.Token != v {
			t.Fatalf("%s holds %q (%v), want %q", acct, cred.Token, err, v)
		}
	}
	if got := st.Keys[0].Credentials; got != total-countDeleted(want) {
		t.Fatalf("status counts %d credentials, want %d", got, total-countDeleted(want))
	}
}

func countDeleted(m map[string]string) int {
	n := 0
	for _, v := range m {
		if v == "" {
			n++
		}
	}
	return n
}

// seedCredentials writes count bearer credentials "<prefix>-a<i>" for org
// acme on route, sealed with n's keys, in batches straight to raft: the
// admin API would take a round trip each.
func seedCredentials(t testing.TB, n *Node, route string, count int, prefix string) {
	t.Helper()
	keys := n.vaultKeys()
	now := time.Now().UTC().Truncate(time.Second)
	var batch []cluster.Command
	for i := range count {
		acct := fmt.Sprintf("a%04d", i)
		sealed, err := keys.Seal(vault.Credential{Kind: vault.KindBearer, Token: prefix + "-" + acct}, vault.AAD{Org: "acme", Account: acct, Route: route})
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, cluster.Command{Op: cluster.OpPutCredential, Credential: &storage.Credential{
			Org: "acme", Account: acct, Route: route, Kind: "bearer", KeyID: keys.Current().ID(), Sealed: sealed, Created: now, Rotated: now}})
		if len(batch) == 100 || i == count-1 {
			if err := n.writes.Apply(context.Background(), cluster.Command{Op: cluster.OpBatch, Batch: batch}); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
}

// TestUpgradeFromLegacyVault: state written before the keyring existed,
// with credentials and the signing key sealed with the key file's identity
// itself, keeps working; the node creates the keyring and reseals every
// record under its first data key.
func TestUpgradeFromLegacyVault(t *testing.T) {
	up := upstreamtest.New()
	secret := "legacy-upstream-secret-31c"
	up.RequireBearer.Store(&secret)
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	kek := testVaultKeys(t)
	dataDir := t.TempDir()
	// The old format: records sealed with the key-encryption key, no
	// keyring, token key without a key id.
	store, err := storage.Open(filepath.Join(dataDir, storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	route := storage.Route{Name: "gh", URL: url, Transport: storage.TransportStreamable, Kind: storage.KindExternal, Credential: storage.CredentialRequired, Created: time.Now().UTC()}
	sealed, err := kek.Seal(vault.Credential{Kind: vault.KindBearer, Token: secret}, vault.AAD{Org: "acme", Account: "alice", Route: "gh"})
	if err != nil {
		t.Fatal(err)
	}
	cmds := []cluster.Command{
		{Op: cluster.OpPutRoute, Route: &route},
		{Op: cluster.OpPutCredential, Credential: &storage.Credential{Org: "acme", Account: "alice", Route: "gh", Kind: "bearer", KeyID: kek.Current().ID(), Sealed: sealed, Created: route.Created, Rotated: route.Created}},
	}
	if err := cluster.Apply(store, 0, cluster.Command{Op: cluster.OpBatch, Batch: cmds}); err != nil {
		t.Fatal(err)
	}
	store.Close()

	n := startNode(t, func(c *Config) { c.DataDir, c.VaultKeys, c.VaultKeyFile = dataDir, kek, "" })
	var st adminapi.VaultStatus
	waitFor(t, "the legacy records to be resealed", func() bool {
		st = vaultStatus(t, n)
		return !st.Rotating && len(st.Keys) == 1 && st.Keys[0].State == "active"
	})
	if k := st.Keys[0]; k.Credentials != 1 || k.SigningKeys != 1 || !slices.Equal(k.WrappedTo, []string{kek.Current().ID()}) {
		t.Fatalf("status %+v, want one data key wrapped to %s sealing the credential and signing key", st, kek.Current().ID())
	}
	c, _ := n.store.Credential("acme", "alice", "gh")
	if c.KeyID != st.Keys[0].ID {
		t.Fatalf("credential sealed with %s, want the data key %s", c.KeyID, st.Keys[0].ID)
	}
	ctx := testContext(t, 20*time.Second)
	sess, err := client.Connect(ctx, url, "acme", "alice", viaGateway(n)...)
	if err != nil {
		t.Fatalf("session after the upgrade: %v", err)
	}
	defer sess.Close()
	if got := callText(t, ctx, sess, "echo", "upgraded"); got != "upgraded" {
		t.Fatalf("echo = %q", got)
	}
}

// TestRotateKEK: rotate-kek rewrites the key file (new key first, old
// kept) and adds a wrap for the new key in one replicated write, so a node
// still holding only the old key file keeps starting; --finish drops the
// old wrap, after which the old key file is refused with advice naming
// the new key id and the file to restore.
func TestRotateKEK(t *testing.T) {
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "gh", URL: "http://127.0.0.1:1/mcp"})
	putCredential(t, n, "acme", "alice", "gh", "bearer", "kek-secret")
	oldKEK := n.ring.KEK().Current().ID()
	oldFile := filepath.Join(t.TempDir(), "old-vault.key")
	b, err := os.ReadFile(n.cfg.VaultKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	rotate := func(path string) adminapi.KEKRotateResult {
		t.Helper()
		resp := adminDo(t, n, http.MethodPost, path, nil)
		defer resp.Body.Close()
		var res adminapi.KEKRotateResult
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d, %v", path, resp.StatusCode, err)
		}
		return res
	}
	res := rotate("/v1/vault/rotate-kek")
	want := []string{oldKEK, res.KEKID}
	slices.Sort(want)
	if res.KEKID == oldKEK || !slices.Equal(res.WrappedTo, want) {
		t.Fatalf("rotate-kek = %+v, want a new key and the keyring wrapped to both", res)
	}
	file, err := vault.LoadKeys(n.cfg.VaultKeyFile, nil)
	if err != nil || !slices.Equal(file.IDs(), []string{res.KEKID, oldKEK}) {
		t.Fatalf("key file holds %v (%v), want [%s %s]", file, err, res.KEKID, oldKEK)
	}
	if st := vaultStatus(t, n); !slices.Equal(st.NodeKEKs, []string{res.KEKID, oldKEK}) {
		t.Fatalf("status node keys %v", st.NodeKEKs)
	}
	cfg := n.cfg
	n.Close()

	// A node with the old key file only still opens the keyring.
	restart := func(keyFile string) (*Node, error) {
		t.Helper()
		c := cfg
		keys, err := vault.LoadKeys(keyFile, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.VaultKeys, c.VaultKeyFile = keys, keyFile
		m, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			m.Close()
			return nil, err
		}
		t.Cleanup(func() { m.Close() })
		return m, nil
	}
	old, err := restart(oldFile)
	if err != nil {
		t.Fatalf("restart with the old key file before --finish: %v", err)
	}
	rec, _ := old.store.Credential("acme", "alice", "gh")
	if cred, err := old.vaultKeys().Unseal(rec.Sealed, vault.AAD{Org: "acme", Account: "alice", Route: "gh"}); err != nil || cred.Token != "kek-secret" {
		t.Fatalf("the old key file's node unseals %v", err)
	}
	old.Close()

	n, err = restart(cfg.VaultKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	testTokens.Store(n, issueToken(t, n, "test-svc", []string{"*"}, "1h").Token)
	fin := rotate("/v1/vault/rotate-kek?finish=true")
	if !fin.Finished || !slices.Equal(fin.WrappedTo, []string{res.KEKID}) {
		t.Fatalf("finish = %+v, want the keyring wrapped to %s only", fin, res.KEKID)
	}
	if file, err := vault.LoadKeys(cfg.VaultKeyFile, nil); err != nil || !slices.Equal(file.IDs(), []string{res.KEKID}) {
		t.Fatalf("key file after finish holds %v (%v), want only %s", file, err, res.KEKID)
	}
	n.Close()
	_, err = restart(oldFile)
	if err == nil || !strings.Contains(err.Error(), "sealed with vault key "+res.KEKID) ||
		!strings.Contains(err.Error(), "restore the key file holding key "+res.KEKID+" to "+oldFile) {
		t.Fatalf("restart with the old key file after --finish: %v, want a refusal naming key %s and %s", err, res.KEKID, oldFile)
	}
}

// TestRotateRefusedWithoutKeyringKEK: a rotation on a node whose key
// file lacks the key-encryption key the keyring is wrapped to is refused
// rather than writing a data key other nodes cannot open.
func TestRotateRefusedWithoutKeyringKEK(t *testing.T) {
	n := startNode(t)
	other := testVaultKeys(t)
	n.ring.SetKEK(other)
	resp := adminDo(t, n, http.MethodPost, "/v1/vault/rotate", nil)
	defer resp.Body.Close()
	var e adminapi.ErrorBody
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(e.Error, "copy the current key file to this node") {
		t.Fatalf("rotate with a foreign key file: HTTP %d %q, want 409 saying to copy the key file", resp.StatusCode, e.Error)
	}
}

// TestKEKRotationAcrossNodes follows the multi-VM steps: rotate-kek on one
// node, copy its key file to the others, finish, then rotate the data key:
// sessions through the other nodes keep working at every step with no
// restart, whether a node re-read its key file for `vault status` or only
// when it met a data key its old key file could not open.
func TestKEKRotationAcrossNodes(t *testing.T) {
	up := upstreamtest.New()
	secret := "kek-rotation-upstream-secret"
	up.RequireBearer.Store(&secret)
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	nodes := startCluster(t, 3, steadyRaft, func(c *Config) {
		c.VaultKeyFile = filepath.Join(t.TempDir(), "vault.key")
		if err := vault.WriteKeysFile(c.VaultKeyFile, c.VaultKeys, nil); err != nil {
			t.Fatal(err)
		}
	})
	leader := waitForLeader(t, nodes, 3)
	rest := others(nodes, leader)
	route := addRoute(t, leader, storage.Route{Name: "gh", URL: url, Credential: storage.CredentialRequired})
	putCredential(t, leader, "acme", "alice", "gh", "bearer", secret)
	tok := issueToken(t, leader, "svc-a", []string{"acme"}, "1h")
	oldKEK := leader.ring.KEK().Current().ID()
	ctx := testContext(t, 60*time.Second)
	session := func(stage string) {
		t.Helper()
		for _, n := range rest {
			waitFor(t, "the credential on "+n.NodeID(), func() bool { _, err := n.store.Credential("acme", "alice", "gh"); return err == nil })
			sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(tok.Token))
			if err != nil {
				t.Fatalf("%s: session through %s: %v", stage, n.NodeID(), err)
			}
			if got := callText(t, ctx, sess, "echo", stage); got != stage {
				t.Fatalf("%s: echo through %s = %q", stage, n.NodeID(), got)
			}
			sess.Close()
		}
	}
	post := func(n *Node, path string, out any) {
		t.Helper()
		resp := adminDo(t, n, http.MethodPost, path, nil)
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s on %s: HTTP %d, %v", path, n.NodeID(), resp.StatusCode, err)
		}
	}
	session("before")

	// 1. rotate-kek on one node.
	var kek adminapi.KEKRotateResult
	post(leader, "/v1/vault/rotate-kek", &kek)
	session("after rotate-kek")
	// 2. copy its key file to every other node.
	b, err := os.ReadFile(leader.cfg.VaultKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range rest {
		if err := os.WriteFile(n.cfg.VaultKeyFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// 3. check one node has it; the other is not asked.
	if st := vaultStatus(t, rest[0]); !slices.Equal(st.NodeKEKs, []string{kek.KEKID, oldKEK}) {
		t.Fatalf("%s status: key file holds %v, want [%s %s]", rest[0].NodeID(), st.NodeKEKs, kek.KEKID, oldKEK)
	}
	// 4. finish.
	var fin adminapi.KEKRotateResult
	post(leader, "/v1/vault/rotate-kek?finish=true", &fin)
	if !fin.Finished || !slices.Equal(fin.WrappedTo, []string{kek.KEKID}) {
		t.Fatalf("finish = %+v", fin)
	}
	session("after finish")
	// A new data key is wrapped to the new key-encryption key only.
	res := rotateDataKey(t, leader)
	// The node never asked for its status still held only the old key
	// file in memory: it reads the file again when it meets the new key.
	quiet := rest[1]
	waitFor(t, quiet.NodeID()+" to open the new data key", func() bool { return quiet.vaultKeys().Holds(res.KeyID) })
	waitResealed(t, leader, res.KeyID)
	waitFor(t, "the resealed credential on "+quiet.NodeID(), func() bool {
		c, err := quiet.store.Credential("acme", "alice", "gh")
		return err == nil && c.KeyID == res.KeyID
	})
	session("after rotate-key")
}
