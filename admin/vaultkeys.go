package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// RotateResult is the outcome of a data key rotation: the new active key,
// the keys now decrypt-only, and how many records still wait for the
// background resealer.
type RotateResult struct {
	KeyID       string
	DecryptOnly []string
	Pending     int
}

// KEKRotateResult is the outcome of a key-encryption key rotation.
type KEKRotateResult struct {
	// KEKID is the key-encryption key now current in this node's key file.
	KEKID string
	// Wrapped lists the key-encryption keys the keyring is wrapped to now.
	Wrapped []string
	// Finished says the old key-encryption keys were dropped (--finish).
	Finished bool
}

// VaultStatus describes the vault keyring as this node sees it.
type VaultStatus struct {
	// NodeKEKs are the key-encryption keys of this node's key file,
	// current first, as read again for this status.
	NodeKEKs []string
	// KeyFileError says why the key file could not be read again; NodeKEKs
	// are then the keys the node holds in memory.
	KeyFileError string
	// WrappedTo are the key-encryption keys the keyring is wrapped to; a
	// node needs one of them in its key file.
	WrappedTo []string
	// Keys lists the data keys, newest first, then key-encryption keys
	// that still seal records directly (state "legacy").
	Keys []VaultKeyStatus
	// Records counts sealed records (credentials, signing keys, OAuth
	// pending flows and client secrets); Pending those not yet under the
	// active data key.
	Records, Pending int
	// Rotating is set while records are pending or a decrypt-only key is
	// not yet retired.
	Rotating bool
}

// VaultKeyStatus is one vault key and what it seals.
type VaultKeyStatus struct {
	ID          string
	State       string // active, decrypt-only or legacy
	Created     time.Time
	WrappedTo   []string // key-encryption key ids; empty for legacy
	Unwrapped   bool     // this node holds it
	Credentials int
	SigningKeys int
	// OAuthFlows and OAuthClients count the OAuth pending flows and
	// client registrations whose secrets the key seals: a key is retired
	// only once they are resealed or gone.
	OAuthFlows   int
	OAuthClients int
}

// oauthRecords is the replicated state's OAuth records, for counting what
// each vault key seals.
type oauthRecords interface {
	OAuthPendings() ([]storage.OAuthPending, error)
	OAuthClients() ([]storage.OAuthClient, error)
}

var _ oauthRecords = (*storage.Store)(nil)

// OAuthClientAAD is the additional data an OAuth client registration's
// secret is sealed with, for the resealer.
func OAuthClientAAD(issuer string) vault.AAD { return clientAAD(issuer) }

func (s *Service) vaultRing(op string) (VaultRing, error) {
	if s.d.VaultRing == nil {
		return nil, &Error{Kind: ErrUnavailable, Op: op, Err: errors.New("this node has no vault keyring")}
	}
	return s.d.VaultRing, nil
}

// RotateVaultKey makes a new data key active in one replicated write that
// every node applies: from then on every node seals with it, and the old
// data key only opens. The leader's resealer then moves every credential
// and signing key to the new key in small compare-and-set batches (a put
// or delete made meanwhile wins) and retires the old key when nothing
// references it. The key file is not touched.
func (s *Service) RotateVaultKey(ctx context.Context) (RotateResult, error) {
	const op = "rotate vault data key"
	ring, err := s.vaultRing(op)
	if err != nil {
		return RotateResult{}, err
	}
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	kek := ring.KEK()
	dks, err := s.d.State.DataKeys()
	if err != nil {
		return RotateResult{}, internal("read vault keyring", err)
	}
	wrapTo := wrappedTo(dks)
	if len(wrapTo) == 0 {
		wrapTo = []string{kek.Current().ID()}
	}
	for _, id := range wrapTo {
		if !kek.Holds(id) {
			return RotateResult{}, &Error{Kind: ErrConflict, Op: op, Err: fmt.Errorf("the keyring is wrapped to key-encryption key %s, which this node's key file does not hold: copy the current key file to this node, or rotate on a node that has it", id)}
		}
	}
	id, err := vault.GenerateIdentity()
	if err != nil {
		return RotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: err}
	}
	dk := storage.DataKey{ID: id.ID(), State: storage.DataKeyActive, Created: s.now().UTC(), Wraps: map[string][]byte{}}
	for _, kid := range wrapTo {
		w, err := vault.WrapDataKey(id, kekIdentity(kek, kid))
		if err != nil {
			return RotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: err}
		}
		dk.Wraps[kid] = w
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpRotateDataKey, DataKey: &dk}); err != nil {
		return RotateResult{}, writeError(op, err)
	}
	ring.Kick()
	// On a follower the rotation may not be applied here yet: the answer
	// describes the keyring with it.
	if _, err := s.found(ctx, func() (bool, error) {
		dks, err := s.d.State.DataKeys()
		return slices.ContainsFunc(dks, func(k storage.DataKey) bool { return k.ID == dk.ID }), err
	}); err != nil {
		return RotateResult{}, internal("read vault keyring", err)
	}
	st, err := s.VaultStatus(ctx)
	if err != nil {
		return RotateResult{}, err
	}
	res := RotateResult{KeyID: dk.ID, Pending: st.Pending}
	for _, k := range st.Keys {
		if k.State == string(storage.DataKeyDecryptOnly) {
			res.DecryptOnly = append(res.DecryptOnly, k.ID)
		}
	}
	s.opts.Logger.Info("vault data key rotated", "key_id", dk.ID, "pending", res.Pending)
	return res, nil
}

// RotateKEK replaces this node's key-encryption key. Without finish it
// writes a new key file (the new key first, the old ones kept after it)
// and adds a wrap of every data key for the new key in one replicated
// write; nodes still holding only the old key file keep working. With
// finish, once the new key file is on every node, it drops the wraps of
// every other key-encryption key and the old keys from this node's key
// file. It refuses while records are still sealed with an old
// key-encryption key directly (state from before the keyring).
func (s *Service) RotateKEK(ctx context.Context, finish bool) (KEKRotateResult, error) {
	const op = "rotate vault key-encryption key"
	if s.opts.VaultKeyFile == "" {
		return KEKRotateResult{}, &Error{Kind: ErrConflict, Op: op, Err: errors.New("this node was started without a vault key file; rotating the key-encryption key needs one (--vault-key)")}
	}
	ring, err := s.vaultRing(op)
	if err != nil {
		return KEKRotateResult{}, err
	}
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	kek := ring.KEK()
	dks, err := s.d.State.DataKeys()
	if err != nil {
		return KEKRotateResult{}, internal("read vault keyring", err)
	}
	if len(dks) == 0 {
		return KEKRotateResult{}, &Error{Kind: ErrConflict, Op: op, Err: errors.New("the cluster has no vault keyring yet; it is created when the leader starts: try again in a moment")}
	}
	if finish {
		return s.finishKEK(ctx, op, ring, kek, dks)
	}
	next, err := vault.GenerateIdentity()
	if err != nil {
		return KEKRotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: err}
	}
	var wraps []cluster.KeyWrap
	for _, dk := range dks {
		dek, err := kek.UnwrapDataKey(dk.ID, dk.Wraps)
		if err != nil {
			return KEKRotateResult{}, &Error{Kind: ErrConflict, Op: op, Err: fmt.Errorf("%w: rotate on a node whose key file opens every data key", err)}
		}
		w, err := vault.WrapDataKey(dek, next)
		if err != nil {
			return KEKRotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: err}
		}
		wraps = append(wraps, cluster.KeyWrap{DataKey: dk.ID, KEK: next.ID(), Sealed: w})
	}
	// The file first: a crash after it leaves the keyring as it was, still
	// opened by the old key the file keeps.
	newKEK := kek.Rotate(next)
	if err := vault.ReplaceKeysFile(s.opts.VaultKeyFile, newKEK, s.opts.VaultPassphrase); err != nil {
		return KEKRotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: fmt.Errorf("write new vault key file: %w", err)}
	}
	ring.SetKEK(newKEK)
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpWrapDataKeys, Wraps: wraps}); err != nil {
		return KEKRotateResult{}, writeError(op, err)
	}
	after, _ := s.d.State.DataKeys()
	s.opts.Logger.Info("vault key-encryption key rotated; copy the key file to every node, then finish", "kek", next.ID())
	return KEKRotateResult{KEKID: next.ID(), Wrapped: wrappedTo(after)}, nil
}

func (s *Service) finishKEK(ctx context.Context, op string, ring VaultRing, kek *vault.Keys, dks []storage.DataKey) (KEKRotateResult, error) {
	cur := kek.Current().ID()
	for _, dk := range dks {
		if _, ok := dk.Wraps[cur]; !ok {
			return KEKRotateResult{}, &Error{Kind: ErrConflict, Op: op, Err: fmt.Errorf("data key %s is not wrapped to this node's key-encryption key %s: run `mcpgw vault rotate-kek` first, on a node with the current key file", dk.ID, cur)}
		}
	}
	st, err := s.VaultStatus(ctx)
	if err != nil {
		return KEKRotateResult{}, err
	}
	for _, k := range st.Keys {
		if k.State == "legacy" && k.ID != cur {
			return KEKRotateResult{}, &Error{Kind: ErrConflict, Op: op, Err: fmt.Errorf("%d credentials and %d signing keys are still sealed with key %s directly; wait until `mcpgw vault status` shows none pending, then finish", k.Credentials, k.SigningKeys, k.ID)}
		}
	}
	for _, id := range wrappedTo(dks) {
		if id == cur {
			continue
		}
		if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpDropKEK, Name: id}); err != nil {
			return KEKRotateResult{}, writeError(op, err)
		}
	}
	if len(kek.Retired()) > 0 {
		only := vault.NewKeys(kek.Current())
		if err := vault.ReplaceKeysFile(s.opts.VaultKeyFile, only, s.opts.VaultPassphrase); err != nil {
			return KEKRotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: fmt.Errorf("write vault key file: %w", err)}
		}
		ring.SetKEK(only)
	}
	s.opts.Logger.Info("vault key-encryption key rotation finished", "kek", cur)
	return KEKRotateResult{KEKID: cur, Wrapped: []string{cur}, Finished: true}, nil
}

// VaultStatus reports the keyring: key ids, state, what each seals, and
// how far the resealer has come.
func (s *Service) VaultStatus(ctx context.Context) (VaultStatus, error) {
	ring, err := s.vaultRing("vault status")
	if err != nil {
		return VaultStatus{}, err
	}
	dks, err := s.d.State.DataKeys()
	if err != nil {
		return VaultStatus{}, internal("read vault keyring", err)
	}
	creds, err := s.d.State.Credentials()
	if err != nil {
		return VaultStatus{}, internal("read credentials", err)
	}
	tks, err := s.d.State.TokenKeys()
	if err != nil {
		return VaultStatus{}, internal("read token keys", err)
	}
	var flows []storage.OAuthPending
	var clients []storage.OAuthClient
	if or, ok := s.d.State.(oauthRecords); ok {
		if flows, err = or.OAuthPendings(); err != nil {
			return VaultStatus{}, internal("read oauth flows", err)
		}
		if clients, err = or.OAuthClients(); err != nil {
			return VaultStatus{}, internal("read oauth clients", err)
		}
		// A registration without a secret seals nothing.
		clients = slices.DeleteFunc(clients, func(c storage.OAuthClient) bool { return len(c.Sealed) == 0 })
	}
	st := VaultStatus{WrappedTo: wrappedTo(dks), Records: len(creds) + len(tks) + len(flows) + len(clients)}
	if st.NodeKEKs, err = ring.ReloadKEK(); err != nil {
		st.KeyFileError = err.Error()
	}
	keys := s.d.VaultKeys.Load()
	slices.SortFunc(dks, func(a, b storage.DataKey) int { return b.Created.Compare(a.Created) })
	byID := map[string]*VaultKeyStatus{}
	active := ""
	for _, dk := range dks {
		st.Keys = append(st.Keys, VaultKeyStatus{ID: dk.ID, State: string(dk.State), Created: dk.Created,
			WrappedTo: slices.Sorted(maps.Keys(dk.Wraps)), Unwrapped: keys.Holds(dk.ID)})
		if dk.State == storage.DataKeyActive {
			active = dk.ID
		} else {
			st.Rotating = true
		}
	}
	for i := range st.Keys {
		byID[st.Keys[i].ID] = &st.Keys[i]
	}
	const (
		ofCredential = iota
		ofSigningKey
		ofOAuthFlow
		ofOAuthClient
	)
	count := func(id string, of int) {
		if id != active {
			st.Pending++
		}
		k := byID[id]
		if k == nil {
			st.Keys = append(st.Keys, VaultKeyStatus{ID: id, State: "legacy", Unwrapped: keys.Holds(id)})
			k = &st.Keys[len(st.Keys)-1]
			// Appending may move the slice: index again.
			clear(byID)
			for i := range st.Keys {
				byID[st.Keys[i].ID] = &st.Keys[i]
			}
		}
		switch of {
		case ofSigningKey:
			k.SigningKeys++
		case ofOAuthFlow:
			k.OAuthFlows++
		case ofOAuthClient:
			k.OAuthClients++
		default:
			k.Credentials++
		}
	}
	for _, c := range creds {
		count(c.KeyID, ofCredential)
	}
	for _, f := range flows {
		count(f.KeyID, ofOAuthFlow)
	}
	for _, c := range clients {
		count(c.KeyID, ofOAuthClient)
	}
	for _, k := range tks {
		id := k.KeyID
		if env, err := vault.DecodeEnvelope(k.Sealed); err == nil {
			id = env.KeyID
		}
		count(id, ofSigningKey)
	}
	if st.Pending > 0 {
		st.Rotating = true
	}
	return st, nil
}

// wrappedTo returns the key-encryption key ids any data key is wrapped to.
func wrappedTo(dks []storage.DataKey) []string {
	var ids []string
	for _, dk := range dks {
		for id := range dk.Wraps {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// kekIdentity returns the identity of kek with key id id; the caller
// checked kek holds it.
func kekIdentity(kek *vault.Keys, id string) *vault.Identity {
	for _, i := range append([]*vault.Identity{kek.Current()}, kek.Retired()...) {
		if i.ID() == id {
			return i
		}
	}
	return nil
}
