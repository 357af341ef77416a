package vault

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"filippo.io/age"
)

// keyIDLen is the length in bytes of a key id; Identity.ID is its hex form.
const keyIDLen = 8

// Identity is one age X25519 vault identity: the private key that opens
// sealed credentials. It formats and logs as its key id only.
type Identity struct {
	x         *age.X25519Identity
	recipient *age.X25519Recipient
	rawID     [keyIDLen]byte
	id        string
}

var (
	_ fmt.Formatter  = Identity{}
	_ slog.LogValuer = Identity{}
)

// GenerateIdentity returns a new random identity.
func GenerateIdentity() (*Identity, error) {
	x, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate vault identity: %w", err)
	}
	return newIdentity(x), nil
}

func newIdentity(x *age.X25519Identity) *Identity {
	r := x.Recipient()
	sum := sha256.Sum256([]byte(r.String()))
	id := &Identity{x: x, recipient: r}
	copy(id.rawID[:], sum[:keyIDLen])
	id.id = hex.EncodeToString(id.rawID[:])
	return id
}

// ID returns the key id: the first 16 hex digits of the SHA-256 of the
// identity's age recipient string. It is stable, public, and written into
// every envelope sealed for this identity.
func (i Identity) ID() string { return i.id }

// Recipient returns the public age recipient ("age1...") of i.
func (i Identity) Recipient() string { return i.recipient.String() }

// String returns "vault identity <key id>".
func (i Identity) String() string { return "vault identity " + i.id }

// GoString returns the key id in Go syntax, never the private key.
func (i Identity) GoString() string { return "vault.Identity{ID:" + strconv.Quote(i.id) + "}" }

// Format makes every fmt verb print String or, for %#v, GoString.
func (i Identity) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, i.String(), i.GoString())
}

// LogValue logs the key id.
func (i Identity) LogValue() slog.Value { return slog.StringValue(i.id) }

// Keys is the set of identities a node holds: the current identity, which
// seals, and retired identities, which only unseal what was sealed before a
// rotation. Keys is immutable and safe for concurrent use.
type Keys struct {
	all []*Identity // all[0] is current; ids unique
	obs Observer    // nil: nobody is told
}

// Op names a vault operation for an Observer.
type Op string

// The operations an Observer is told of.
const (
	OpSeal   Op = "seal"
	OpUnseal Op = "unseal"
)

// Observer is told of every Seal and Unseal made with the keys it is
// attached to: which, how long it took and its error (which never holds
// plaintext). It must be safe for concurrent use and cheap, as it runs on
// the data path.
type Observer func(op Op, d time.Duration, err error)

// WithObserver returns the same keys with o told of every Seal and Unseal
// made with them, for metrics; keys rotated from them keep o.
func (k *Keys) WithObserver(o Observer) *Keys {
	c := *k
	c.obs = o
	return &c
}

// NewKeys returns the key set with current sealing and retired unsealing too.
// Retired identities with the same key id as one before them are dropped.
// NewKeys panics if current or a retired identity is nil.
func NewKeys(current *Identity, retired ...*Identity) *Keys {
	k := &Keys{all: make([]*Identity, 0, 1+len(retired))}
	for _, id := range append([]*Identity{current}, retired...) {
		if id == nil || id.x == nil {
			panic("vault: NewKeys called with a nil identity")
		}
		if k.lookup(id.rawID) == nil {
			k.all = append(k.all, id)
		}
	}
	return k
}

// Current returns the identity new credentials are sealed for.
func (k *Keys) Current() *Identity { return k.all[0] }

// Retired returns the identities kept only to unseal, newest first.
func (k *Keys) Retired() []*Identity {
	return append([]*Identity(nil), k.all[1:]...)
}

// Rotate returns a key set with next as the current identity and every
// identity of k retired, the way `mcpgw vault rotate-kek` writes the key
// file while nodes still holding the old one are being updated.
func (k *Keys) Rotate(next *Identity) *Keys {
	r := NewKeys(next, k.all...)
	r.obs = k.obs
	return r
}

func (k *Keys) lookup(id [keyIDLen]byte) *Identity {
	for _, i := range k.all {
		if i.rawID == id {
			return i
		}
	}
	return nil
}
