package node

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/storage"
)

// corruptState creates a state database in dataDir holding, beside valid
// buckets, a route and a credential whose records are not JSON: a read of
// either fails with an error other than storage.ErrNotFound.
func corruptState(t *testing.T, dataDir string) {
	t.Helper()
	path := filepath.Join(dataDir, storage.StateFile)
	s, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The bucket names are storage's own; writing raw bytes is the only
	// way to get a record its typed getters cannot decode.
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("routes")).Put([]byte("broken"), []byte("{not json")); err != nil {
			return err
		}
		return tx.Bucket([]byte("credentials")).Put([]byte(storage.CredentialKey("acme", "alice", "kept")), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAdminStoreErrors: a record the store cannot read is a server fault,
// answered 500 with a pointer to the log where the cause is, never as
// "not found" (404) or as a new record (201) that overwrites it.
func TestAdminStoreErrors(t *testing.T) {
	var logs syncBuffer
	dataDir := t.TempDir()
	corruptState(t, dataDir)
	n := startNode(t, func(c *Config) {
		c.DataDir = dataDir
		c.InsecureDev = true // issuing a token reads the routes, which fails here
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	addRoute(t, n, storage.Route{Name: "kept", URL: "http://127.0.0.1:9/mcp"})

	tests := []struct {
		name    string
		method  string
		path    string
		body    any
		message string
	}{
		{name: "delete unreadable route", method: http.MethodDelete, path: "/v1/routes/broken", message: "read route: internal error; see the gateway log"},
		{name: "put over unreadable route", method: http.MethodPost, path: "/v1/routes", body: storage.Route{Name: "broken", URL: "http://127.0.0.1:9/mcp"}, message: "read route: internal error; see the gateway log"},
		{name: "list routes", method: http.MethodGet, path: "/v1/routes", message: "read routes: internal error; see the gateway log"},
		{name: "put credential on unreadable route", method: http.MethodPut, path: "/v1/credentials",
			body:    adminapi.PutCredentialRequest{Org: "acme", Account: "alice", Route: "broken", Kind: "bearer", Secret: "s3cret-token"},
			message: "read route: internal error; see the gateway log"},
		{name: "put over unreadable credential", method: http.MethodPut, path: "/v1/credentials",
			body:    adminapi.PutCredentialRequest{Org: "acme", Account: "alice", Route: "kept", Kind: "bearer", Secret: "s3cret-token"},
			message: "read credential: internal error; see the gateway log"},
		{name: "delete unreadable credential", method: http.MethodDelete, path: "/v1/credentials?org=acme&account=alice&route=kept", message: "read credential: internal error; see the gateway log"},
		{name: "list credentials", method: http.MethodGet, path: "/v1/credentials", message: "read credentials: internal error; see the gateway log"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := adminDo(t, n, tc.method, tc.path, tc.body)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if got, want := resp.StatusCode, http.StatusInternalServerError; got != want {
				t.Fatalf("%s %s: HTTP %d (%s), want %d", tc.method, tc.path, got, body, want)
			}
			var e adminapi.ErrorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("body %q is not an admin error: %v", body, err)
			}
			if got, want := e.Error, tc.message; got != want {
				t.Fatalf("error %q, want %q", got, want)
			}
		})
	}
	// The cause is in the log, for the operator.
	if got := logs.String(); !strings.Contains(got, "invalid character") {
		t.Fatalf("the log does not carry the store error:\n%s", got)
	}
	if strings.Contains(logs.String(), "s3cret-token") {
		t.Fatal("the log carries the credential")
	}
}
