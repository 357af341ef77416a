package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// CredentialInfo is what the admin API shows of a credential: never its value.
type CredentialInfo struct {
	Org     string    `json:"org"`
	Account string    `json:"account"`
	Route   string    `json:"route"`
	Kind    string    `json:"kind"`
	KeyID   string    `json:"key_id"`
	Created time.Time `json:"created"`
	Rotated time.Time `json:"rotated"`
}

func credentialInfo(c storage.Credential) CredentialInfo {
	return CredentialInfo{Org: c.Org, Account: c.Account, Route: c.Route, Kind: c.Kind, KeyID: c.KeyID, Created: c.Created, Rotated: c.Rotated}
}

// PutCredentialRequest is the body of PUT /v1/credentials. Secret is the raw
// text an operator piped in, parsed per kind by vault.ParseCredential.
type PutCredentialRequest struct {
	Org     string `json:"org"`
	Account string `json:"account"`
	Route   string `json:"route"`
	Kind    string `json:"kind"`
	Secret  string `json:"secret"`
}

// RotateResult is the answer to POST /v1/vault/rotate.
type RotateResult struct {
	KeyID      string   `json:"key_id"`
	RetiredIDs []string `json:"retired_key_ids"`
	Resealed   int      `json:"resealed"`
}

func (n *Node) registerVaultAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/credentials", n.listCredentials)
	mux.HandleFunc("PUT /v1/credentials", n.putCredential)
	mux.HandleFunc("DELETE /v1/credentials", n.deleteCredential)
	mux.HandleFunc("POST /v1/vault/rotate", n.rotateVault)
}

func (n *Node) listCredentials(w http.ResponseWriter, r *http.Request) {
	creds, err := n.store.Credentials()
	if err != nil {
		n.writeInternalError(w, r, "read credentials", err)
		return
	}
	out := make([]CredentialInfo, 0, len(creds))
	for _, c := range creds {
		out = append(out, credentialInfo(c))
	}
	writeJSON(w, http.StatusOK, out)
}

// credentialTarget checks org, account and route name an existing route.
// A refusal is the caller's to fix; storeErr is a failed read of the route.
func (n *Node) credentialTarget(org, account, route string) (refusal, storeErr error) {
	if err := validName("org", org); err != nil {
		return err, nil
	}
	if err := validName("account", account); err != nil {
		return err, nil
	}
	_, err := n.store.Route(route)
	found, err := exists(err)
	if err != nil {
		return nil, err
	}
	if !found {
		return fmt.Errorf("no route named %q; add the route first with `mcpgw route add`", route), nil
	}
	return nil, nil
}

func (n *Node) putCredential(w http.ResponseWriter, r *http.Request) {
	var req PutCredentialRequest
	if err := decodeAdminBody(r, &req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	refusal, err := n.credentialTarget(req.Org, req.Account, req.Route)
	if err != nil {
		n.writeInternalError(w, r, "read route", err)
		return
	}
	if refusal != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", refusal)
		return
	}
	cred, err := vault.ParseCredential(vault.Kind(req.Kind), []byte(req.Secret))
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "credential: %v", err)
		return
	}
	keys := n.vaultKeys()
	aad := vault.AAD{Org: req.Org, Account: req.Account, Route: req.Route}
	sealed, err := keys.Seal(cred, aad)
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "seal credential: %v", err)
		return
	}
	now := time.Now().UTC().Truncate(time.Second)
	rec := storage.Credential{Org: req.Org, Account: req.Account, Route: req.Route, Kind: string(cred.Kind), KeyID: keys.Current().ID(), Sealed: sealed, Created: now, Rotated: now}
	status := http.StatusCreated
	old, err := n.store.Credential(req.Org, req.Account, req.Route)
	found, err := exists(err)
	if err != nil {
		n.writeInternalError(w, r, "read credential", err)
		return
	}
	if found {
		rec.Created = old.Created
		status = http.StatusOK
	}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpPutCredential, Credential: &rec}); err != nil {
		writeApplyError(w, err, "write credential")
		return
	}
	n.logger.Info("credential stored", "org", rec.Org, "account", rec.Account, "route", rec.Route, "kind", rec.Kind, "key_id", rec.KeyID)
	writeJSON(w, status, credentialInfo(rec))
}

func (n *Node) deleteCredential(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	org, account, route := q.Get("org"), q.Get("account"), q.Get("route")
	ok, err := n.found(r.Context(), func() (bool, error) {
		_, err := n.store.Credential(org, account, route)
		return exists(err)
	})
	if err != nil {
		n.writeInternalError(w, r, "read credential", err)
		return
	}
	if !ok {
		writeAdminError(w, http.StatusNotFound, "no credential for org %q, account %q, route %q; list them with `mcpgw vault list`", org, account, route)
		return
	}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpDeleteCredential, Org: org, Account: account, RouteName: route}); err != nil {
		writeApplyError(w, err, "delete credential")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) rotateVault(w http.ResponseWriter, r *http.Request) {
	res, err := n.RotateVaultKey(r.Context())
	if err != nil {
		writeApplyError(w, err, "rotate vault key")
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// RotateVaultKey seals every credential under a new vault identity. The key
// file is rewritten first, holding the new identity and the old ones as
// retired, so a crash at any point leaves every credential readable; then
// all credentials are resealed in one replicated batch; then the new keys
// take over for sealing.
func (n *Node) RotateVaultKey(ctx context.Context) (RotateResult, error) {
	if n.cfg.VaultKeyFile == "" {
		return RotateResult{}, errors.New("this node was started without a vault key file; rotation needs one (--vault-key)")
	}
	n.rotateMu.Lock()
	defer n.rotateMu.Unlock()
	old := n.vaultKeys()
	id, err := vault.GenerateIdentity()
	if err != nil {
		return RotateResult{}, err
	}
	next := old.Rotate(id)
	if err := vault.ReplaceKeysFile(n.cfg.VaultKeyFile, next, n.cfg.VaultPassphrase); err != nil {
		return RotateResult{}, fmt.Errorf("write new vault key file: %w", err)
	}
	creds, err := n.store.Credentials()
	if err != nil {
		return RotateResult{}, err
	}
	batch := make([]cluster.Command, 0, len(creds))
	for _, c := range creds {
		aad := vault.AAD{Org: c.Org, Account: c.Account, Route: c.Route}
		sealed, err := old.Reseal(c.Sealed, aad, next)
		if err != nil {
			return RotateResult{}, fmt.Errorf("reseal credential for org %q, account %q, route %q: %w", c.Org, c.Account, c.Route, err)
		}
		c.Sealed, c.KeyID = sealed, id.ID()
		batch = append(batch, cluster.Command{Op: cluster.OpPutCredential, Credential: &c})
	}
	if len(batch) > 0 {
		if err := n.writes.Apply(ctx, cluster.Command{Op: cluster.OpBatch, Batch: batch}); err != nil {
			return RotateResult{}, fmt.Errorf("write resealed credentials: %w", err)
		}
	}
	n.keys.Store(next)
	res := RotateResult{KeyID: id.ID(), Resealed: len(batch)}
	for _, r := range next.Retired() {
		res.RetiredIDs = append(res.RetiredIDs, r.ID())
	}
	n.logger.Info("vault key rotated", "key_id", res.KeyID, "resealed", res.Resealed)
	return res, nil
}

// decodeAdminBody decodes one JSON object, refusing unknown fields.
func decodeAdminBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body is not the expected JSON object: %v", err)
	}
	if dec.More() {
		return errors.New("body must hold one JSON object")
	}
	return nil
}
