package cluster

import (
	"errors"
	"fmt"

	"github.com/mcpgw/mcpgw/storage"
)

// ErrAlreadyClaimed is the answer to an OpClaimOAuthPending whose flow is
// gone: completed once already (a replayed callback), or expired. It is a
// refused command (it wraps ErrInvalidCommand on the node that applies it),
// so every node refuses it alike and no state changes.
var ErrAlreadyClaimed = errors.New("oauth flow already completed or expired")

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
