package admin

import (
	"context"
	"slices"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
)

// TokenRequest asks for a service token.
type TokenRequest struct {
	Service string
	Orgs    []string // "*" for every org
	TTL     time.Duration
}

// IssuedToken is a newly issued service token: the only time the token
// itself is at hand.
type IssuedToken struct {
	Token string
	// Meta is the recorded metadata, except that ExpiresAt is the exact
	// expiry the token carries (the record keeps it to the second).
	Meta storage.Token
}

// TokenStatus is an issued token's record and whether it is revoked.
type TokenStatus struct {
	storage.Token
	Revoked bool
}

// IssueToken signs a service token with the active signing key and records
// its metadata (never the token).
func (s *Service) IssueToken(ctx context.Context, req TokenRequest) (IssuedToken, error) {
	if err := s.d.Checks.Name("service", req.Service); err != nil {
		return IssuedToken{}, invalid(err)
	}
	for _, o := range req.Orgs {
		if o != "*" {
			if err := s.d.Checks.Name("org", o); err != nil {
				return IssuedToken{}, invalid(err)
			}
		}
	}
	// A node that joined a moment ago may not hold the signing key yet.
	var kr *policy.Keyring
	if _, err := s.found(ctx, func() (bool, error) {
		var err error
		kr, err = s.d.Keyring()
		return err == nil && kr.ActiveKeyID() != "", err
	}); err != nil {
		return IssuedToken{}, internal("read signing keys", err)
	}
	now := s.now().UTC()
	id, err := policy.NewTokenID()
	if err != nil {
		return IssuedToken{}, internal("create token id", err)
	}
	claims := policy.Claims{ID: id, Service: req.Service, Orgs: req.Orgs, ExpiresAt: now.Add(req.TTL)}
	tok, err := kr.Issue(claims, now)
	if err != nil {
		return IssuedToken{}, invalid(err)
	}
	meta := storage.Token{ID: id, Service: req.Service, Orgs: req.Orgs, KeyID: kr.ActiveKeyID(), IssuedAt: now.Truncate(time.Second), ExpiresAt: claims.ExpiresAt.Truncate(time.Second)}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpPutToken, Token: &meta}); err != nil {
		return IssuedToken{}, writeError("record token", err)
	}
	s.opts.Logger.Info("service token issued", "token_id", id, "service", req.Service, "orgs", req.Orgs, "expires_at", claims.ExpiresAt)
	meta.ExpiresAt = claims.ExpiresAt
	return IssuedToken{Token: tok, Meta: meta}, nil
}

// Tokens lists the issued tokens with whether each is revoked.
func (s *Service) Tokens(ctx context.Context) ([]TokenStatus, error) {
	toks, err := s.d.State.Tokens()
	if err != nil {
		return nil, internal("read tokens", err)
	}
	revs, err := s.d.State.Revocations()
	if err != nil {
		return nil, internal("read revocations", err)
	}
	out := make([]TokenStatus, 0, len(toks))
	for _, t := range toks {
		out = append(out, TokenStatus{Token: t, Revoked: slices.ContainsFunc(revs, func(r storage.Revocation) bool { return r.ID == t.ID })})
	}
	return out, nil
}

// RevokeToken revokes the token with the given id until it expires.
func (s *Service) RevokeToken(ctx context.Context, id string) error {
	var toks []storage.Token
	i := -1
	if _, err := s.found(ctx, func() (bool, error) {
		var err error
		toks, err = s.d.State.Tokens()
		i = slices.IndexFunc(toks, func(t storage.Token) bool { return t.ID == id })
		return i >= 0, err
	}); err != nil {
		return internal("read tokens", err)
	}
	if i < 0 {
		return notFoundf("no token with id %q; list them with `mcpgw token list`", id)
	}
	rev := storage.Revocation{ID: id, Expires: toks[i].ExpiresAt}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpRevokeToken, Revocation: &rev}); err != nil {
		return writeError("revoke", err)
	}
	s.opts.Logger.Info("service token revoked", "token_id", id, "service", toks[i].Service)
	return nil
}

// RotateTokenKey makes a new signing key the active one and retires the
// active ones: tokens they signed stay valid until they expire. It returns
// the new key's id.
func (s *Service) RotateTokenKey(ctx context.Context) (string, error) {
	keys, err := s.d.State.TokenKeys()
	if err != nil {
		return "", internal("read signing keys", err)
	}
	var active []storage.TokenKey
	for _, k := range keys {
		if k.Retired.IsZero() {
			active = append(active, k)
		}
	}
	if err := s.d.SigningKeys(ctx, active); err != nil {
		return "", writeError("rotate signing key", err)
	}
	kr, err := s.d.Keyring()
	if err != nil {
		return "", internal("read signing keys", err)
	}
	return kr.ActiveKeyID(), nil
}
