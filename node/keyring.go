package node

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// vaultRing is this node's view of the vault keyring: the key-encryption
// keys of its key file, which never leave the node, and the data keys of
// the replicated keyring, unwrapped with them. Whenever the replicated
// state changes, the next Load rebuilds the keys from the keyring as it is
// then, so a rotation applied through raft takes effect on every node at
// the next session, with no restart.
type vaultRing struct {
	keyFile    string // where kek came from; empty when it was given in memory
	passphrase []byte // opens keyFile; nil when it is not protected
	logger     *slog.Logger
	obs        vault.Observer // told of every seal and unseal; set before Start

	store atomic.Pointer[storage.Store] // nil before Start
	kek   atomic.Pointer[vault.Keys]
	view  atomic.Pointer[ringView] // keys built for one store generation
	kick  chan struct{}            // wakes the resealer; capacity 1

	mu         sync.Mutex                 // serialises rebuilds; guards the fields below
	deks       map[string]*vault.Identity // data keys unwrapped so far, by id
	lastReread time.Time                  // when keyFile was last read again for a missing key-encryption key
	warned     map[string]bool            // data keys already reported as not unwrappable
}

// ringView is the keys in force at one store generation.
type ringView struct {
	gen     uint64
	keys    *vault.Keys
	missing bool      // some data key could not be unwrapped
	built   time.Time // when; a view with missing keys is rebuilt now and then
}

// rebuildMissing is how often a view lacking a data key is rebuilt with
// no change in the replicated state: the operator may have copied the key
// file in that opens it.
const rebuildMissing = 5 * time.Second

func newVaultRing(kek *vault.Keys, keyFile string, passphrase []byte, logger *slog.Logger) *vaultRing {
	r := &vaultRing{keyFile: keyFile, passphrase: passphrase, logger: logger,
		kick: make(chan struct{}, 1), deks: map[string]*vault.Identity{}, warned: map[string]bool{}}
	r.kek.Store(kek)
	return r
}

// Load returns the keys in force: the keyring's active data key seals, its
// decrypt-only data keys and the key-encryption keys open.
func (r *vaultRing) Load() *vault.Keys {
	st := r.store.Load()
	if st == nil {
		return r.observed(vault.NewKeyring(nil, nil, r.kek.Load()))
	}
	gen := st.Generation()
	if v := r.view.Load(); v.current(gen) {
		return v.keys
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.view.Load(); v.current(gen) {
		return v.keys
	}
	keys, missing, err := r.build(st)
	if err != nil {
		r.logger.Error("read the vault keyring", slog.Any("error", err))
		if v := r.view.Load(); v != nil {
			return v.keys
		}
		return r.observed(vault.NewKeyring(nil, nil, r.kek.Load()))
	}
	keys = r.observed(keys)
	r.view.Store(&ringView{gen: gen, keys: keys, missing: missing, built: time.Now()})
	return keys
}

// observed attaches the ring's observer to k.
func (r *vaultRing) observed(k *vault.Keys) *vault.Keys {
	if r.obs == nil {
		return k
	}
	return k.WithObserver(r.obs)
}

// current reports whether v holds the keys for generation gen.
func (v *ringView) current(gen uint64) bool {
	return v != nil && v.gen == gen && (!v.missing || time.Since(v.built) < rebuildMissing)
}

// ReloadKEK reads the key file again, so a key file copied in after a
// rotate-kek takes effect without a restart. It reports the key-encryption
// keys now in force.
func (r *vaultRing) ReloadKEK() ([]string, error) {
	if r.keyFile == "" {
		return r.kek.Load().IDs(), nil
	}
	k, err := vault.LoadKeys(r.keyFile, func() ([]byte, error) { return slices.Clone(r.passphrase), nil })
	if err != nil {
		return r.kek.Load().IDs(), fmt.Errorf("read vault key file %s: %w", r.keyFile, err)
	}
	if !slices.Equal(k.IDs(), r.kek.Load().IDs()) {
		r.SetKEK(k)
		r.logger.Info("vault key file read again", slog.String("key_file", r.keyFile), slog.String("kek_ids", strings.Join(k.IDs(), ",")))
	}
	return k.IDs(), nil
}

// KEK returns the key-encryption keys: this node's key file.
func (r *vaultRing) KEK() *vault.Keys { return r.kek.Load() }

// SetKEK replaces the key-encryption keys after a rotation rewrote the key
// file.
func (r *vaultRing) SetKEK(k *vault.Keys) {
	r.kek.Store(k)
	r.view.Store(nil)
}

// Kick has the resealer look for work now rather than at its next tick.
func (r *vaultRing) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// build unwraps what it has not yet and assembles the keys, reporting
// whether a data key could not be unwrapped. r.mu is held.
func (r *vaultRing) build(st *storage.Store) (*vault.Keys, bool, error) {
	dks, err := st.DataKeys()
	if err != nil {
		return nil, false, err
	}
	missing := false
	// Newest first, so the decrypt-only keys most likely needed come first.
	slices.SortFunc(dks, func(a, b storage.DataKey) int { return b.Created.Compare(a.Created) })
	var active *vault.Identity
	var rest []*vault.Identity
	live := make(map[string]bool, len(dks))
	for _, dk := range dks {
		live[dk.ID] = true
		id, err := r.unwrap(dk)
		if err != nil {
			missing = true
			if !r.warned[dk.ID] {
				r.warned[dk.ID] = true
				r.logger.Error("cannot open a vault data key: credentials it seals fail on this node until its key file is updated",
					slog.String("data_key", dk.ID), slog.String("key_file", r.keyFile), slog.Any("error", err))
			}
			continue
		}
		if dk.State == storage.DataKeyActive && active == nil {
			active = id
		} else {
			rest = append(rest, id)
		}
	}
	for id := range r.deks {
		if !live[id] {
			delete(r.deks, id)
		}
	}
	if active == nil && len(rest) > 0 {
		// Seal with a key this node holds; the resealer moves the record
		// to the active key later.
		active, rest = rest[0], rest[1:]
	}
	return vault.NewKeyring(active, rest, r.kek.Load()), missing, nil
}

// unwrap returns data key dk, unwrapping it once. A key wrapped only to
// a key-encryption key this node lacks makes it read its key file again
// (at most every few seconds): the operator may have copied the new one
// in after a rotate-kek.
func (r *vaultRing) unwrap(dk storage.DataKey) (*vault.Identity, error) {
	if id, ok := r.deks[dk.ID]; ok {
		return id, nil
	}
	id, err := r.kek.Load().UnwrapDataKey(dk.ID, dk.Wraps)
	if errors.Is(err, vault.ErrNoKEK) && r.keyFile != "" && time.Since(r.lastReread) >= rebuildMissing {
		r.lastReread = time.Now()
		k, lerr := vault.LoadKeys(r.keyFile, func() ([]byte, error) { return slices.Clone(r.passphrase), nil })
		if lerr == nil {
			r.kek.Store(k)
			r.logger.Info("vault key file read again", slog.String("key_file", r.keyFile), slog.String("kek_ids", strings.Join(k.IDs(), ",")))
			id, err = k.UnwrapDataKey(dk.ID, dk.Wraps)
		}
	}
	if err != nil {
		return nil, err
	}
	r.deks[dk.ID] = id
	delete(r.warned, dk.ID)
	return id, nil
}

// checkKEK refuses to start a node whose key file opens none of the
// keyring's data keys, naming the key-encryption keys that would and the
// file to restore.
func (r *vaultRing) checkKEK(st *storage.Store, dataDir string) error {
	dks, err := st.DataKeys()
	if err != nil || len(dks) == 0 {
		return err
	}
	kek := r.kek.Load()
	var needed []string
	for _, dk := range dks {
		for id := range dk.Wraps {
			if kek.Holds(id) {
				return nil
			}
			needed = append(needed, id)
		}
	}
	slices.Sort(needed)
	needed = slices.Compact(needed)
	file := r.keyFile
	if file == "" {
		file = "the vault key file"
	}
	return fmt.Errorf("the vault key file %s holds key %s, but the data in %s is sealed with vault key %s: restore the key file holding key %s to %s from your backup (or copy it from another node of the cluster), or start with --vault-key naming that file; do not run `mcpgw init`, a new key cannot open this data",
		file, strings.Join(kek.IDs(), ", "), dataDir, strings.Join(needed, " or "), needed[0], file)
}

// SealingKeyIDs returns the ids of the vault keys a key file must hold to
// open the state in dataDir: the key-encryption keys the keyring is
// wrapped to or, for state from before the keyring, the keys its records
// were sealed with. It returns nil when dataDir holds no state.
func SealingKeyIDs(dataDir string) ([]string, error) {
	path := filepath.Join(dataDir, storage.StateFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	st, err := storage.Open(path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	dks, err := st.DataKeys()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, dk := range dks {
		for id := range dk.Wraps {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		creds, err := st.Credentials()
		if err != nil {
			return nil, err
		}
		for _, c := range creds {
			ids = append(ids, c.KeyID)
		}
		tks, err := st.TokenKeys()
		if err != nil {
			return nil, err
		}
		for _, k := range tks {
			if env, err := vault.DecodeEnvelope(k.Sealed); err == nil {
				ids = append(ids, env.KeyID)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}
