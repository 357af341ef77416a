package gateway

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// errNoCredential marks a session refused for want of a credential.
var errNoCredential = errors.New("no credential")

// credentialSource hands a session's upstream connection the credential of
// its (org, account, route), fresh on every request: a credential replaced
// while the session is open is used from the next upstream request on.
//
// It keeps the unsealed credential in memory for the session's lifetime and
// unseals again only when the stored ciphertext changes: unsealing costs an
// X25519 operation (~150µs), too much to pay on every forwarded request.
// Sessions opened soon after share what one unsealed (see unsealedCache).
// Plaintext never leaves process memory.
type credentialSource struct {
	g     *Gateway
	route storage.Route
	aad   vault.AAD

	mu     sync.Mutex
	gen    uint64            // store generation last checked; guarded by mu
	sealed []byte            // ciphertext the cache was unsealed from; guarded by mu
	cred   *vault.Credential // nil when the account has none; guarded by mu
	hdr    http.Header       // cred.HTTPHeaders(), built once per unseal; guarded by mu
	kid    string            // the stored record's KeyID, for the audit log; guarded by mu
	// stampCred and stampSum cache stampFor's digest of the credential
	// stampCred points to; guarded by mu.
	stampCred *vault.Credential
	stampSum  [sha256.Size]byte
}

func (g *Gateway) credentialSource(spec sessionSpec) *credentialSource {
	return &credentialSource{g: g, route: spec.route, aad: vault.AAD{Org: spec.org, Account: spec.account, Route: spec.route.Name}}
}

// current returns the credential to inject now and its HTTP headers, nil
// when the account has none and the route does not require one.
func (c *credentialSource) current() (*vault.Credential, http.Header, error) {
	if c.route.Credential == storage.CredentialNone {
		return nil, nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := c.g.state.Generation()
	if gen == c.gen && c.gen != 0 {
		if c.cred == nil {
			// Remembered as missing: still refused, not sent without.
			return nil, nil, c.missing()
		}
		return c.cred, c.hdr, nil
	}
	rec, err := c.g.state.Credential(c.aad.Org, c.aad.Account, c.aad.Route)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		c.gen, c.sealed, c.cred, c.hdr = gen, nil, nil, nil
		return nil, nil, c.missing()
	case err != nil:
		return nil, nil, fmt.Errorf("read credential: %w", err)
	}
	if rec.OAuth != nil && rec.OAuth.Consent.Blocks() {
		// Its refresh was refused: sending the dead token again would only
		// earn another 401. Checked before the cache: the mark is on the
		// record, not in the ciphertext.
		return nil, nil, consentError(c.aad, rec.OAuth.Consent)
	}
	if c.cred != nil && bytes.Equal(rec.Sealed, c.sealed) {
		c.gen = gen
		return c.cred, c.hdr, nil
	}
	keys := c.g.vaultKeys()
	if cred, hdr, ok := c.g.unsealed.get(c.aad, keys, rec.Sealed); ok {
		c.gen, c.sealed, c.cred, c.hdr, c.kid = gen, rec.Sealed, cred, hdr, rec.KeyID
		return c.cred, c.hdr, nil
	}
	cred, err := keys.Unseal(rec.Sealed, c.aad)
	if err != nil {
		c.g.logger.Error("credential cannot be unsealed", "org", c.aad.Org, "account", c.aad.Account, "route", c.aad.Route, "key_id", rec.KeyID, "error", err)
		return nil, nil, &transport.Refusal{Code: transport.CodeCredentialBroken,
			Message: fmt.Sprintf("the credential for org %q, account %q on route %q cannot be unsealed (%v); put it again with `mcpgw vault put`", c.aad.Org, c.aad.Account, c.aad.Route, err)}
	}
	c.gen, c.sealed, c.cred, c.hdr, c.kid = gen, rec.Sealed, &cred, cred.HTTPHeaders(), rec.KeyID
	c.g.unsealed.put(c.aad, keys, rec.Sealed, c.cred, c.hdr)
	return c.cred, c.hdr, nil
}

// missing is what current returns when the account has no credential:
// errNoCredential where the route requires one, else nil.
func (c *credentialSource) missing() error {
	if c.route.Credential == storage.CredentialRequired {
		return fmt.Errorf("%w is configured for org %q, account %q on route %q: ask the operator to store one for them (`mcpgw vault put`)",
			errNoCredential, c.aad.Org, c.aad.Account, c.aad.Route)
	}
	return nil
}

// keyID returns the id of the vault key that sealed the credential last
// handed out, "" when none was: an identity for the audit log, never the
// credential itself.
func (c *credentialSource) keyID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cred == nil {
		return ""
	}
	return c.kid
}

// header returns the HTTP headers to inject into one upstream request. The
// map is shared between requests: callers must only read it.
func (c *credentialSource) header() (http.Header, error) {
	_, hdr, err := c.current()
	return hdr, err
}

// environ returns the environment to give a stdio upstream.
func (c *credentialSource) environ() ([]string, error) {
	cred, _, err := c.current()
	if err != nil || cred == nil {
		return nil, err
	}
	return cred.Environ(), nil
}
