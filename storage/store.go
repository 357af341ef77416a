package storage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrNotFound is returned by typed getters when no record has the key.
var ErrNotFound = errors.New("not found")

// Store is the replicated state database of one node. Reads run on their own
// read transactions; every write goes through Update, which the cluster's FSM
// (or, for a lone node, the local applier) calls.
type Store struct {
	path string

	mu sync.RWMutex // guards db against Restore swapping it
	db *bolt.DB

	// generation counts committed writes, so readers can cache derived data
	// (route tables, compiled rules) and rebuild only after a change.
	generation atomic.Uint64
}

// Open opens (creating if needed) the state database at path. The file is
// created 0600 and its directory 0700.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir for %s: %w", path, err)
	}
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	s := &Store{path: path, db: db}
	s.generation.Store(1)
	return s, nil
}

func openDB(path string) (*bolt.DB, error) {
	return openBolt(path, allBuckets, bucketMeta, metaSchemaVersion, schemaVersion,
		"schema version %v, this build reads %d: use the mcpgw release that wrote it")
}

// openBolt opens a bbolt file 0600, creates its buckets and checks the
// one-byte layout version stored under versionKey in metaBucket (badVersion
// formats the found and wanted versions).
func openBolt(path string, buckets [][]byte, metaBucket, versionKey []byte, version byte, badVersion string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: the file is locked by another process (is another mcpgw running with this data dir?)", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(metaBucket)
		switch v := meta.Get(versionKey); {
		case v == nil:
			return meta.Put(versionKey, []byte{version})
		case len(v) != 1 || v[0] != version:
			return fmt.Errorf(badVersion, v, version)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}

// Generation returns a number that changes after every committed write.
func (s *Store) Generation() uint64 { return s.generation.Load() }

func (s *Store) view(fn func(*bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return errors.New("state database is closed")
	}
	return s.db.View(fn)
}

// Update runs fn in one write transaction and commits it atomically.
func (s *Store) Update(fn func(*Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return errors.New("state database is closed")
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
	if err == nil {
		s.generation.Add(1)
	}
	return err
}

// Tx is a write transaction with typed accessors.
type Tx struct{ tx *bolt.Tx }

func putJSON(tx *bolt.Tx, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), b)
}

func deleteKey(tx *bolt.Tx, bucket []byte, key string) (bool, error) {
	b := tx.Bucket(bucket)
	if b.Get([]byte(key)) == nil {
		return false, nil
	}
	return true, b.Delete([]byte(key))
}

// PutRoute creates or replaces a route.
func (t *Tx) PutRoute(r Route) error { return putJSON(t.tx, bucketRoutes, r.Name, r) }

// DeleteRoute removes a route; it reports whether the route existed.
func (t *Tx) DeleteRoute(name string) (bool, error) { return deleteKey(t.tx, bucketRoutes, name) }

// PutCredential creates or replaces a sealed credential.
func (t *Tx) PutCredential(c Credential) error {
	return putJSON(t.tx, bucketCredentials, c.Key(), c)
}

// DeleteCredential removes a credential; it reports whether it existed.
func (t *Tx) DeleteCredential(org, account, route string) (bool, error) {
	return deleteKey(t.tx, bucketCredentials, CredentialKey(org, account, route))
}

// PutRule creates or replaces an access rule.
func (t *Tx) PutRule(r Rule) error { return putJSON(t.tx, bucketRules, r.ID, r) }

// DeleteRule removes an access rule.
func (t *Tx) DeleteRule(id string) (bool, error) { return deleteKey(t.tx, bucketRules, id) }

// PutLimit creates or replaces a rate limit.
func (t *Tx) PutLimit(l Limit) error { return putJSON(t.tx, bucketLimits, l.ID, l) }

// DeleteLimit removes a rate limit.
func (t *Tx) DeleteLimit(id string) (bool, error) { return deleteKey(t.tx, bucketLimits, id) }

// PutTokenKey creates or replaces a token signing key.
func (t *Tx) PutTokenKey(k TokenKey) error { return putJSON(t.tx, bucketTokenKeys, k.ID, k) }

// Credential returns the credential of (org, account, route) as this
// transaction sees it, or ErrNotFound.
func (t *Tx) Credential(org, account, route string) (Credential, error) {
	return txGetJSON[Credential](t.tx, bucketCredentials, CredentialKey(org, account, route))
}

// TokenKey returns the token signing key id as this transaction sees it,
// or ErrNotFound.
func (t *Tx) TokenKey(id string) (TokenKey, error) {
	return txGetJSON[TokenKey](t.tx, bucketTokenKeys, id)
}

// DataKeys returns the vault keyring as this transaction sees it.
func (t *Tx) DataKeys() ([]DataKey, error) { return txListJSON[DataKey](t.tx, bucketKeyring) }

// PutDataKey creates or replaces a vault data key.
func (t *Tx) PutDataKey(k DataKey) error { return putJSON(t.tx, bucketKeyring, k.ID, k) }

// DeleteDataKey removes a vault data key; it reports whether it existed.
func (t *Tx) DeleteDataKey(id string) (bool, error) { return deleteKey(t.tx, bucketKeyring, id) }

// KeyReferences counts, per vault key id, the records sealed with it:
// credentials, token signing keys, OAuth pending flows and OAuth client
// registrations.
func (t *Tx) KeyReferences() (map[string]int, error) {
	refs := map[string]int{}
	var rec struct {
		KeyID string `json:"key_id"`
	}
	for _, b := range [][]byte{bucketCredentials, bucketTokenKeys, bucketOAuthPending, bucketOAuthClients} {
		err := t.tx.Bucket(b).ForEach(func(_, v []byte) error {
			rec.KeyID = ""
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			refs[rec.KeyID]++
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return refs, nil
}

// PutRevocation records a revoked token id.
func (t *Tx) PutRevocation(r Revocation) error { return putJSON(t.tx, bucketRevocations, r.ID, r) }

// PutToken records an issued token's metadata.
func (t *Tx) PutToken(k Token) error { return putJSON(t.tx, bucketTokens, k.ID, k) }

// SetAppliedIndex records the last raft index applied.
func (t *Tx) SetAppliedIndex(i uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], i)
	return t.tx.Bucket(bucketMeta).Put(metaAppliedIndex, b[:])
}

func txGetJSON[T any](tx *bolt.Tx, bucket []byte, key string) (T, error) {
	var v T
	b := tx.Bucket(bucket).Get([]byte(key))
	if b == nil {
		return v, ErrNotFound
	}
	return v, json.Unmarshal(b, &v)
}

func txListJSON[T any](tx *bolt.Tx, bucket []byte) ([]T, error) {
	var out []T
	err := tx.Bucket(bucket).ForEach(func(_, b []byte) error {
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

func getJSON[T any](s *Store, bucket []byte, key string) (T, error) {
	var v T
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket).Get([]byte(key))
		if b == nil {
			return ErrNotFound
		}
		return json.Unmarshal(b, &v)
	})
	return v, err
}

func listJSON[T any](s *Store, bucket []byte) ([]T, error) {
	var out []T
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, b []byte) error {
			var v T
			if err := json.Unmarshal(b, &v); err != nil {
				return fmt.Errorf("decode %s/%q: %w", bucket, k, err)
			}
			out = append(out, v)
			return nil
		})
	})
	return out, err
}

// Route returns the named route or ErrNotFound.
func (s *Store) Route(name string) (Route, error) { return getJSON[Route](s, bucketRoutes, name) }

// Routes returns every route, ordered by name.
func (s *Store) Routes() ([]Route, error) { return listJSON[Route](s, bucketRoutes) }

// Credential returns the sealed credential for (org, account, route) or
// ErrNotFound.
func (s *Store) Credential(org, account, route string) (Credential, error) {
	return getJSON[Credential](s, bucketCredentials, CredentialKey(org, account, route))
}

// Credentials returns every sealed credential, ordered by key.
func (s *Store) Credentials() ([]Credential, error) {
	return listJSON[Credential](s, bucketCredentials)
}

// Rules returns every access rule, ordered by id.
func (s *Store) Rules() ([]Rule, error) { return listJSON[Rule](s, bucketRules) }

// Limits returns every rate limit, ordered by id.
func (s *Store) Limits() ([]Limit, error) { return listJSON[Limit](s, bucketLimits) }

// TokenKeys returns every token signing key, ordered by id.
func (s *Store) TokenKeys() ([]TokenKey, error) { return listJSON[TokenKey](s, bucketTokenKeys) }

// Revocations returns every revoked token id.
func (s *Store) Revocations() ([]Revocation, error) {
	return listJSON[Revocation](s, bucketRevocations)
}

// DataKeys returns the vault keyring: every data key, wrapped.
func (s *Store) DataKeys() ([]DataKey, error) { return listJSON[DataKey](s, bucketKeyring) }

// Tokens returns the metadata of every issued token.
func (s *Store) Tokens() ([]Token, error) { return listJSON[Token](s, bucketTokens) }

// AppliedIndex returns the last raft index applied, 0 if none.
func (s *Store) AppliedIndex() (uint64, error) {
	var i uint64
	err := s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta).Get(metaAppliedIndex); len(b) == 8 {
			i = binary.BigEndian.Uint64(b)
		}
		return nil
	})
	return i, err
}

// Snapshot writes a consistent copy of the whole database to w.
func (s *Store) Snapshot(w io.Writer) (int64, error) {
	var n int64
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Restore replaces the whole database with the snapshot read from r,
// atomically: the snapshot is written beside the database, checked, and
// renamed over it.
func (s *Store) Restore(r io.Reader) error {
	tmp := s.path + ".restore"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: write snapshot: %w", err)
	}
	// Check the snapshot opens before replacing anything.
	check, err := openDB(tmp)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: snapshot is not a valid state database: %w", err)
	}
	check.Close()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("restore: close current database: %w", err)
		}
		s.db = nil
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	db, err := openDB(s.path)
	if err != nil {
		return fmt.Errorf("restore: reopen: %w", err)
	}
	s.db = db
	s.generation.Add(1)
	return nil
}
