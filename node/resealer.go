package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// The resealer's throttle. Resealing is background work: live calls,
// session opens and raft's own traffic go first. A reseal command moves at
// most resealBatch records and resealBatchBytes of sealed data, so that
// each commits and applies quickly on every node and live writes and
// heartbeats interleave with it in the log. After each batch the resealer
// rests at least resealPause, and at least as long as sealing the batch
// kept a core busy, so it never takes more than about half of a core
// between live requests, however slow the node.
const (
	resealBatch      = 64
	resealBatchBytes = 64 << 10
	resealPause      = 20 * time.Millisecond
)

// resealInterval is how often the leader looks for records sealed with a
// key other than the active data key, besides when a rotation kicks it.
const resealInterval = 2 * time.Second

// runResealer starts the leader's background resealer: it creates the
// keyring if the cluster has none yet (state written before the keyring
// existed), moves every credential and signing key to the active data key
// in small compare-and-set batches, and retires decrypt-only data keys
// once nothing references them. Followers' resealers stay idle; a new
// leader's picks up where the last stopped.
func (n *Node) runResealer() {
	n.clusterWG.Add(1)
	go func() {
		defer n.clusterWG.Done()
		// A rotation handled by a follower kicks that follower's resealer,
		// not the leader's: the leader notices the keyring change itself
		// at the next quick tick, and makes a full pass every
		// resealInterval besides.
		quick := time.NewTicker(resealInterval / 8)
		defer quick.Stop()
		var seen string // the keyring as of the last pass
		// settled is the keyring as of the last pass that found it holding
		// the active key alone: no record can be sealed with another key
		// then (the FSM refuses records under keys no longer in it), so
		// passes skip scanning every record until the keyring changes.
		var settled string
		var last time.Time
		force := true
		for {
			if n.raft.Status().State == "Leader" {
				now := keyringDigest(n.store)
				if force || now != seen || time.Since(last) >= resealInterval {
					scan := force || now != settled
					force = false
					single, err := n.resealPass(n.ctx, scan)
					if err != nil && n.ctx.Err() == nil {
						n.logger.Warn("vault reseal pass stopped; it resumes at the next one", slog.Any("error", err))
					}
					if err == nil && single {
						settled = now
					}
					seen, last = now, time.Now()
				}
			}
			select {
			case <-n.ctx.Done():
				return
			case <-n.ring.kick:
				force = true
			case <-quick.C:
			}
		}
	}()
}

// keyringDigest names the keyring's data keys and their states, so the
// resealer can tell cheaply whether it changed.
func keyringDigest(st *storage.Store) string {
	dks, err := st.DataKeys()
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, dk := range dks {
		b.WriteString(dk.ID)
		b.WriteString(string(dk.State))
		b.WriteByte(';')
	}
	return b.String()
}

// initKeyring creates the cluster's first data key, wrapped to this
// node's current key-encryption key, unless the keyring has one already.
func (n *Node) initKeyring(ctx context.Context) error {
	dks, err := n.store.DataKeys()
	if err != nil || len(dks) > 0 {
		return err
	}
	dk, err := newDataKey(n.ring.KEK(), n.now())
	if err != nil {
		return err
	}
	if err := n.writes.Apply(ctx, cluster.Command{Op: cluster.OpInitKeyring, DataKey: &dk}); err != nil {
		return fmt.Errorf("create the vault keyring: %w", err)
	}
	n.logger.Info("vault keyring created", slog.String("data_key", dk.ID), slog.String("kek", n.ring.KEK().Current().ID()))
	return nil
}

// newDataKey generates a data key wrapped to the current identity of kek.
func newDataKey(kek *vault.Keys, now time.Time) (storage.DataKey, error) {
	id, err := vault.GenerateIdentity()
	if err != nil {
		return storage.DataKey{}, err
	}
	w, err := vault.WrapDataKey(id, kek.Current())
	if err != nil {
		return storage.DataKey{}, err
	}
	return storage.DataKey{ID: id.ID(), State: storage.DataKeyActive, Created: now.UTC(),
		Wraps: map[string][]byte{kek.Current().ID(): w}}, nil
}

// resealOAuth adds to batch the reseals of OAuth client secrets not under
// the active key, and counts in refs what keeps an old key referenced:
// clients that cannot be resealed and pending flows still open (they are
// short-lived and never resealed; expired ones are deleted here).
func (n *Node) resealOAuth(ctx context.Context, keys *vault.Keys, active string, refs map[string]int, batch *[]cluster.Command) error {
	clients, err := n.store.OAuthClients()
	if err != nil {
		return err
	}
	for _, c := range clients {
		if len(c.Sealed) == 0 || c.KeyID == active {
			continue
		}
		sealed, err := keys.Reseal(c.Sealed, admin.OAuthClientAAD(c.Issuer), keys)
		if err != nil {
			refs[c.KeyID]++
			n.logger.Warn("cannot reseal an oauth client secret; it keeps its old key", slog.String("issuer", c.Issuer), slog.String("key_id", c.KeyID), slog.Any("error", err))
			continue
		}
		nc := c
		nc.Sealed, nc.KeyID = sealed, active
		*batch = append(*batch, cluster.Command{Op: cluster.OpResealOAuthClient, OAuthClient: &nc, Expect: c.Sealed})
	}
	flows, err := n.store.OAuthPendings()
	if err != nil {
		return err
	}
	now, expired := n.now().UTC(), false
	for _, f := range flows {
		switch {
		case f.KeyID == active:
		case !f.Expires.After(now):
			expired = true
		default:
			refs[f.KeyID]++
		}
	}
	if expired {
		return n.writes.Apply(ctx, cluster.Command{Op: cluster.OpExpireOAuthPending, At: now})
	}
	return nil
}

// resealPass does one round of the resealer's work; with scan false it
// skips looking through the credentials and signing keys (the keyring
// holds one key, which seals them all). It reports whether the keyring
// holds the active key alone.
func (n *Node) resealPass(ctx context.Context, scan bool) (single bool, err error) {
	if err := n.initKeyring(ctx); err != nil {
		return false, err
	}
	keys := n.vaultKeys()
	active := keys.Current().ID()
	dks, err := n.store.DataKeys()
	if err != nil {
		return false, err
	}
	isDataKey := map[string]storage.DataKeyState{}
	for _, dk := range dks {
		isDataKey[dk.ID] = dk.State
	}
	if isDataKey[active] != storage.DataKeyActive {
		// This node cannot open the active key (its key file is behind):
		// another leader has to do the work.
		return false, nil
	}
	single = len(dks) == 1
	n.reseals.passes.Add(1)
	if !scan && single {
		// Expired OAuth flows are still deleted.
		var batch []cluster.Command
		return single, n.resealOAuth(ctx, keys, active, map[string]int{}, &batch)
	}
	n.reseals.scans.Add(1)
	return single, n.resealRecords(ctx, keys, active, dks)
}

// resealRecords moves every record not sealed with the active key to it
// and retires the decrypt-only keys nothing references any more.
func (n *Node) resealRecords(ctx context.Context, keys *vault.Keys, active string, dks []storage.DataKey) error {
	refs := map[string]int{}
	var batch []cluster.Command
	var batchBytes int
	var sealing time.Duration // spent sealing the current batch
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := n.writes.Apply(ctx, cluster.Command{Op: cluster.OpBatch, Batch: batch})
		batch, batchBytes = batch[:0], 0
		if errors.Is(err, cluster.ErrRetiredKey) {
			// Cannot happen for keys this pass seals with unless the
			// keyring changed meanwhile; the next pass starts over.
			return nil
		}
		if err != nil {
			return err
		}
		rest := time.NewTimer(max(resealPause, sealing))
		defer rest.Stop()
		sealing = 0
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-rest.C:
		}
		return nil
	}
	// add queues one reseal, sending the batch once it is full.
	add := func(cmd cluster.Command, size int) error {
		batch = append(batch, cmd)
		batchBytes += size
		if len(batch) >= resealBatch || batchBytes >= resealBatchBytes {
			return flush()
		}
		// Sealing is CPU work: let live requests in between records.
		runtime.Gosched()
		return nil
	}
	creds, err := n.store.Credentials()
	if err != nil {
		return err
	}
	for _, c := range creds {
		if c.KeyID == active {
			continue
		}
		began := time.Now()
		sealed, err := keys.Reseal(c.Sealed, vault.AAD{Org: c.Org, Account: c.Account, Route: c.Route}, keys)
		sealing += time.Since(began)
		if err != nil {
			refs[c.KeyID]++
			n.logger.Warn("cannot reseal a credential; it keeps its old key", slog.String("org", c.Org), slog.String("account", c.Account), slog.String("route", c.Route), slog.String("key_id", c.KeyID), slog.Any("error", err))
			continue
		}
		nc := c
		nc.Sealed, nc.KeyID = sealed, active
		if err := add(cluster.Command{Op: cluster.OpResealCredential, Credential: &nc, Expect: c.Sealed}, len(sealed)+len(c.Sealed)); err != nil {
			return err
		}
	}
	tks, err := n.store.TokenKeys()
	if err != nil {
		return err
	}
	for _, k := range tks {
		env, err := vault.DecodeEnvelope(k.Sealed)
		if err == nil && env.KeyID == active {
			continue
		}
		aad := gateway.SigningKeyAAD(k.ID)
		began := time.Now()
		sealed, err := keys.Reseal(k.Sealed, aad, keys)
		sealing += time.Since(began)
		if err != nil {
			refs[k.KeyID]++
			n.logger.Warn("cannot reseal a token signing key; it keeps its old key", slog.String("token_key", k.ID), slog.Any("error", err))
			continue
		}
		nk := k
		nk.Sealed, nk.KeyID = sealed, active
		if err := add(cluster.Command{Op: cluster.OpResealTokenKey, TokenKey: &nk, Expect: k.Sealed}, len(sealed)+len(k.Sealed)); err != nil {
			return err
		}
	}
	if err := n.resealOAuth(ctx, keys, active, refs, &batch); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	for _, dk := range dks {
		if dk.State != storage.DataKeyDecryptOnly || refs[dk.ID] > 0 {
			continue
		}
		// The FSM retires the key only if no record references it by then:
		// a node behind the rotation may just have sealed one with it.
		if err := n.writes.Apply(ctx, cluster.Command{Op: cluster.OpRetireDataKey, Name: dk.ID}); err != nil {
			return err
		}
		after, err := n.store.DataKeys()
		if err == nil && !slices.ContainsFunc(after, func(k storage.DataKey) bool { return k.ID == dk.ID }) {
			n.logger.Info("vault data key retired: nothing references it any more", slog.String("data_key", dk.ID))
		}
	}
	return nil
}
