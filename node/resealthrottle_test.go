package node

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// TestResealerIsThrottled: a rotation reseals in raft entries of at most
// 64 records, each one compare-and-set, and leaves at least resealPause
// between one batch and the next, so live writes and raft's own traffic
// get their turn; every record still ends up under the new key. It reads
// the raft log itself, whose entries carry the time the leader appended
// them.
func TestResealerIsThrottled(t *testing.T) {
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "gh", URL: "http://127.0.0.1:1/mcp"})
	const total = 300
	seedCredentials(t, n, "gh", total, "old")
	res := rotateDataKey(t, n)
	waitResealed(t, n, res.KeyID)
	dir := n.cfg.DataDir
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, cluster.RaftDir, "raft.db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	first, _ := logs.FirstIndex()
	last, _ := logs.LastIndex()
	var batches []raft.Log
	resealed := 0
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil || l.Type != raft.LogCommand {
			continue
		}
		cmd, err := cluster.DecodeCommand(l.Data)
		if err != nil || cmd.Op != cluster.OpBatch || len(cmd.Batch) == 0 || cmd.Batch[0].Op != cluster.OpResealCredential {
			continue
		}
		for _, c := range cmd.Batch {
			if c.Op != cluster.OpResealCredential && c.Op != cluster.OpResealTokenKey || len(c.Expect) == 0 {
				t.Fatalf("entry %d: %s in a reseal batch (expect %d bytes), want compare-and-set reseals only", i, c.Op, len(c.Expect))
			}
			if c.Op == cluster.OpResealCredential {
				resealed++
			}
		}
		if len(cmd.Batch) > 64 {
			t.Errorf("entry %d reseals %d records in one go, want at most 64", i, len(cmd.Batch))
		}
		batches = append(batches, l)
	}
	if resealed != total {
		t.Fatalf("%d credentials resealed in %d entries, want %d", resealed, len(batches), total)
	}
	for i := 1; i < len(batches); i++ {
		if gap := batches[i].AppendedAt.Sub(batches[i-1].AppendedAt); gap < resealPause {
			t.Errorf("reseal entries %d and %d appended %v apart, want at least %v", batches[i-1].Index, batches[i].Index, gap, resealPause)
		}
	}
}

// TestSettledResealerSkipsScans: once the keyring holds the active key
// alone, the leader's periodic reseal passes no longer read every record
// (each such pass decoded all credentials: ~100 ms every 2 s at 10,000),
// and a rotation makes them scan again until it has finished.
func TestSettledResealerSkipsScans(t *testing.T) {
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "gh", URL: "http://127.0.0.1:1/mcp"})
	seedCredentials(t, n, "gh", 20, "v")
	waitFor(t, "a first reseal pass", func() bool { return n.reseals.scans.Load() > 0 })
	// Two periodic passes (resealInterval apart) after a settled one.
	scans, passes := n.reseals.scans.Load(), n.reseals.passes.Load()
	waitFor(t, "two more periodic passes", func() bool { return n.reseals.passes.Load() >= passes+2 })
	if got := n.reseals.scans.Load(); got > scans+1 {
		t.Fatalf("%d record scans in %d passes with one key in the keyring, want at most one (the pass that found it settled)", got-scans, n.reseals.passes.Load()-passes)
	}
	scans = n.reseals.scans.Load()
	res := rotateDataKey(t, n)
	waitResealed(t, n, res.KeyID)
	if n.reseals.scans.Load() == scans {
		t.Fatal("the rotation was resealed without a scan")
	}
}
