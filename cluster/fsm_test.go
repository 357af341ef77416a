package cluster

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/mcpgw/mcpgw/storage"
)

func openStore(t testing.TB) *storage.Store {
	t.Helper()
	s, err := storage.Open(filepath.Join(t.TempDir(), storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newFSM(t testing.TB, s *storage.Store) *fsm {
	t.Helper()
	applied, err := s.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	return &fsm{store: s, logger: slog.New(slog.DiscardHandler), applied: applied}
}

func entry(t testing.TB, index uint64, cmd Command) *raft.Log {
	t.Helper()
	b, err := cmd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b}
}

func putRoute(name string) Command {
	return Command{Op: OpPutRoute, Route: &storage.Route{Name: name, URL: "https://" + name, Transport: storage.TransportStreamable}}
}

func applyResult(t *testing.T, f *fsm, l *raft.Log) error {
	t.Helper()
	switch r := f.Apply(l).(type) {
	case nil:
		return nil
	case error:
		return r
	default:
		t.Fatalf("Apply returned %T", r)
		return nil
	}
}

func appliedIndex(t *testing.T, s *storage.Store) uint64 {
	t.Helper()
	i, err := s.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestFSMSkipsEntriesTheStoreHolds(t *testing.T) {
	s := openStore(t)
	f := newFSM(t, s)
	if err := applyResult(t, f, entry(t, 5, putRoute("a"))); err != nil {
		t.Fatal(err)
	}
	// A fresh fsm over the same store, as after a restart.
	f = newFSM(t, s)
	gen := s.Generation()
	for i := uint64(1); i <= 5; i++ {
		if err := applyResult(t, f, entry(t, i, putRoute("replayed"))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Route("replayed"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("an entry at or below the applied index was applied again: %v", err)
	}
	if got := s.Generation(); got != gen {
		t.Fatalf("replay committed %d writes", got-gen)
	}
	if err := applyResult(t, f, entry(t, 6, putRoute("b"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Route("b"); err != nil {
		t.Fatal(err)
	}
	if got, want := appliedIndex(t, s), uint64(6); got != want {
		t.Fatalf("AppliedIndex()=%d, want %d", got, want)
	}
}

func TestFSMRefusedEntriesCountAsApplied(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"not json", []byte("{")},
		{"wrong version", []byte(`{"op":1,"v":9}`)},
		{"missing payload", []byte(`{"op":1,"v":1}`)},
		{"nested batch", []byte(`{"op":11,"v":1,"batch":[{"op":11}]}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			f := newFSM(t, s)
			err := applyResult(t, f, &raft.Log{Index: 3, Type: raft.LogCommand, Data: tc.data})
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Apply()=%v, want ErrInvalidCommand", err)
			}
			if got, want := appliedIndex(t, s), uint64(3); got != want {
				t.Fatalf("AppliedIndex()=%d, want %d", got, want)
			}
			if f.halted.Load() != nil {
				t.Fatal("a refused command halted the fsm")
			}
		})
	}
}

func TestFSMHaltsWhenTheStoreFails(t *testing.T) {
	s := openStore(t)
	f := newFSM(t, s)
	if err := applyResult(t, f, entry(t, 1, putRoute("a"))); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := applyResult(t, f, entry(t, 2, putRoute("b"))); !errors.Is(err, ErrHalted) {
		t.Fatalf("Apply on a failed store = %v, want ErrHalted", err)
	}
	// Later entries are not applied past the gap, and no snapshot lets
	// raft forget the entry the store lacks.
	if err := applyResult(t, f, entry(t, 3, putRoute("c"))); !errors.Is(err, ErrHalted) {
		t.Fatalf("Apply after halting = %v, want ErrHalted", err)
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrHalted) {
		t.Fatalf("Snapshot after halting = %v, want ErrHalted", err)
	}
}

type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	src := openStore(t)
	f := newFSM(t, src)
	for i, name := range []string{"a", "b", "c"} {
		if err := applyResult(t, f, entry(t, uint64(i+1), putRoute(name))); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}

	dst := openStore(t)
	g := newFSM(t, dst)
	if err := applyResult(t, g, entry(t, 1, putRoute("stale"))); err != nil {
		t.Fatal(err)
	}
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	routes, err := dst.Routes()
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 3 || routes[0].Name != "a" || routes[2].Name != "c" {
		t.Fatalf("restored routes %+v, want a, b, c", routes)
	}
	if g.applied != 3 || g.restores.Load() != 1 {
		t.Fatalf("after restore applied=%d restores=%d, want 3 and 1", g.applied, g.restores.Load())
	}
	// Entries the snapshot holds are skipped; the next one applies.
	if err := applyResult(t, g, entry(t, 3, putRoute("dup"))); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Route("dup"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal("an entry the snapshot holds was applied again")
	}
	if err := applyResult(t, g, entry(t, 4, putRoute("d"))); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Route("d"); err != nil {
		t.Fatal(err)
	}
}
