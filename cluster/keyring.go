package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/mcpgw/mcpgw/storage"
)

// ErrRetiredKey is returned for a write sealed with a vault key the
// keyring no longer holds: the writing node had not yet seen a rotation.
// Sealing again with the keys in force and retrying succeeds.
var ErrRetiredKey = errors.New("sealed with a vault data key that was retired meanwhile: retry the write")

// knownKey refuses a record sealed with a key the keyring does not know,
// once there is a keyring: a node lagging behind a rotation and a
// retirement would otherwise store a record nobody can open. Key ids of
// key-encryption keys (the wraps' keys) stay valid for records written
// before the keyring existed.
func knownKey(tx *storage.Tx, keyID string) error {
	if keyID == "" {
		return nil
	}
	keys, err := tx.DataKeys()
	if err != nil || len(keys) == 0 {
		return err
	}
	for _, k := range keys {
		if _, ok := k.Wraps[keyID]; ok || k.ID == keyID {
			return nil
		}
	}
	return fmt.Errorf("%w (key id %s)", ErrRetiredKey, keyID)
}

// applyKeyring applies the vault keyring commands:
//
//   - OpInitKeyring stores DataKey as the first active data key, unless
//     the keyring already has keys (several nodes may race to create it).
//   - OpRotateDataKey makes DataKey the active key; every other active key
//     becomes decrypt-only. One command, so every node switches at the
//     same point of the log.
//   - OpResealCredential, OpResealTokenKey and OpResealOAuthClient replace
//     a record's sealing only if it still holds Expect: a put or delete
//     that landed after the reseal was prepared wins, and the reseal is
//     silently skipped.
//   - OpRetireDataKey deletes a decrypt-only key that no record references.
//   - OpWrapDataKeys adds wraps for a new key-encryption key.
//   - OpDropKEK removes the wraps of a key-encryption key, refusing to
//     leave a data key with none.
func applyKeyring(tx *storage.Tx, c Command) error {
	missing := func(field string) error {
		return fmt.Errorf("%w: %s without %s", ErrInvalidCommand, c.Op, field)
	}
	switch c.Op {
	case OpInitKeyring, OpRotateDataKey:
		if c.DataKey == nil || c.DataKey.ID == "" || len(c.DataKey.Wraps) == 0 {
			return missing("data key")
		}
		keys, err := tx.DataKeys()
		if err != nil {
			return err
		}
		if c.Op == OpInitKeyring && len(keys) > 0 {
			return nil
		}
		for _, k := range keys {
			if k.State == storage.DataKeyActive && k.ID != c.DataKey.ID {
				k.State = storage.DataKeyDecryptOnly
				if err := tx.PutDataKey(k); err != nil {
					return err
				}
			}
		}
		k := *c.DataKey
		k.State = storage.DataKeyActive
		return tx.PutDataKey(k)
	case OpResealCredential:
		if c.Credential == nil {
			return missing("credential")
		}
		cur, err := tx.Credential(c.Credential.Org, c.Credential.Account, c.Credential.Route)
		if errors.Is(err, storage.ErrNotFound) || err == nil && !bytes.Equal(cur.Sealed, c.Expect) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := knownKey(tx, c.Credential.KeyID); err != nil {
			return err
		}
		return tx.PutCredential(*c.Credential)
	case OpResealTokenKey:
		if c.TokenKey == nil {
			return missing("token key")
		}
		cur, err := tx.TokenKey(c.TokenKey.ID)
		if errors.Is(err, storage.ErrNotFound) || err == nil && !bytes.Equal(cur.Sealed, c.Expect) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := knownKey(tx, c.TokenKey.KeyID); err != nil {
			return err
		}
		// Only the sealing changes: a retirement applied meanwhile stays.
		cur.Sealed, cur.KeyID = c.TokenKey.Sealed, c.TokenKey.KeyID
		return tx.PutTokenKey(cur)
	case OpResealOAuthClient:
		if c.OAuthClient == nil {
			return missing("oauth client")
		}
		cur, err := tx.OAuthClient(c.OAuthClient.Issuer)
		if errors.Is(err, storage.ErrNotFound) || err == nil && !bytes.Equal(cur.Sealed, c.Expect) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := knownKey(tx, c.OAuthClient.KeyID); err != nil {
			return err
		}
		cur.Sealed, cur.KeyID = c.OAuthClient.Sealed, c.OAuthClient.KeyID
		return tx.PutOAuthClient(cur)
	case OpRetireDataKey:
		keys, err := tx.DataKeys()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(keys, func(k storage.DataKey) bool { return k.ID == c.Name })
		if i < 0 || keys[i].State != storage.DataKeyDecryptOnly {
			return nil
		}
		refs, err := tx.KeyReferences()
		if err != nil {
			return err
		}
		if refs[c.Name] > 0 {
			return nil
		}
		_, err = tx.DeleteDataKey(c.Name)
		return err
	case OpWrapDataKeys:
		keys, err := tx.DataKeys()
		if err != nil {
			return err
		}
		for _, k := range keys {
			changed := false
			for _, w := range c.Wraps {
				if w.DataKey == k.ID && w.KEK != "" && len(w.Sealed) > 0 {
					k.Wraps[w.KEK] = w.Sealed
					changed = true
				}
			}
			if changed {
				if err := tx.PutDataKey(k); err != nil {
					return err
				}
			}
		}
		return nil
	case OpDropKEK:
		keys, err := tx.DataKeys()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if _, ok := k.Wraps[c.Name]; !ok {
				continue
			}
			if len(k.Wraps) == 1 {
				return fmt.Errorf("%w: data key %s is wrapped only to key-encryption key %s; rotate-kek first", ErrInvalidCommand, k.ID, c.Name)
			}
			delete(k.Wraps, c.Name)
			if err := tx.PutDataKey(k); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: unknown op %d", ErrInvalidCommand, uint8(c.Op))
}
