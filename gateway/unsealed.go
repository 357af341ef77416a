package gateway

import (
	"bytes"
	"net/http"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/vault"
)

// unsealedTTL is how long an unsealed credential is kept for sessions to
// come after the last one that used it. A stateless (2026-07-28) caller
// opens a session per request: without the cache every request would pay
// an unseal (an X25519 operation and an age decryption, ~300 µs).
const unsealedTTL = 30 * time.Second

// maxUnsealed bounds the cache; past it, the cache starts afresh.
const maxUnsealed = 4096

// unsealedCache holds credentials unsealed recently, by (org, account,
// route). An entry is only used for the very ciphertext it was unsealed
// from and with the same vault keys, so a credential replaced, removed or
// resealed, or a key change, is unsealed afresh; plaintext stays in
// process memory and is dropped unsealedTTL after its last use.
type unsealedCache struct {
	mu      sync.Mutex
	entries map[vault.AAD]*unsealedEntry // guarded by mu
	sweep   *time.Timer                  // runs while entries is not empty; guarded by mu
}

type unsealedEntry struct {
	keys   *vault.Keys
	sealed []byte
	cred   *vault.Credential
	hdr    http.Header
	used   time.Time
}

// get returns the credential unsealed from sealed with keys, if cached.
func (c *unsealedCache) get(aad vault.AAD, keys *vault.Keys, sealed []byte) (*vault.Credential, http.Header, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[aad]
	if !ok || e.keys != keys || !bytes.Equal(e.sealed, sealed) || time.Since(e.used) > unsealedTTL {
		return nil, nil, false
	}
	e.used = time.Now()
	return e.cred, e.hdr, true
}

// put caches a credential just unsealed.
func (c *unsealedCache) put(aad vault.AAD, keys *vault.Keys, sealed []byte, cred *vault.Credential, hdr http.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxUnsealed {
		c.entries = make(map[vault.AAD]*unsealedEntry)
	}
	c.entries[aad] = &unsealedEntry{keys: keys, sealed: bytes.Clone(sealed), cred: cred, hdr: hdr, used: time.Now()}
	if c.sweep == nil {
		c.sweep = time.AfterFunc(unsealedTTL, c.expire)
	}
}

// expire drops the entries not used within unsealedTTL, and runs again
// while any are left.
func (c *unsealedCache) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for aad, e := range c.entries {
		if time.Since(e.used) > unsealedTTL {
			delete(c.entries, aad)
		}
	}
	if len(c.entries) == 0 {
		c.sweep = nil
		return
	}
	c.sweep.Reset(unsealedTTL)
}

// stop drops every entry; the cache may be used again after.
func (c *unsealedCache) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
	c.entries = nil
}
