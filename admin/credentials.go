package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// CredentialInput is a credential to seal: Secret is the raw text an
// operator piped in, parsed per Kind by vault.ParseCredential.
type CredentialInput struct {
	Org, Account, Route string
	Kind                string
	Secret              string
}

// RotateResult is the outcome of a vault key rotation.
type RotateResult struct {
	KeyID      string
	RetiredIDs []string
	Resealed   int
}

// Credentials lists the stored credentials, sealed.
func (s *Service) Credentials(ctx context.Context) ([]storage.Credential, error) {
	creds, err := s.d.State.Credentials()
	if err != nil {
		return nil, internal("read credentials", err)
	}
	return creds, nil
}

// PutCredential seals a credential with the vault keys in force and stores
// it for an org, account and existing route. It returns the record (sealed)
// and whether it is new; a replaced credential keeps its creation time.
func (s *Service) PutCredential(ctx context.Context, in CredentialInput) (storage.Credential, bool, error) {
	if err := s.credentialTarget(in.Org, in.Account, in.Route); err != nil {
		return storage.Credential{}, false, err
	}
	cred, err := vault.ParseCredential(vault.Kind(in.Kind), []byte(in.Secret))
	if err != nil {
		return storage.Credential{}, false, invalidf("credential: %v", err)
	}
	keys := s.d.VaultKeys.Load()
	aad := vault.AAD{Org: in.Org, Account: in.Account, Route: in.Route}
	sealed, err := keys.Seal(cred, aad)
	if err != nil {
		return storage.Credential{}, false, invalidf("seal credential: %v", err)
	}
	now := s.now().UTC().Truncate(time.Second)
	rec := storage.Credential{Org: in.Org, Account: in.Account, Route: in.Route, Kind: string(cred.Kind), KeyID: keys.Current().ID(), Sealed: sealed, Created: now, Rotated: now}
	old, err := s.d.State.Credential(in.Org, in.Account, in.Route)
	found, err := exists(err)
	if err != nil {
		return storage.Credential{}, false, internal("read credential", err)
	}
	if found {
		rec.Created = old.Created
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpPutCredential, Credential: &rec}); err != nil {
		return storage.Credential{}, false, writeError("write credential", err)
	}
	s.opts.Logger.Info("credential stored", "org", rec.Org, "account", rec.Account, "route", rec.Route, "kind", rec.Kind, "key_id", rec.KeyID)
	return rec, !found, nil
}

// credentialTarget checks org, account and route name an existing route.
func (s *Service) credentialTarget(org, account, route string) error {
	if err := s.d.Checks.Name("org", org); err != nil {
		return invalid(err)
	}
	if err := s.d.Checks.Name("account", account); err != nil {
		return invalid(err)
	}
	_, err := s.d.State.Route(route)
	found, err := exists(err)
	if err != nil {
		return internal("read route", err)
	}
	if !found {
		return invalidf("no route named %q; add the route first with `mcpgw route add`", route)
	}
	return nil
}

// DeleteCredential removes the credential of an org, account and route.
func (s *Service) DeleteCredential(ctx context.Context, org, account, route string) error {
	ok, err := s.found(ctx, func() (bool, error) {
		_, err := s.d.State.Credential(org, account, route)
		return exists(err)
	})
	if err != nil {
		return internal("read credential", err)
	}
	if !ok {
		return notFoundf("no credential for org %q, account %q, route %q; list them with `mcpgw vault list`", org, account, route)
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpDeleteCredential, Org: org, Account: account, RouteName: route}); err != nil {
		return writeError("delete credential", err)
	}
	return nil
}

// RotateVaultKey seals every credential under a new vault identity. The key
// file is rewritten first, holding the new identity and the old ones as
// retired, so a crash at any point leaves every credential readable; then
// all credentials are resealed in one replicated batch; then the new keys
// take over for sealing.
func (s *Service) RotateVaultKey(ctx context.Context) (RotateResult, error) {
	const op = "rotate vault key"
	if s.opts.VaultKeyFile == "" {
		return RotateResult{}, &Error{Kind: ErrConflict, Op: op, Err: fmt.Errorf("this node was started without a vault key file; rotation needs one (--vault-key)")}
	}
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	old := s.d.VaultKeys.Load()
	id, err := vault.GenerateIdentity()
	if err != nil {
		return RotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: err}
	}
	next := old.Rotate(id)
	if err := vault.ReplaceKeysFile(s.opts.VaultKeyFile, next, s.opts.VaultPassphrase); err != nil {
		return RotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: fmt.Errorf("write new vault key file: %w", err)}
	}
	creds, err := s.d.State.Credentials()
	if err != nil {
		return RotateResult{}, internal("read credentials", err)
	}
	batch := make([]cluster.Command, 0, len(creds))
	for _, c := range creds {
		aad := vault.AAD{Org: c.Org, Account: c.Account, Route: c.Route}
		sealed, err := old.Reseal(c.Sealed, aad, next)
		if err != nil {
			return RotateResult{}, &Error{Kind: ErrFailed, Op: op, Err: fmt.Errorf("reseal credential for org %q, account %q, route %q: %w", c.Org, c.Account, c.Route, err)}
		}
		c.Sealed, c.KeyID = sealed, id.ID()
		batch = append(batch, cluster.Command{Op: cluster.OpPutCredential, Credential: &c})
	}
	if len(batch) > 0 {
		if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpBatch, Batch: batch}); err != nil {
			return RotateResult{}, writeError(op, fmt.Errorf("write resealed credentials: %w", err))
		}
	}
	s.d.VaultKeys.Store(next)
	res := RotateResult{KeyID: id.ID(), Resealed: len(batch)}
	for _, r := range next.Retired() {
		res.RetiredIDs = append(res.RetiredIDs, r.ID())
	}
	s.opts.Logger.Info("vault key rotated", "key_id", res.KeyID, "resealed", res.Resealed)
	return res, nil
}
