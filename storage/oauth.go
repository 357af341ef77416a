package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// OAuthStateHash is the storage key of the pending flow whose state
// parameter is state: hex SHA-256, so a copy of the database (a snapshot, a
// backup) cannot be used to complete someone's flow.
func OAuthStateHash(state string) string {
	h := sha256.Sum256([]byte(state))
	return hex.EncodeToString(h[:])
}

// OAuthPending is an authorization flow between the consent URL and the
// callback. Flow is the oauth package's Pending as JSON with its secrets
// (state, PKCE verifier, client secret) emptied; the verifier and client
// secret are in Sealed, sealed by the vault key KeyID.
type OAuthPending struct {
	StateHash string          `json:"state_hash"`
	Org       string          `json:"org"`
	Account   string          `json:"account"`
	Route     string          `json:"route"`
	Issuer    string          `json:"issuer"`
	Created   time.Time       `json:"created"`
	Expires   time.Time       `json:"expires"`
	KeyID     string          `json:"key_id"`
	Sealed    []byte          `json:"sealed"`
	Flow      json.RawMessage `json:"flow"`
}

// OAuthClient is the gateway's client registration at one authorization
// server. Registration is the oauth package's Registration as JSON with the
// client secret emptied; a secret, when the server issued one, is in Sealed
// (sealed by the vault key KeyID).
type OAuthClient struct {
	Issuer       string          `json:"issuer"`
	Created      time.Time       `json:"created"`
	KeyID        string          `json:"key_id,omitempty"`
	Sealed       []byte          `json:"sealed,omitempty"`
	Registration json.RawMessage `json:"registration"`
}

// PutOAuthPending stores a pending flow.
func (t *Tx) PutOAuthPending(p OAuthPending) error {
	return putJSON(t.tx, bucketOAuthPending, p.StateHash, p)
}

// DeleteOAuthPending removes a pending flow; it reports whether it existed,
// which makes a delete a single-use claim.
func (t *Tx) DeleteOAuthPending(stateHash string) (bool, error) {
	return deleteKey(t.tx, bucketOAuthPending, stateHash)
}

// ExpireOAuthPending removes every pending flow that expired at or before
// now and returns how many it removed.
func (t *Tx) ExpireOAuthPending(now time.Time) (int, error) {
	b := t.tx.Bucket(bucketOAuthPending)
	var dead [][]byte
	var rec struct {
		Expires time.Time `json:"expires"`
	}
	err := b.ForEach(func(k, v []byte) error {
		rec.Expires = time.Time{}
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		if !rec.Expires.After(now) {
			dead = append(dead, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range dead {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(dead), nil
}

// PutOAuthClient creates or replaces the registration for c.Issuer.
func (t *Tx) PutOAuthClient(c OAuthClient) error {
	return putJSON(t.tx, bucketOAuthClients, c.Issuer, c)
}

// OAuthClient returns the registration for issuer as this transaction
// sees it, or ErrNotFound.
func (t *Tx) OAuthClient(issuer string) (OAuthClient, error) {
	return txGetJSON[OAuthClient](t.tx, bucketOAuthClients, issuer)
}

// DeleteOAuthClient removes the registration for issuer.
func (t *Tx) DeleteOAuthClient(issuer string) (bool, error) {
	return deleteKey(t.tx, bucketOAuthClients, issuer)
}

// OAuthPending returns the pending flow with the given state hash or
// ErrNotFound.
func (s *Store) OAuthPending(stateHash string) (OAuthPending, error) {
	return getJSON[OAuthPending](s, bucketOAuthPending, stateHash)
}

// OAuthPendings returns every pending flow, ordered by state hash.
func (s *Store) OAuthPendings() ([]OAuthPending, error) {
	return listJSON[OAuthPending](s, bucketOAuthPending)
}

// OAuthClients returns every registration, ordered by issuer.
func (s *Store) OAuthClients() ([]OAuthClient, error) {
	return listJSON[OAuthClient](s, bucketOAuthClients)
}

// OAuthClient returns the registration for issuer or ErrNotFound.
func (s *Store) OAuthClient(issuer string) (OAuthClient, error) {
	return getJSON[OAuthClient](s, bucketOAuthClients, issuer)
}
