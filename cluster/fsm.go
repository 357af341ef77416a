package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/mcpgw/mcpgw/storage"
)

// fsm applies the raft log to the state database.
//
// The database is durable and records, in the transaction that applies an
// entry, that entry's index (storage.AppliedIndex). So the database always
// holds exactly the effect of entries 1..AppliedIndex, and raft never
// changes a committed entry. Raft, however, replays the log from its last
// snapshot after a restart, and a snapshot's contents can run ahead of its
// index (see Persist). Both are made harmless by one rule: an entry at or
// below the database's applied index is already in it and is skipped. Every
// entry is therefore applied exactly once, in order, on every node.
type fsm struct {
	store  *storage.Store
	logger *slog.Logger

	// applied is the database's applied index. Only raft's FSM goroutine
	// touches it (Apply and Restore), so it needs no lock.
	applied uint64

	restores atomic.Uint64          // snapshots restored into the database
	halted   atomic.Pointer[string] // why the fsm stopped applying; nil while healthy

	// progress is applied for readers outside the FSM goroutine, who wait
	// on it with waitApplied.
	progress   atomic.Uint64
	progressMu sync.Mutex    // guards progressed
	progressed chan struct{} // closed and replaced when progress grows
}

// setApplied records index as applied and wakes waitApplied callers.
func (f *fsm) setApplied(index uint64) {
	f.applied = index
	f.progress.Store(index)
	f.progressMu.Lock()
	if f.progressed != nil {
		close(f.progressed)
	}
	f.progressed = make(chan struct{})
	f.progressMu.Unlock()
}

// waitApplied waits until the database holds entry index or ctx ends.
func (f *fsm) waitApplied(ctx context.Context, index uint64) error {
	for {
		f.progressMu.Lock()
		if f.progressed == nil {
			f.progressed = make(chan struct{})
		}
		ch := f.progressed
		f.progressMu.Unlock()
		if f.progress.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.FSMSnapshot = fsmSnapshot{}
)

// Apply applies one committed command and returns the error the command
// produced, which raft hands back to the writer on the leader.
func (f *fsm) Apply(l *raft.Log) any {
	if h := f.halted.Load(); h != nil {
		return fmt.Errorf("%w: %s", ErrHalted, *h)
	}
	if l.Index <= f.applied {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	if err == nil {
		err = Apply(f.store, l.Index, cmd)
	}
	if err == nil {
		f.setApplied(l.Index)
		return nil
	}
	if errors.Is(err, ErrInvalidCommand) {
		// Refused the same way on every node: record that the entry was
		// seen so a replay skips it like any other.
		if uerr := f.store.Update(func(tx *storage.Tx) error { return tx.SetAppliedIndex(l.Index) }); uerr != nil {
			f.halt(l.Index, uerr)
			return err
		}
		f.setApplied(l.Index)
		return err
	}
	// The database could not take a committed entry. Applying later
	// entries without it would make this node's state differ from the
	// others', so it stops applying altogether; a restart replays from the
	// last entry the database holds.
	f.halt(l.Index, err)
	return fmt.Errorf("%w: %s", ErrHalted, *f.halted.Load())
}

func (f *fsm) halt(index uint64, err error) {
	msg := fmt.Sprintf("state database failed to apply raft entry %d: %v; this node stopped applying the log: fix the cause and restart it", index, err)
	if f.halted.CompareAndSwap(nil, &msg) {
		f.logger.Error("raft apply halted", slog.Uint64("index", index), slog.Any("error", err))
	}
}

// Snapshot hands raft a snapshot that copies the database when persisted.
// The copy is taken later than the snapshot's index and may include entries
// after it; the skip rule in Apply makes replaying those harmless.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if h := f.halted.Load(); h != nil {
		// The database lacks entries raft counts as applied: a snapshot
		// would let raft drop them from the log for good.
		return nil, fmt.Errorf("%w: %s", ErrHalted, *h)
	}
	return fsmSnapshot{store: f.store}, nil
}

// Restore replaces the database with a snapshot's copy, atomically.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(rc); err != nil {
		return err
	}
	applied, err := f.store.AppliedIndex()
	if err != nil {
		return err
	}
	f.setApplied(applied)
	f.restores.Add(1)
	return nil
}

type fsmSnapshot struct{ store *storage.Store }

// Persist writes a consistent copy of the database (one bbolt read
// transaction) into the sink.
func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.store.Snapshot(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("snapshot state database: %w", err)
	}
	return sink.Close()
}

func (fsmSnapshot) Release() {}
