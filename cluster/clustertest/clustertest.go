// Package clustertest runs real raft clusters inside one test process: real
// raft, real bbolt files under t.TempDir(), real mutual TLS from a test CA,
// on 127.0.0.1. Nodes can be killed, restarted and cut off from the others.
package clustertest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// Wait bounds every helper that polls for the cluster to reach a state.
const Wait = 15 * time.Second

// Config returns the configuration test nodes start from: real timeouts
// scaled down so elections take tens of milliseconds.
func Config() cluster.Config {
	cfg := cluster.DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	cfg.ElectionTimeout = 200 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.DialTimeout = time.Second
	cfg.RPCTimeout = 2 * time.Second
	cfg.ApplyTimeout = 5 * time.Second
	return cfg
}

// Option changes how NewCluster builds nodes.
type Option func(*options)

type options struct {
	config   func(*cluster.Config)
	logLevel slog.Level
}

// WithConfig lets a test change each node's configuration (timeouts,
// snapshot thresholds) before it opens.
func WithConfig(f func(*cluster.Config)) Option {
	return func(o *options) { o.config = f }
}

// WithLogLevel sends node logs at or above level to t.Log. Default: warn.
func WithLogLevel(level slog.Level) Option {
	return func(o *options) { o.logLevel = level }
}

// Cluster is a set of nodes running in this process.
type Cluster struct {
	CA    *cluster.CA
	Nodes []*Node

	opts options
	tb   testing.TB
	net  *network
	log  *testLog
}

// Node is one member: its files, store and raft.
type Node struct {
	Index  int
	ID     string
	Dir    string // the data dir
	TLSDir string // the node's certificate, key and the cluster CA
	Addr   string // the raft address, the same across restarts

	mu    sync.Mutex // guards store, raft and alive across Kill/Restart
	store *storage.Store
	raft  *cluster.Raft
	alive bool

	c   *Cluster
	cfg cluster.Config
}

// NewCluster starts n nodes, bootstraps the first, joins the others to it
// and waits until all n are voters that agree on a leader. Everything stops
// when the test ends.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	o := options{logLevel: slog.LevelWarn}
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	ca, err := cluster.NewCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{CA: ca, opts: o, tb: t, net: newNetwork(), log: &testLog{tb: t}}
	t.Cleanup(c.Close)
	for i := range n {
		node := c.newNode(t, i == 0)
		if i > 0 {
			c.join(t, node, c.Nodes[0])
		}
	}
	c.WaitForLeader(t)
	c.WaitForVoters(t, n)
	return c
}

// AddNode starts one more node and joins it through the current leader.
func (c *Cluster) AddNode(t testing.TB) *Node {
	t.Helper()
	leader := c.WaitForLeader(t)
	node := c.newNode(t, false)
	c.join(t, node, leader)
	return node
}

// join asks via to add node, again while the answer is that leadership
// changed under the request (joining twice is harmless).
func (c *Cluster) join(t testing.TB, node, via *Node) {
	t.Helper()
	Eventually(t, Wait, func() error {
		err := node.Raft().RequestJoin(context.Background(), via.Addr)
		if err != nil {
			t.Logf("join node %d: %v", node.Index, err)
		}
		return err
	})
}

// NewForeignNode starts a node whose certificate comes from a CA of its
// own, not the cluster's, though it trusts the cluster's CA; it is not
// added to Nodes. Its raft and store close when the test ends.
func (c *Cluster) NewForeignNode(t testing.TB) *cluster.Raft {
	t.Helper()
	dir := t.TempDir()
	ca, err := cluster.NewCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.nodeConfig(t, ca, dir, -1)
	cfg.TLS.RootCAs = x509.NewCertPool()
	cfg.TLS.RootCAs.AddCert(c.CA.Cert)
	store, err := storage.Open(filepath.Join(dir, storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := cluster.New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		store.Close()
	})
	return r
}

func (c *Cluster) newNode(t testing.TB, bootstrap bool) *Node {
	t.Helper()
	i := len(c.Nodes)
	dir := t.TempDir()
	cfg := c.nodeConfig(t, c.CA, dir, i)
	cfg.Bootstrap = bootstrap
	node := &Node{Index: i, Dir: dir, TLSDir: filepath.Join(dir, "tls"), c: c, cfg: cfg}
	c.Nodes = append(c.Nodes, node)
	if err := node.start(); err != nil {
		t.Fatalf("start node %d: %v", i, err)
	}
	node.ID = node.raft.ID()
	node.Addr = node.raft.Addr()
	// Restarts come back on the same address, which is the node's raft
	// identity as far as the others know.
	node.cfg.BindAddr = node.Addr
	node.cfg.AdvertiseAddr = node.Addr
	c.net.register(node.Addr, i)
	return node
}

func (c *Cluster) nodeConfig(t testing.TB, ca *cluster.CA, dir string, index int) cluster.Config {
	t.Helper()
	id := fmt.Sprintf("node%d", index)
	if index < 0 {
		id = "foreign"
	}
	tlsDir := filepath.Join(dir, "tls")
	if err := cluster.IssueNodeCert(ca, tlsDir, id, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	tlsConf, err := cluster.LoadTLS(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config()
	cfg.NodeID = id
	cfg.DataDir = dir
	cfg.TLS = tlsConf
	cfg.Logger = slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: c.opts.logLevel})).With(slog.String("node", id))
	cfg.Dial = c.net.dialer(index)
	if c.opts.config != nil {
		c.opts.config(&cfg)
	}
	return cfg
}

func (n *Node) start() error {
	store, err := storage.Open(filepath.Join(n.Dir, storage.StateFile))
	if err != nil {
		return err
	}
	r, err := cluster.New(n.cfg, store)
	if err != nil {
		store.Close()
		return err
	}
	// A restarted node reuses its port, which the kernel may still hold
	// for a moment.
	deadline := time.Now().Add(Wait)
	for {
		err = r.Open(context.Background())
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			break
		}
		t := time.NewTimer(20 * time.Millisecond)
		<-t.C
	}
	if err != nil {
		store.Close()
		return err
	}
	n.mu.Lock()
	n.store, n.raft, n.alive = store, r, true
	n.mu.Unlock()
	return nil
}

// Raft returns the node's raft, nil while it is killed.
func (n *Node) Raft() *cluster.Raft {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.raft
}

// Store returns the node's state database, nil while it is killed.
func (n *Node) Store() *storage.Store {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store
}

// Alive reports whether the node runs (it may still be partitioned).
func (n *Node) Alive() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.alive
}

// Kill stops node i: raft, connections and state database, as a process
// exit would. Its files stay for Restart.
func (c *Cluster) Kill(i int) {
	c.tb.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.alive {
		return
	}
	if err := n.raft.Close(); err != nil {
		c.tb.Errorf("close raft of node %d: %v", i, err)
	}
	if err := n.store.Close(); err != nil {
		c.tb.Errorf("close store of node %d: %v", i, err)
	}
	n.raft, n.store, n.alive = nil, nil, false
}

// Restart starts killed node i again from its files, on its old address.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	n := c.Nodes[i]
	if n.Alive() {
		c.tb.Fatalf("restart node %d: it is running", i)
	}
	if err := n.start(); err != nil {
		c.tb.Fatalf("restart node %d: %v", i, err)
	}
}

// Partition cuts node i off from every other node: its connections are
// closed and new ones, in or out, are refused until Heal.
func (c *Cluster) Partition(i int) { c.net.cut(i, true) }

// Heal ends node i's partition.
func (c *Cluster) Heal(i int) { c.net.cut(i, false) }

// Stall freezes node i's traffic as a stopped process (SIGSTOP) or a
// congested link looks from outside: its connections stay open and carry
// no bytes in either direction until Unstall. Unlike Partition nothing is
// closed or refused, so peers notice only by their timeouts.
func (c *Cluster) Stall(i int) { c.net.stall(i, true) }

// Unstall lets node i's traffic flow again.
func (c *Cluster) Unstall(i int) { c.net.stall(i, false) }

// reachable returns the nodes that run and are not cut off.
func (c *Cluster) reachable() []*Node {
	var out []*Node
	for i, n := range c.Nodes {
		if n.Alive() && !c.net.isCut(i) {
			out = append(out, n)
		}
	}
	return out
}

// Leader returns the node that is leader and that every running,
// connected node agrees on; nil if there is none yet.
func (c *Cluster) Leader() *Node {
	var leader *Node
	var id string
	for _, n := range c.reachable() {
		r := n.Raft()
		if r == nil {
			continue
		}
		st := r.Status()
		if st.State == "Shutdown" {
			continue
		}
		if st.LeaderID == "" || (id != "" && st.LeaderID != id) {
			return nil
		}
		id = st.LeaderID
		if st.State == "Leader" {
			leader = n
		}
	}
	return leader
}

// WaitForLeader waits until the running, connected nodes agree on a
// leader, and returns it.
func (c *Cluster) WaitForLeader(t testing.TB) *Node {
	t.Helper()
	var leader *Node
	Eventually(t, Wait, func() error {
		if leader = c.Leader(); leader == nil {
			return errors.New("no agreed leader")
		}
		return nil
	})
	return leader
}

// Followers returns the running, connected nodes other than the leader.
func (c *Cluster) Followers(t testing.TB) []*Node {
	t.Helper()
	leader := c.WaitForLeader(t)
	var out []*Node
	for _, n := range c.reachable() {
		if n != leader && n.Raft().Status().State != "Shutdown" {
			out = append(out, n)
		}
	}
	return out
}

// WaitForVoters waits until the leader's configuration holds n voters.
func (c *Cluster) WaitForVoters(t testing.TB, n int) {
	t.Helper()
	Eventually(t, Wait, func() error {
		leader := c.Leader()
		if leader == nil {
			return errors.New("no leader")
		}
		voters := 0
		for _, p := range leader.Raft().Status().Peers {
			if p.Suffrage == "Voter" {
				voters++
			}
		}
		if voters != n {
			return fmt.Errorf("%d voters, want %d", voters, n)
		}
		return nil
	})
}

// WaitSynced waits until every running, connected member has applied
// everything the leader holds now.
func (c *Cluster) WaitSynced(t testing.TB) {
	t.Helper()
	leader := c.WaitForLeader(t)
	lst := leader.Raft().Status()
	want, wantState := lst.LastIndex, lst.StateIndex
	Eventually(t, Wait, func() error {
		for _, n := range c.reachable() {
			st := n.Raft().Status()
			if st.State == "Shutdown" {
				continue
			}
			// Raft counts an entry applied once it hands it on; the state
			// database may still be writing it, and a Kill then would lose
			// it until a restart replays it.
			if st.AppliedIndex < want || st.StateIndex < wantState {
				return fmt.Errorf("node %d applied %d of %d (state database at %d of %d)", n.Index, st.AppliedIndex, want, st.StateIndex, wantState)
			}
		}
		return nil
	})
}

// Close kills every node. The test's end does it too; benchmarks that
// build many clusters call it to stop each early.
func (c *Cluster) Close() {
	for i := range c.Nodes {
		c.Kill(i)
	}
	c.log.stop()
}

// Eventually calls f until it returns nil, failing t with f's last error
// if that takes longer than timeout.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not true after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// network decides which test node may connect to which.
type network struct {
	mu       sync.Mutex
	index    map[string]int      // raft address to node index
	isolated map[int]bool        // nodes cut off by Partition
	stalled  map[int]bool        // nodes frozen by Stall
	conns    map[net.Conn][2]int // open connections: from, to
}

func newNetwork() *network {
	return &network{index: make(map[string]int), isolated: make(map[int]bool), stalled: make(map[int]bool), conns: make(map[net.Conn][2]int)}
}

func (w *network) register(addr string, i int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.index[addr] = i
}

func (w *network) isCut(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.isolated[i]
}

func (w *network) cut(i int, on bool) {
	w.mu.Lock()
	w.isolated[i] = on
	var doomed []net.Conn
	if on {
		for c, ends := range w.conns {
			if ends[0] == i || ends[1] == i {
				doomed = append(doomed, c)
				delete(w.conns, c)
			}
		}
	}
	w.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

// dialer returns the Dial of node from (-1 for a node outside the cluster).
func (w *network) dialer(from int) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		w.mu.Lock()
		to, known := w.index[addr]
		if !known {
			to = -1
		}
		refused := w.isolated[from] || (known && w.isolated[to])
		w.mu.Unlock()
		if refused {
			return nil, fmt.Errorf("dial %s: partitioned", addr)
		}
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := &netConn{Conn: raw, w: w, ends: [2]int{from, to}}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.isolated[from] || (known && w.isolated[to]) {
			raw.Close()
			return nil, fmt.Errorf("dial %s: partitioned", addr)
		}
		w.conns[c] = [2]int{from, to}
		return c, nil
	}
}

func (w *network) stall(i int, on bool) {
	w.mu.Lock()
	w.stalled[i] = on
	var resumed []*netConn
	if !on {
		for c, ends := range w.conns {
			if nc, ok := c.(*netConn); ok && (ends[0] == i || ends[1] == i) {
				resumed = append(resumed, nc)
			}
		}
	}
	w.mu.Unlock()
	for _, c := range resumed {
		c.flush()
	}
}

// netConn is one connection a test node dialled. Both directions of its
// bytes pass through here, so holding them here stalls the connection.
type netConn struct {
	net.Conn
	w    *network
	ends [2]int // from, to

	wmu     sync.Mutex // serialises writes; guards pending
	pending []byte     // written while stalled, sent when the stall ends

	mu           sync.Mutex // guards the fields below
	closed       bool
	readDeadline time.Time
}

func (c *netConn) stalled() bool {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.w.stalled[c.ends[0]] || (c.ends[1] >= 0 && c.w.stalled[c.ends[1]])
}

// hold waits while either end of c is stalled; it gives up when c closes
// or the read deadline passes, as a blocked read would.
func (c *netConn) hold() error {
	for c.stalled() {
		c.mu.Lock()
		closed, deadline := c.closed, c.readDeadline
		c.mu.Unlock()
		switch {
		case closed:
			return net.ErrClosed
		case !deadline.IsZero() && time.Now().After(deadline):
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(2 * time.Millisecond)
		<-t.C
	}
	return nil
}

func (c *netConn) Read(b []byte) (int, error) {
	if err := c.hold(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		// Bytes that arrived as the stall began are not delivered before
		// it ends.
		if herr := c.hold(); herr != nil {
			return 0, herr
		}
	}
	return n, err
}

// Write queues b while c is stalled, as the kernel's socket buffers would
// take it from a process whose peer stopped reading.
func (c *netConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.stalled() {
		c.pending = append(c.pending, b...)
		return len(b), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *netConn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushLocked()
}

func (c *netConn) flushLocked() error {
	if len(c.pending) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.pending)
	c.pending = nil
	return err
}

func (c *netConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *netConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *netConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.w.mu.Lock()
	delete(c.w.conns, c)
	c.w.mu.Unlock()
	return c.Conn.Close()
}

// testLog writes log lines to t.Log until the cluster is closed, so a
// straggling line cannot reach a finished test.
type testLog struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}
