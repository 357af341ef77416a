package admin

import (
	"context"
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
