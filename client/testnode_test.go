package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/node"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// StartInsecureNode starts a node that needs no service token, listening on
// loopback for WebSocket sessions, with one route named "up" to upstream.
// edit, if not nil, changes the config before the node starts (a Unix
// socket, a QUIC listener). Several such nodes stand in for cluster members
// in the failover tests; the cluster's own tests cover replication. It is
// exported only to this package's external tests.
func StartInsecureNode(t *testing.T, upstream string, edit func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.AdminAddr, cfg.QUICAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	cfg.InsecureDev = true
	cfg.ShutdownTimeout = time.Second
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg.VaultKeys = vault.NewKeys(id)
	cfg.VaultKeyFile = filepath.Join(t.TempDir(), "vault.key")
	if edit != nil {
		edit(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	body, _ := json.Marshal(storage.Route{Name: "up", URL: upstream})
	req, _ := http.NewRequest(http.MethodPost, "http://"+n.AdminAddr()+"/v1/routes", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("add route: HTTP %d", resp.StatusCode)
	}
	return n
}
