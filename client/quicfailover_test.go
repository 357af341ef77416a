package client_test

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/node"
)

// startQUICNode starts a node that needs no service token, with one route
// to upstream, listening for QUIC sessions. It adds its CA to roots.
func startQUICNode(t *testing.T, upstream string, roots *x509.CertPool) *node.Node {
	t.Helper()
	var dataDir string
	n := client.StartInsecureNode(t, upstream, func(c *node.Config) {
		c.QUICAddr = "127.0.0.1:0"
		dataDir = c.DataDir
	})
	ca, err := os.ReadFile(filepath.Join(node.DefaultClusterTLSDir(dataDir), cluster.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("cluster CA is not PEM")
	}
	return n
}

// udpRelay forwards datagrams between clients and a UDP server until
// Blackhole, after which it drops them all: from the client's side, the
// server's machine died. A QUIC server that is killed sends nothing more,
// not even CONNECTION_CLOSE, which closing a node would send.
type udpRelay struct {
	ln      *net.UDPConn
	target  *net.UDPAddr
	dropped atomic.Bool
	wg      sync.WaitGroup

	mu    sync.Mutex
	peers map[string]*net.UDPConn // by client address, toward the target
}

func startUDPRelay(t *testing.T, target string) *udpRelay {
	t.Helper()
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{ln: ln, target: taddr, peers: make(map[string]*net.UDPConn)}
	r.wg.Go(r.fromClients)
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.peers {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *udpRelay) Addr() string { return r.ln.LocalAddr().String() }

func (r *udpRelay) Blackhole() { r.dropped.Store(true) }

func (r *udpRelay) fromClients() {
	buf := make([]byte, 65535)
	for {
		n, from, err := r.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if r.dropped.Load() {
			continue
		}
		r.mu.Lock()
		up := r.peers[from.String()]
		if up == nil {
			if up, err = net.DialUDP("udp", nil, r.target); err != nil {
				r.mu.Unlock()
				continue
			}
			r.peers[from.String()] = up
			r.wg.Go(func() { r.toClient(up, from) })
		}
		r.mu.Unlock()
		up.Write(buf[:n])
	}
}

func (r *udpRelay) toClient(up *net.UDPConn, client *net.UDPAddr) {
	buf := make([]byte, 65535)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		if !r.dropped.Load() {
			r.ln.WriteToUDP(buf[:n], client)
		}
	}
}

// TestQUICFailoverWhenNodeDies: a QUIC session whose node dies without a
// word (no CONNECTION_CLOSE: UDP brings no reset) moves to the next node
// within 3 s, found dead by keepalives, as a WebSocket session does when
// its TCP connection resets.
func TestQUICFailoverWhenNodeDies(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	roots := x509.NewCertPool()
	a, b := startQUICNode(t, url, roots), startQUICNode(t, url, roots)
	relay := startUDPRelay(t, a.QUICAddr())
	t.Cleanup(client.CloseConnections)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, url, "acme", "a1",
		client.WithGateway("quic://"+relay.Addr()+",quic://"+b.QUICAddr()),
		client.WithRootCAs(roots),
		client.WithProtocolVersion("2025-11-25"))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	echo := func(ctx context.Context) error {
		_, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
		return err
	}
	if err := echo(ctx); err != nil {
		t.Fatalf("before the node died: %v", err)
	}
	if a.Sessions() != 1 || b.Sessions() != 0 {
		t.Fatalf("sessions a=%d b=%d, want the session on a", a.Sessions(), b.Sessions())
	}

	relay.Blackhole()
	died := time.Now()
	// Calls sent while the loss is undetected fail with CodeNodeLost once
	// it is; the caller retries them.
	for {
		callCtx, cancelCall := context.WithTimeout(ctx, 10*time.Second)
		err := echo(callCtx)
		cancelCall()
		if err == nil {
			break
		}
		if time.Since(died) > 15*time.Second {
			t.Fatalf("no call succeeded %v after the node died: %v", time.Since(died), err)
		}
	}
	took := time.Since(died)
	t.Logf("QUIC session moved %v after its node died", took.Round(time.Millisecond))
	if limit := 3 * time.Second; took > limit {
		t.Fatalf("QUIC session moved %v after its node died, want within %v", took, limit)
	}
	if b.Sessions() != 1 {
		t.Fatalf("node b carries %d sessions, want 1", b.Sessions())
	}
}
