package client

import (
	"context"
	"crypto/x509"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mcpgw/mcpgw/internal/certtest"
	"github.com/mcpgw/mcpgw/transport"
)

// startQUICServer accepts connections and hands them to the test.
func startQUICServer(t *testing.T) (string, *x509.CertPool, <-chan *quic.Conn) {
	t.Helper()
	cert, pool := certtest.Loopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := transport.ListenQUIC(ctx, "127.0.0.1:0", cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan *quic.Conn, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			conns <- c
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		ln.Close()
	})
	return ln.Addr().String(), pool, conns
}

func TestQUICPoolSharesAndRedials(t *testing.T) {
	addr, roots, accepted := startQUICServer(t)
	p := &quicPool{conns: make(map[poolKey]*pooledConn)}
	key := poolKey{addr: addr, roots: roots}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Concurrent sessions share one handshake.
	got := make([]*quic.Conn, 20)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			c, err := p.get(ctx, key)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		})
	}
	wg.Wait()
	for i, c := range got {
		if c != got[0] {
			t.Fatalf("get %d returned another connection", i)
		}
	}
	first := got[0]
	t.Cleanup(func() { first.CloseWithError(0, "") })
	server := <-accepted

	st, err := p.openStream(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	// The gateway goes away: the next session dials a new connection.
	server.CloseWithError(transport.ConnCodeShutdown, "restarting")
	select {
	case <-first.Context().Done():
	case <-ctx.Done():
		t.Fatal("client did not see the connection close")
	}
	second, err := p.get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.CloseWithError(0, "") })
	if second == first || second.Context().Err() != nil {
		t.Fatal("pool returned the closed connection")
	}
	select {
	case <-accepted:
	case <-ctx.Done():
		t.Fatal("server saw no second connection")
	}
	p.mu.Lock()
	entries := len(p.conns)
	p.mu.Unlock()
	if entries != 1 {
		t.Fatalf("pool holds %d entries, want 1", entries)
	}

	// A different trust setting is a different connection.
	other, err := p.get(ctx, poolKey{addr: addr, roots: roots.Clone()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.CloseWithError(0, "") })
	if other == second {
		t.Fatal("connections with different roots were shared")
	}
}

func TestQUICPoolCloseAll(t *testing.T) {
	addr, roots, accepted := startQUICServer(t)
	p := &quicPool{conns: make(map[poolKey]*pooledConn)}
	key := poolKey{addr: addr, roots: roots}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.get(ctx, key); err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	p.closeAll()
	select {
	case <-server.Context().Done():
	case <-ctx.Done():
		t.Fatal("gateway side did not learn the connection closed")
	}
	// The pool forgets the closed connection and dials anew.
	c, err := p.get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	if c.Context().Err() != nil {
		t.Fatal("pool returned a closed connection")
	}
}

func TestFramedOpenerAddresses(t *testing.T) {
	tests := []struct {
		addr    string
		framed  bool
		wantErr string
	}{
		{"quic://127.0.0.1:7421", true, ""},
		{"quic://[::1]:7421", true, ""},
		{"quic://gw.internal", true, "is not quic://host:port"},
		{"quic://gw.internal:7421/mcp", true, "is not quic://host:port"},
		{"unix:///run/mcpgw.sock", true, ""},
		{"unix://", true, "names no socket"},
		{"ws://127.0.0.1:7420", false, ""},
		{"127.0.0.1:7420", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			open, framed, err := framedOpener(tc.addr, "https://a.example/mcp", "o", "a", options{})
			if framed != tc.framed {
				t.Fatalf("framed = %v, want %v", framed, tc.framed)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if framed && open == nil {
				t.Fatal("no opener for a framed address")
			}
		})
	}
}
