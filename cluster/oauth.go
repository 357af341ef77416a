package cluster

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/mcpgw/mcpgw/storage"
)

// ErrAlreadyClaimed is the answer to an OpClaimOAuthPending whose flow is
// gone: completed once already (a replayed callback), or expired. It is a
// refused command (it wraps ErrInvalidCommand on the node that applies it),
// so every node refuses it alike and no state changes.
var ErrAlreadyClaimed = errors.New("oauth flow already completed or expired")

// ErrCredentialChanged is the answer to an OpRefreshCredential or
// OpMarkCredentialConsent whose credential no longer holds the ciphertext
// it expects: a consent, a vault put, a delete, a reseal or another
// refresh landed first, and wins. Like ErrAlreadyClaimed it is a refused
// command, so no state changes anywhere.
var ErrCredentialChanged = errors.New("credential changed meanwhile")

// applyOAuth applies the upstream OAuth commands. A claim deletes the
// pending flow only if it is still there, inside the raft log's total
// order: of two callbacks carrying the same state, on any two nodes, exactly
// one claim succeeds.
func applyOAuth(tx *storage.Tx, c Command) error {
	missing := func(field string) error {
		return fmt.Errorf("%w: %s without %s", ErrInvalidCommand, c.Op, field)
	}
	switch c.Op {
	case OpPutOAuthPending:
		p := c.OAuthPending
		if p == nil {
			return missing("oauth_pending")
		}
		if p.StateHash == "" {
			return missing("state hash")
		}
		if err := knownKey(tx, p.KeyID); err != nil {
			return err
		}
		return tx.PutOAuthPending(*p)
	case OpClaimOAuthPending:
		if c.Name == "" {
			return missing("state hash")
		}
		ok, err := tx.DeleteOAuthPending(c.Name)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %w", ErrInvalidCommand, ErrAlreadyClaimed)
		}
		return nil
	case OpExpireOAuthPending:
		if c.At.IsZero() {
			return missing("at")
		}
		_, err := tx.ExpireOAuthPending(c.At)
		return err
	case OpRefreshCredential:
		// A refreshed token set replaces exactly the one it was made
		// from; anything written meanwhile is newer and stays.
		nc := c.Credential
		if nc == nil {
			return missing("credential")
		}
		if len(c.Expect) == 0 {
			return missing("expect")
		}
		if err := expectSealed(tx, nc.Org, nc.Account, nc.Route, c.Expect); err != nil {
			return err
		}
		if err := knownKey(tx, nc.KeyID); err != nil {
			return err
		}
		return tx.PutCredential(*nc)
	case OpMarkCredentialConsent:
		if c.Consent == nil {
			return missing("consent")
		}
		if len(c.Expect) == 0 {
			return missing("expect")
		}
		if err := expectSealed(tx, c.Org, c.Account, c.RouteName, c.Expect); err != nil {
			return err
		}
		cur, err := tx.Credential(c.Org, c.Account, c.RouteName)
		if err != nil {
			return err
		}
		meta := storage.CredentialOAuth{}
		if cur.OAuth != nil {
			meta = *cur.OAuth
		}
		consent := *c.Consent
		meta.Consent = &consent
		cur.OAuth = &meta
		return tx.PutCredential(cur)
	case OpPutOAuthClient:
		cl := c.OAuthClient
		if cl == nil {
			return missing("oauth_client")
		}
		if cl.Issuer == "" {
			return missing("issuer")
		}
		if cl.KeyID != "" {
			if err := knownKey(tx, cl.KeyID); err != nil {
				return err
			}
		}
		return tx.PutOAuthClient(*cl)
	}
	return fmt.Errorf("%w: unknown op %d", ErrInvalidCommand, uint8(c.Op))
}

// expectSealed refuses a compare-and-set on a credential that is gone or
// holds other ciphertext than expect.
func expectSealed(tx *storage.Tx, org, account, route string, expect []byte) error {
	cur, err := tx.Credential(org, account, route)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%w: %w: the credential was deleted", ErrInvalidCommand, ErrCredentialChanged)
	case err != nil:
		return err
	case !bytes.Equal(cur.Sealed, expect):
		return fmt.Errorf("%w: %w", ErrInvalidCommand, ErrCredentialChanged)
	}
	return nil
}
