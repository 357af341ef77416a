package node

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/storage"
)

// appendAudit appends k tool-call records to n's audit log.
func appendAudit(t *testing.T, n *Node, k int) {
	t.Helper()
	recs := make([]storage.AuditRecord, k)
	for i := range recs {
		recs[i] = storage.AuditRecord{Kind: storage.AuditToolCall, Node: n.NodeID(), Tool: "echo", Outcome: "ok"}
	}
	if err := n.audit.log.Append(recs); err != nil {
		t.Fatal(err)
	}
}

// waitCheckpoint waits until every node holds id's checkpoint at seq.
func waitCheckpoint(t *testing.T, nodes []*Node, id string, seq uint64) {
	t.Helper()
	waitFor(t, "every node to hold the audit checkpoint", func() bool {
		for _, n := range nodes {
			cps, err := n.store.AuditCheckpoints(id)
			if err != nil || len(cps) == 0 || cps[len(cps)-1].Seq != seq {
				return false
			}
		}
		return true
	})
}

func verifyAudit(t *testing.T, n *Node) adminapi.AuditVerifyResult {
	t.Helper()
	resp := adminDo(t, n, "GET", "/v1/audit/verify", nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/audit/verify: %d", resp.StatusCode)
	}
	var res adminapi.AuditVerifyResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// editAudit changes the stored records of a closed audit log in place, as
// someone with the file and the bbolt library would.
func editAudit(t *testing.T, path string, fn func(records *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("audit_records"))) }); err != nil {
		t.Fatal(err)
	}
}

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// TestAuditCheckpointTampering: each node commits signed checkpoints of
// its audit chain head through raft; deleting, editing, truncating
// (rewinding) or replacing one node's audit.db is then reported with the
// node, the first bad sequence number and the kind of tampering, while
// the other nodes and an intact log verify clean.
func TestAuditCheckpointTampering(t *testing.T) {
	nodes := startCluster(t, 3, func(c *Config) { c.AuditCheckpointInterval = 50 * time.Millisecond })
	victim := nodes[1]
	id, raftAddr := victim.NodeID(), victim.Raft().Addr()
	path := filepath.Join(victim.cfg.DataDir, storage.AuditFile)
	work := t.TempDir()
	old, pristine, foreign := filepath.Join(work, "old.db"), filepath.Join(work, "pristine.db"), filepath.Join(work, "foreign.db")

	appendAudit(t, victim, 5)
	waitCheckpoint(t, nodes, id, 5)
	victim.Close()
	copyFile(t, path, old)
	victim = restartNode(t, victim, raftAddr)
	appendAudit(t, victim, 5)
	waitCheckpoint(t, []*Node{nodes[0], victim, nodes[2]}, id, 10)
	victim.Close()
	copyFile(t, path, pristine)

	// A chain of the same node id written elsewhere: internally valid.
	fl, err := storage.OpenAudit(foreign, storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]storage.AuditRecord, 12)
	for i := range recs {
		recs[i] = storage.AuditRecord{Kind: storage.AuditToolCall, Node: id, Tool: "echo", Outcome: "ok"}
	}
	if err := fl.Append(recs); err != nil {
		t.Fatal(err)
	}
	fl.Close()

	// Cases run in order on one cluster; "replaced" is last because the
	// node then checkpoints the forged head.
	cases := []struct {
		name      string
		tamper    func()
		ok        bool
		brokenSeq uint64
		kind      string
	}{
		{"intact", func() { copyFile(t, pristine, path) }, true, 0, ""},
		{"edited", func() {
			copyFile(t, pristine, path)
			editAudit(t, path, func(b *bolt.Bucket) error {
				return b.Put(seqBytes(7), bytes.Replace(b.Get(seqBytes(7)), []byte(`"echo"`), []byte(`"ech0"`), 1))
			})
		}, false, 7, "edited"},
		{"record deleted", func() {
			copyFile(t, pristine, path)
			editAudit(t, path, func(b *bolt.Bucket) error { return b.Delete(seqBytes(4)) })
		}, false, 4, "deleted"},
		{"file deleted", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, false, 1, "deleted"},
		{"truncated", func() { copyFile(t, old, path) }, false, 6, "truncated"},
		{"replaced", func() { copyFile(t, foreign, path) }, false, 1, "replaced"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.tamper()
			victim = restartNode(t, victim, raftAddr)
			defer victim.Close()
			for _, n := range []*Node{nodes[0], victim, nodes[2]} {
				got := verifyAudit(t, n)
				if n != victim {
					if !got.OK {
						t.Errorf("untouched node %s: %+v, want ok", got.Node, got)
					}
					continue
				}
				if got.Node != id || got.OK != tc.ok || got.BrokenSeq != tc.brokenSeq || got.Tamper != tc.kind || got.CheckpointSeq != 10 {
					t.Errorf("verify %s = %+v, want ok=%v broken_seq=%d tamper=%q checkpoint_seq=10", id, got, tc.ok, tc.brokenSeq, tc.kind)
				}
			}
		})
	}
}
