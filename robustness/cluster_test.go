package robustness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/node"
	"github.com/mcpgw/mcpgw/vault"
)

// network is the nemesis's view of the links between nodes: raft links
// it cuts pairwise, and whole nodes it freezes. Every node consults it
// through cluster.Raft.SetFaults, and admin clients through their dialer.
type network struct {
	mu      sync.Mutex
	cut     map[[2]string]bool // unordered pairs of node ids, lower id first
	paused  map[string]bool
	changed chan struct{} // closed and replaced on every change
}

func newNetwork() *network {
	return &network{cut: make(map[[2]string]bool), paused: make(map[string]bool), changed: make(chan struct{})}
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (w *network) update(f func()) {
	w.mu.Lock()
	f()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// wait blocks while blocked() holds, or until done is closed.
func (w *network) wait(done <-chan struct{}, blocked func() bool) error {
	for {
		w.mu.Lock()
		b, ch := blocked(), w.changed
		w.mu.Unlock()
		if !b {
			return nil
		}
		select {
		case <-ch:
		case <-done:
			return net.ErrClosed
		}
	}
}

func (w *network) heal() {
	w.update(func() { clear(w.cut); clear(w.paused) })
}

// linkFaults is one node's view of the network.
type linkFaults struct {
	w    *network
	self string
}

var _ cluster.Faults = linkFaults{}

func (f linkFaults) Hold(ctx context.Context, peer string) error {
	return f.w.wait(ctx.Done(), func() bool {
		return f.w.paused[f.self] || f.w.paused[peer] || f.w.cut[pair(f.self, peer)]
	})
}

// heldConn is an admin client's connection to a node: while the node is
// frozen, nothing passes either way, as with a stopped process whose kernel
// still holds the socket open.
type heldConn struct {
	net.Conn
	w      *network
	id     string
	closed chan struct{}
	once   sync.Once
}

func (c *heldConn) hold() error {
	return c.w.wait(c.closed, func() bool { return c.w.paused[c.id] })
}

func (c *heldConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if herr := c.hold(); herr != nil {
		return 0, herr
	}
	return n, err
}

func (c *heldConn) Write(b []byte) (int, error) {
	if err := c.hold(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *heldConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// gateway is one node slot: its files persist across kills and restarts.
type gateway struct {
	id       string
	dir      string
	raftAddr string       // fixed after the first start: the others dial it
	client   *http.Client // holds traffic while the node is frozen

	mu    sync.Mutex // guards n, url and token
	n     *node.Node // nil while down
	url   string
	token string
}

// endpoint returns the node's admin URL and token, or ok false while it
// is down.
func (g *gateway) endpoint() (url, token string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.url, g.token, g.n != nil
}

// testCluster is three gateway nodes in this process.
type testCluster struct {
	keys  *vault.Keys
	net   *network
	nodes []*gateway
}

func newTestCluster(t *testing.T, size int) *testCluster {
	t.Helper()
	ident, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{keys: vault.NewKeys(ident), net: newNetwork()}
	t.Cleanup(func() {
		c.net.heal()
		for _, g := range c.nodes {
			c.kill(g)
			g.client.CloseIdleConnections()
		}
	})
	for i := range size {
		g := &gateway{id: fmt.Sprintf("gw%d", i+1), dir: t.TempDir()}
		w := c.net
		id := g.id
		g.client = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var d net.Dialer
				raw, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &heldConn{Conn: raw, w: w, id: id, closed: make(chan struct{})}, nil
			},
			MaxIdleConnsPerHost: 8,
		}}
		if i > 0 {
			ca, err := cluster.LoadCA(node.DefaultClusterTLSDir(c.nodes[0].dir))
			if err != nil {
				t.Fatal(err)
			}
			tlsDir := node.DefaultClusterTLSDir(g.dir)
			if err := os.MkdirAll(tlsDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := cluster.IssueNodeCert(ca, tlsDir, g.id, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
		}
		c.nodes = append(c.nodes, g)
		if err := c.start(g); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// start starts g's node on its files; the first start of a node other
// than the first joins the cluster through the first.
func (c *testCluster) start(g *gateway) error {
	cfg := node.DefaultConfig()
	cfg.DataDir = g.dir
	cfg.NodeID = g.id
	cfg.HTTPAddr, cfg.AdminAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.RaftAddr = g.raftAddr
	if cfg.RaftAddr == "" {
		cfg.RaftAddr = "127.0.0.1:0"
	}
	cfg.VaultKeys = c.keys
	cfg.ShutdownTimeout = 100 * time.Millisecond
	if g != c.nodes[0] {
		cfg.Join = []string{c.nodes[0].raftAddr}
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		n.Close()
		return fmt.Errorf("start %s: %w", g.id, err)
	}
	n.Raft().SetFaults(linkFaults{w: c.net, self: g.id})
	g.mu.Lock()
	g.n, g.url, g.token = n, n.AdminURL(), n.AdminToken()
	if g.raftAddr == "" {
		g.raftAddr = n.Raft().Addr()
	}
	g.mu.Unlock()
	return nil
}

// restart starts g again, retrying while the cluster settles.
func (c *testCluster) restart(g *gateway) error {
	deadline := time.Now().Add(45 * time.Second)
	for {
		err := c.start(g)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(100 * time.Millisecond)
		<-t.C
	}
}

// kill stops g's node at once: sessions are not drained (there are none)
// and raft stops without handing over leadership.
func (c *testCluster) kill(g *gateway) {
	g.mu.Lock()
	n := g.n
	g.n = nil
	g.mu.Unlock()
	if n != nil {
		n.Close()
	}
}

// leader returns the slot whose node is leader, or nil.
func (c *testCluster) leader() *gateway {
	for _, g := range c.nodes {
		g.mu.Lock()
		n := g.n
		g.mu.Unlock()
		if n != nil && n.Raft().Status().State == "Leader" {
			return g
		}
	}
	return nil
}

var errDown = errors.New("node is down")

// errUnconfirmed is a request the node refused, before doing anything,
// because it could not confirm its copy is current (it knows no leader,
// or the leader did not answer its read barrier in time).
var errUnconfirmed = errors.New("refused: the node could not confirm its copy is current")
