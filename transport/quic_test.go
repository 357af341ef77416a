package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/quic-go/quic-go"

	"github.com/mcpgw/mcpgw/internal/certtest"
)

// quicPair returns the two ends of one QUIC stream on loopback: the one the
// client opened and the one the server accepted.
func quicPair(t *testing.T) (client, server *quic.Stream) {
	t.Helper()
	cert, roots := certtest.Loopback(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := ListenQUIC(ctx, "127.0.0.1:0", cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cc, err := DialQUIC(ctx, ln.Addr().String(), &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.CloseWithError(ConnCodeClosed, "") })
	if got := cc.ConnectionState().TLS.NegotiatedProtocol; got != ALPN {
		t.Fatalf("ALPN = %q, want %q", got, ALPN)
	}
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.CloseWithError(ConnCodeClosed, "") })
	client, err = cc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("\n")); err != nil { // streams appear to the peer with data
		t.Fatal(err)
	}
	server, err = sc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

func TestQUICStreamReset(t *testing.T) {
	client, server := quicPair(t)
	c := NewLineConn(QUICStream(server), LineOptions{})
	defer c.Close()
	client.CancelRead(9)
	client.CancelWrite(9)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Read(ctx); !errors.Is(err, mcp.ErrConnectionClosed) {
		t.Fatalf("Read after reset = %v, want mcp.ErrConnectionClosed", err)
	}
}

// TestQUICStreamCloseAbortsStuckWrite checks Close returns, and unblocks a
// Write, when the peer stopped reading and flow control holds the Write.
func TestQUICStreamCloseAbortsStuckWrite(t *testing.T) {
	_, server := quicPair(t) // the client end never reads
	s := QUICStream(server)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(make([]byte, 32<<20)) // far over any flow-control window
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("a 32 MiB write to a peer that does not read returned early: %v", err)
	case <-time.After(100 * time.Millisecond): // the write is stuck, as intended
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung behind a stuck Write")
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("stuck Write succeeded after Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left the Write stuck")
	}
}

// TestQUICStatelessResetAfterCrash checks that a listener restarted with
// the same reset key resets connections its predecessor lost, so clients
// notice at once instead of after their idle timeout.
func TestQUICStatelessResetAfterCrash(t *testing.T) {
	cert, roots := certtest.Loopback(t)
	key := &quic.StatelessResetKey{1, 2, 3}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := ListenQUIC(ctx, "127.0.0.1:0", cert, &QUICOptions{StatelessResetKey: key})
	if err != nil {
		t.Fatal(err)
	}
	addr := first.Addr().String()
	cc, err := DialQUIC(ctx, addr, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseWithError(ConnCodeClosed, "")
	if _, err := first.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	first.Close() // drops every connection without telling the peer, as a crash would

	second, err := ListenQUIC(ctx, addr, cert, &QUICOptions{StatelessResetKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	st, err := cc.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write(make([]byte, 200)) // any packet from the client draws the reset
	select {
	case <-cc.Context().Done():
		var reset *quic.StatelessResetError
		if err := context.Cause(cc.Context()); !errors.As(err, &reset) {
			t.Fatalf("connection ended with %v, want a stateless reset", err)
		}
	case <-ctx.Done():
		t.Fatal("client did not learn its connection was lost")
	}
}
