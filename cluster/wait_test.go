package cluster

import (
	"context"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// stuckFuture is a raft future whose answer never comes, as raft leaves
// the future of an entry queued for the state machine when it shuts down.
// It has the shape of raft's own futures: an exported ShutdownCh its Error
// also ends on. A real one cannot be made on demand: whether raft drops
// the queued entry depends on the order its goroutines see the shutdown.
type stuckFuture struct {
	ShutdownCh chan struct{}
	returned   chan struct{}
}

func (f *stuckFuture) Error() error {
	defer close(f.returned)
	<-f.ShutdownCh // nil (blocks for ever) unless set
	return raft.ErrRaftShutdown
}

// TestWaitEndsWhenTheNodeCloses: waiting for a future raft never answers
// ends when the node closes, and so does the goroutine reading it, while
// a wait whose caller gave up keeps no goroutine past the close either.
func TestWaitEndsWhenTheNodeCloses(t *testing.T) {
	r := &Raft{closing: make(chan struct{})}
	blocked := &stuckFuture{returned: make(chan struct{})}
	gaveUp := &stuckFuture{returned: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- r.wait(context.Background(), blocked) }()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.wait(ctx, gaveUp); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled context = %v, want context.Canceled", err)
	}
	select {
	case err := <-errc:
		t.Fatalf("wait returned %v before the node closed", err)
	case <-gaveUp.returned:
		t.Fatal("the future was answered before the node closed")
	default:
	}
	close(r.closing)
	for name, f := range map[string]*stuckFuture{"waited": blocked, "given up": gaveUp} {
		select {
		case <-f.returned:
		case <-time.After(20 * time.Second):
			t.Fatalf("the goroutine reading the %s future did not end when the node closed", name)
		}
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) && !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("wait after close = %v, want ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("wait did not return when the node closed")
	}
}

// TestRaftFuturesEndOnClose: the futures raft returns for writes and
// barriers have the ShutdownCh endOnClose sets, so an upgrade of raft that
// renames it fails here rather than leak goroutines again.
func TestRaftFuturesEndOnClose(t *testing.T) {
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	conf.LogOutput = io.Discard
	_, trans := raft.NewInmemTransport("n1")
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	servers := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: trans.LocalAddr()}}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, trans, servers); err != nil {
		t.Fatal(err)
	}
	rf, err := raft.NewRaft(conf, nopFSM{}, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rf.Shutdown().Error() })
	deadline := time.Now().Add(20 * time.Second)
	for rf.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond) // polling raft's state, which has no signal to wait on here
	}
	closing := make(chan struct{})
	for name, f := range map[string]raft.Future{"apply": rf.Apply([]byte("x"), time.Second), "barrier": rf.Barrier(time.Second)} {
		endOnClose(f, closing)
		if got := reflect.ValueOf(f).Elem().FieldByName("ShutdownCh"); !got.IsValid() || got.Interface() != any(closing) {
			t.Errorf("%s future (%T): ShutdownCh not set by endOnClose", name, f)
		}
		if err := f.Error(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (nopFSM) Restore(io.ReadCloser) error         { return nil }
