package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mcpgw/mcpgw/internal/atomicfile"
)

// NodeIDFile is the file under the data dir that holds the node id.
const NodeIDFile = "node-id"

// LoadNodeID returns the node id of the data dir: the one stored in
// <dataDir>/node-id, or want (a new random id when want is empty) after
// storing it there. An id fixes a node's identity in the raft configuration
// and its certificate, so a data dir never changes id: a want that differs
// from the stored id is an error.
func LoadNodeID(dataDir, want string) (string, error) {
	if want != "" {
		if err := validNodeID(want); err != nil {
			return "", fmt.Errorf("node id: %w", err)
		}
	}
	path := filepath.Join(dataDir, NodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if err := validNodeID(stored); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if want != "" && want != stored {
			return "", fmt.Errorf("node id %q was given but %s holds %q: a data dir belongs to one node for life; drop --node-id or use a fresh --data-dir", want, path, stored)
		}
		return stored, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("read node id: %w", err)
	}
	id := want
	if id == "" {
		var b [6]byte
		rand.Read(b[:])
		id = "node-" + hex.EncodeToString(b[:])
	}
	// Create, not Write: two processes starting on one fresh data dir must
	// not each go on with a different id.
	if err := atomicfile.Create(path, []byte(id+"\n"), 0o600); err != nil {
		if errors.Is(err, atomicfile.ErrExists) {
			return LoadNodeID(dataDir, want)
		}
		return "", fmt.Errorf("store node id: %w", err)
	}
	return id, nil
}

// validNodeID accepts ids that are safe in file names, certificate common
// names, log lines and URLs.
func validNodeID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%q must be 1 to 64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%q may hold only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}
