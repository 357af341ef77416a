package vault

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"filippo.io/age"
)

// ErrNoKEK reports a data key wrapped only to key-encryption keys this node
// does not hold.
var ErrNoKEK = errors.New("vault data key is wrapped only to key-encryption keys this node's key file does not hold")

// dataKeyMagic starts the plaintext of a wrapped data key. With the key id
// after it, it stops a wrap from being swapped for another key's.
const dataKeyMagic = "mcpgw-data-key/v1 "

// maxWrappedDataKey bounds a wrapped data key: an age header with one
// X25519 stanza and about 110 bytes of payload.
const maxWrappedDataKey = 4 << 10

// WrapDataKey seals the data-encryption key dek to the key-encryption key
// kek (age, one X25519 stanza). The result is what replicated storage holds;
// only kek opens it.
func WrapDataKey(dek, kek *Identity) ([]byte, error) {
	secret := dek.x.String()
	pt := make([]byte, 0, len(dataKeyMagic)+len(dek.id)+1+len(secret))
	pt = append(pt, dataKeyMagic...)
	pt = append(pt, dek.id...)
	pt = append(pt, '\n')
	pt = append(pt, secret...)
	defer clear(pt)
	var buf bytes.Buffer
	buf.Grow(512)
	w, err := age.Encrypt(&buf, kek.recipient)
	if err != nil {
		return nil, fmt.Errorf("wrap data key %s: %w", dek.id, err)
	}
	if _, err := w.Write(pt); err != nil {
		return nil, fmt.Errorf("wrap data key %s: %w", dek.id, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("wrap data key %s: %w", dek.id, err)
	}
	return buf.Bytes(), nil
}

// UnwrapDataKey opens the data key id from wraps (key-encryption key id →
// wrapped data key, as WrapDataKey made them) with whichever identity of k
// one of them names. It fails with ErrNoKEK, naming the key-encryption
// keys needed, when k holds none of them, and with ErrCorrupt when a wrap
// does not open to the data key id.
func (k *Keys) UnwrapDataKey(id string, wraps map[string][]byte) (*Identity, error) {
	needed := make([]string, 0, len(wraps))
	for kekID, wrapped := range wraps {
		needed = append(needed, kekID)
		raw, err := hex.DecodeString(kekID)
		if err != nil || len(raw) != keyIDLen {
			continue
		}
		kek := k.lookup([keyIDLen]byte(raw))
		if kek == nil {
			continue
		}
		return unwrapDataKey(id, wrapped, kek)
	}
	slices.Sort(needed)
	return nil, fmt.Errorf("%w (data key %s, key-encryption keys %v; this node holds %v)", ErrNoKEK, id, needed, k.IDs())
}

func unwrapDataKey(id string, wrapped []byte, kek *Identity) (*Identity, error) {
	if len(wrapped) > maxWrappedDataKey {
		return nil, fmt.Errorf("%w: wrapped data key %s is %d bytes", ErrCorrupt, id, len(wrapped))
	}
	r, err := age.Decrypt(bytes.NewReader(wrapped), singleStanzaIdentity{kek.x})
	if err != nil {
		return nil, fmt.Errorf("%w: wrapped data key %s does not open with key-encryption key %s", ErrCorrupt, id, kek.id)
	}
	pt := make([]byte, len(wrapped))
	defer clear(pt)
	n, err := readAll(r, pt)
	if err != nil {
		return nil, fmt.Errorf("%w: wrapped data key %s does not authenticate", ErrCorrupt, id)
	}
	prefix := dataKeyMagic + id + "\n"
	if !bytes.HasPrefix(pt[:n], []byte(prefix)) {
		return nil, fmt.Errorf("%w: wrap of data key %s holds another key", ErrCorrupt, id)
	}
	x, err := age.ParseX25519Identity(string(pt[len(prefix):n]))
	if err != nil {
		return nil, fmt.Errorf("%w: wrapped data key %s is not an age identity", ErrCorrupt, id)
	}
	dek := newIdentity(x)
	if dek.id != id {
		return nil, fmt.Errorf("%w: wrapped data key %s opens to key %s", ErrCorrupt, id, dek.id)
	}
	return dek, nil
}

// NewKeyring returns the keys a node seals and unseals with: active seals;
// the decrypt-only data keys and every key-encryption key of kek open what
// was sealed before (records from before the keyring existed are sealed
// with the key-encryption key itself). A nil active leaves kek's current
// identity sealing, as before there was a keyring.
func NewKeyring(active *Identity, decryptOnly []*Identity, kek *Keys) *Keys {
	if active == nil {
		return NewKeys(kek.all[0], append(decryptOnly, kek.all[1:]...)...)
	}
	return NewKeys(active, append(decryptOnly, kek.all...)...)
}

// IDs returns the key id of every identity of k, current first.
func (k *Keys) IDs() []string {
	ids := make([]string, len(k.all))
	for i, id := range k.all {
		ids[i] = id.id
	}
	return ids
}

// Holds reports whether k has the identity with key id id.
func (k *Keys) Holds(id string) bool {
	for _, i := range k.all {
		if i.id == id {
			return true
		}
	}
	return false
}
