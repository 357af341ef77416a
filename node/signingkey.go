package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// ensureSigningKey creates the first service-token signing key of a fresh
// cluster.
//
// When signing keys exist it checks the vault key opens them: a node
// started with the wrong --vault-key would otherwise run and fail every
// session.
func (n *Node) ensureSigningKey(ctx context.Context) error {
	// The first signing key is sealed with a data key from the start.
	if err := n.initKeyring(ctx); err != nil {
		return err
	}
	keys, err := n.store.TokenKeys()
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return n.addSigningKey(ctx, nil)
	}
	var lastErr error
	sealedWith := make([]string, 0, len(keys))
	for _, k := range keys {
		_, err := n.vaultKeys().Unseal(k.Sealed, gateway.SigningKeyAAD(k.ID))
		if err == nil {
			return nil
		}
		lastErr = err
		if env, err := vault.DecodeEnvelope(k.Sealed); err == nil {
			sealedWith = append(sealedWith, env.KeyID)
		}
	}
	return fmt.Errorf("the vault key (id %s) cannot open the secrets in %s, sealed with key %s (%v): start with the --vault-key that sealed them, or restore that key file from backup",
		n.vaultKeys().Current().ID(), n.cfg.DataDir, strings.Join(slices.Compact(sealedWith), ", "), lastErr)
}

// addSigningKey creates a signing key and, in the same batch, retires the
// given ones.
func (n *Node) addSigningKey(ctx context.Context, retire []storage.TokenKey) error {
	now := n.now().UTC()
	k, err := policy.NewSigningKey(now)
	if err != nil {
		return err
	}
	seed := base64.StdEncoding.EncodeToString(k.Private.Seed())
	vk := n.vaultKeys()
	sealed, err := vk.Seal(vault.Credential{Kind: vault.KindBearer, Token: seed}, gateway.SigningKeyAAD(k.ID))
	if err != nil {
		return fmt.Errorf("seal token signing key: %w", err)
	}
	batch := []cluster.Command{{Op: cluster.OpPutTokenKey, TokenKey: &storage.TokenKey{ID: k.ID, Public: k.Public, Sealed: sealed, Created: now, KeyID: vk.Current().ID()}}}
	for _, old := range retire {
		old.Retired = now
		batch = append(batch, cluster.Command{Op: cluster.OpPutTokenKey, TokenKey: &old})
	}
	return n.writes.Apply(ctx, cluster.Command{Op: cluster.OpBatch, Batch: batch})
}
