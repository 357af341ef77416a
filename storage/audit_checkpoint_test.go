package storage

import (
	"path/filepath"
	"testing"
)

// TestAuditCheckpointHistory: a checkpoint that does not move the chain
// forward is ignored, so a rewound node cannot hide the rewind; the
// history stays bounded and always keeps the node's first checkpoint and
// its latest.
func TestAuditCheckpointHistory(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), StateFile))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(seq uint64, hash string) {
		t.Helper()
		if err := s.Update(func(tx *Tx) error { return tx.PutAuditCheckpoint(AuditCheckpoint{Node: "gw1", Seq: seq, Hash: hash}) }); err != nil {
			t.Fatal(err)
		}
	}
	put(5, "a")
	put(3, "rewound")
	put(5, "replaced")
	cps, err := s.AuditCheckpoints("gw1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(cps), 1; got != want || cps[0].Hash != "a" {
		t.Fatalf("checkpoints=%+v, want only seq 5 hash a", cps)
	}
	for seq := uint64(6); seq < 6+3*AuditCheckpointHistory; seq++ {
		put(seq, "h")
	}
	if cps, err = s.AuditCheckpoints("gw1"); err != nil {
		t.Fatal(err)
	}
	if len(cps) > AuditCheckpointHistory {
		t.Fatalf("%d checkpoints kept, want at most %d", len(cps), AuditCheckpointHistory)
	}
	if got, want := cps[0].Seq, uint64(5); got != want {
		t.Fatalf("first kept seq=%d, want %d", got, want)
	}
	if got, want := cps[len(cps)-1].Seq, uint64(5+3*AuditCheckpointHistory); got != want {
		t.Fatalf("last kept seq=%d, want %d", got, want)
	}
	if none, err := s.AuditCheckpoints("gw2"); err != nil || none != nil {
		t.Fatalf("AuditCheckpoints(unknown)=%v, %v, want nil, nil", none, err)
	}
}
