package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/node"
	"github.com/mcpgw/mcpgw/vault"
)

func TestMergeAudit(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 3, 1, 12, 0, s, 0, time.UTC) }
	a := []adminapi.AuditRecord{{Node: "a", Seq: 2, Time: at(5)}, {Node: "a", Seq: 1, Time: at(1)}}
	b := []adminapi.AuditRecord{{Node: "b", Seq: 7, Time: at(5)}, {Node: "b", Seq: 6, Time: at(3)}}
	key := func(recs []adminapi.AuditRecord) []string {
		var out []string
		for _, r := range recs {
			out = append(out, r.Node+string(rune('0'+r.Seq)))
		}
		return out
	}
	cases := []struct {
		name        string
		oldestFirst bool
		limit       int
		want        []string
	}{
		{"newest first", false, 10, []string{"b7", "a2", "b6", "a1"}},
		{"oldest first", true, 10, []string{"a1", "b6", "a2", "b7"}},
		{"limit across nodes", false, 3, []string{"b7", "a2", "b6"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := key(mergeAudit([][]adminapi.AuditRecord{a, b}, tc.oldestFirst, tc.limit))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("merged (-want +got):\n%s", diff)
			}
		})
	}
	if got := mergeAudit(nil, false, 5); got == nil || len(got) != 0 {
		t.Fatalf("mergeAudit of nothing = %#v, want an empty list (printed as [])", got)
	}
}

// startTestNode starts a node on loopback ports with its data in a temp dir.
func startTestNode(t *testing.T, mutate ...func(*node.Config)) *node.Node {
	t.Helper()
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminAddr, cfg.QUICAddr, cfg.RaftAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	cfg.VaultKeys = vault.NewKeys(id)
	for _, f := range mutate {
		f(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp(&out, &out)
	full, path := reorderArgs(app, append([]string{"mcpgw"}, args...))
	err := app.Run(full)
	if err != nil {
		err = classify(err, path)
	}
	return out.String(), err
}

// TestAuditCommandQueriesEveryNode: `mcpgw audit` with two --admin
// addresses shows both nodes' records merged, and `audit verify` checks
// both chains.
func TestAuditCommandQueriesEveryNode(t *testing.T) {
	nodes := []*node.Node{startTestNode(t), startTestNode(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, n := range nodes {
		// A session without a service token: refused, and audited.
		_, err := client.Connect(ctx, "http://127.0.0.1:1/mcp", []string{"acme", "globex"}[i], "a1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(""))
		if err == nil {
			t.Fatal("a session without a token opened")
		}
	}
	admin := "--admin=" + nodes[0].AdminAddr() + "," + nodes[1].AdminAddr()
	tokens := []string{"--admin-token", nodes[0].AdminToken(), "--admin-token", nodes[1].AdminToken()}

	var recs []adminapi.AuditRecord
	deadline := time.Now().Add(10 * time.Second)
	for len(recs) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("audit shows %d records, want 2", len(recs))
		}
		out, err := runApp(t, append([]string{"audit", admin, "--since", "1h", "--kind", "refusal", "--json"}, tokens...)...)
		if err != nil {
			t.Fatalf("audit: %v\n%s", err, out)
		}
		recs = nil
		if err := json.Unmarshal([]byte(out), &recs); err != nil {
			t.Fatalf("audit --json printed %q: %v", out, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	if got, want := []string{recs[0].Org, recs[1].Org}, []string{"globex", "acme"}; !cmp.Equal(got, want) {
		t.Fatalf("orgs newest first = %v, want %v", got, want)
	}

	out, err := runApp(t, append([]string{"audit", admin, "--org", "acme"}, tokens...)...)
	if err != nil || !strings.Contains(out, "refused(unauthorized)") || strings.Contains(out, "globex") {
		t.Fatalf("audit --org acme: %v\n%s", err, out)
	}

	out, err = runApp(t, append([]string{"audit", "verify", admin}, tokens...)...)
	if err != nil || strings.Count(out, "1 records, chain intact") != 2 {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}

	// One node unreachable: the other's records still show, and the
	// command fails saying so.
	out, err = runApp(t, "audit", "--admin", nodes[0].AdminAddr(), "--admin", "127.0.0.1:1", "--admin-token", nodes[0].AdminToken())
	if err == nil || !strings.Contains(err.Error(), "1 of 2 nodes failed") || !strings.Contains(out, "acme") {
		t.Fatalf("audit with a node down: %v\n%s", err, out)
	}

	// Token count must match.
	_, err = runApp(t, "audit", admin, "--admin-token", "a,b,c")
	if err == nil || !strings.Contains(err.Error(), "3 admin tokens for 2 nodes") {
		t.Fatalf("three tokens for two nodes: %v", err)
	}
	_, err = runApp(t, "audit", admin, "--data-dir", filepath.Join(t.TempDir(), "none"))
	if err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Fatalf("no token: %v", err)
	}
}
