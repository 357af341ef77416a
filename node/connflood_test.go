package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/connlimit"
	"github.com/mcpgw/mcpgw/transport"
)

// floodDialer dials from another loopback address: Linux routes all of
// 127/8 to the loopback interface, so each is a distinct remote address.
func floodDialer(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
}

// openIdle opens count TCP connections from ip to addr that never send.
func openIdle(t *testing.T, ip, addr string, count int) []net.Conn {
	t.Helper()
	d := floodDialer(ip)
	conns := make([]net.Conn, 0, count)
	for range count {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood dial from %s to %s: %v", ip, addr, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// waitClosed checks that the gateway closes every connection, reading
// whatever it sends until EOF (or a reset, for a refused one).
func waitClosed(t *testing.T, what string, conns []net.Conn) {
	t.Helper()
	var wg sync.WaitGroup
	var open atomic.Int32
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := open.Load(); n > 0 {
		t.Fatalf("%d of %d %s were still open after 20s: the gateway never closed them", n, len(conns), what)
	}
}

// TestConnectionFloodSparesSessions floods a node with idle connections
// from two addresses, far beyond its caps, and checks that a session open
// before the flood keeps calling without an error, that new sessions and
// admin calls from another address still get in, and that the idle
// connections the caps let in are closed once their timeouts pass.
func TestConnectionFloodSparesSessions(t *testing.T) {
	const (
		perIP     = 16
		idle      = 4 * time.Second
		rawFlood  = 150 // idle connections from 127.0.0.2 to the session listener
		keepAlive = perIP
		overflow  = 50 // connections from 127.0.0.3 beyond its keep-alive ones
		admFlood  = 100
	)
	n, route := gatewayTo(t, func(c *Config) {
		c.MaxConns = 64
		c.MaxConnsPerIP = perIP
		c.AdminMaxConns = 32
		c.IdleTimeout = idle
		c.ReadTimeout = idle
	})
	ctx := testContext(t, 60*time.Second)

	control, err := client.Connect(ctx, route.URL, "org1", "acct1", viaGateway(n)...)
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	var calls, failures atomic.Int64
	var firstErr atomic.Pointer[error]
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		for i := 0; loopCtx.Err() == nil; i++ {
			res, err := control.CallTool(loopCtx, callParams("echo", fmt.Sprint("call-", i)))
			if loopCtx.Err() != nil {
				return // the test is over; this call was cut short
			}
			if err == nil && (res.IsError || len(res.Content) == 0) {
				err = fmt.Errorf("call %d: unexpected result %+v", i, res)
			}
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				continue
			}
			calls.Add(1)
		}
	}()
	waitFor(t, "the control session's first calls", func() bool { return calls.Load() >= 5 })

	raw := openIdle(t, "127.0.0.2", n.HTTPAddr(), rawFlood)
	adm := openIdle(t, "127.0.0.2", n.AdminAddr(), admFlood)
	// Keep-alive connections that each made one cheap request, then idle.
	kept := openIdle(t, "127.0.0.3", n.HTTPAddr(), keepAlive)
	for i, c := range kept {
		fmt.Fprintf(c, "GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("keep-alive request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Close {
			t.Fatalf("keep-alive request %d: HTTP %d, close=%v; want 404 on a kept connection", i, resp.StatusCode, resp.Close)
		}
	}
	over := openIdle(t, "127.0.0.3", n.HTTPAddr(), overflow)

	refused := func(listener string) float64 {
		return counterValue(n.metrics.connsRefusedTotal.WithLabelValues(listener, string(connlimit.ReasonPerAddrCap)))
	}
	wantSession, wantAdmin := float64(rawFlood-perIP+overflow), float64(admFlood-perIP)
	waitFor(t, "the flood's refusals", func() bool { return refused("session") == wantSession && refused("admin") == wantAdmin })
	if got, want := n.lns.sessions.Open(), 1+perIP+keepAlive; got != want {
		t.Fatalf("session listener holds %d connections under the flood, want %d (the control session and %d per flooding address)", got, want, perIP)
	}
	if got := refused("session"); got != wantSession {
		t.Fatalf("session listener refused %v connections at the per-address cap, want %v", got, wantSession)
	}

	// The control session goes on calling under the flood...
	base := calls.Load()
	waitFor(t, "calls under the flood", func() bool { return calls.Load() >= base+20 })
	// ...a new authenticated session opens and calls...
	fresh, err := client.Connect(ctx, route.URL, "org1", "acct1", viaGateway(n)...)
	if err != nil {
		t.Fatalf("new session under the flood: %v", err)
	}
	if _, err := fresh.CallTool(ctx, callParams("echo", "fresh")); err != nil {
		t.Fatalf("call on a new session under the flood: %v", err)
	}
	fresh.Close()
	// ...and so does the admin API.
	if tok := issueToken(t, n, "under-flood", []string{"*"}, "1h"); tok.Token == "" {
		t.Fatal("no token issued under the flood")
	}

	// Every idle connection is closed once its timeout passes, and refused
	// ones at once.
	waitClosed(t, "idle session connections", raw)
	waitClosed(t, "idle keep-alive connections", kept)
	waitClosed(t, "refused connections", over)
	waitClosed(t, "idle admin connections", adm)
	waitFor(t, "the flood's slots to be freed", func() bool { return n.lns.sessions.Open() == 1 })

	stop()
	<-done
	if f := failures.Load(); f != 0 {
		t.Fatalf("control session: %d of %d calls failed under the flood; first: %v", f, f+calls.Load(), *firstErr.Load())
	}
	t.Logf("control session: %d calls, 0 errors; refused at the per-address cap: %v session, %v admin connections",
		calls.Load(), refused("session"), refused("admin"))
}

// TestConnectionCapAnswers503 checks what a plain HTTP client sees at the
// listener's cap: an HTTP 503 that names the flag, not a silent reset.
func TestConnectionCapAnswers503(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxConns = 2 })
	openIdle(t, "127.0.0.2", n.HTTPAddr(), 1)
	openIdle(t, "127.0.0.3", n.HTTPAddr(), 1)
	waitFor(t, "both slots taken", func() bool { return n.lns.sessions.Open() == 2 })

	c, err := floodDialer("127.0.0.4").Dial("tcp", n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the refusal: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "--max-conns 2") || !strings.Contains(string(body), "-32087") {
		t.Fatalf("at the cap: HTTP %d %s; want 503 naming --max-conns 2 with code -32087", resp.StatusCode, body)
	}
	// The refusal is counted once the connection is closed.
	atCap := n.metrics.connsRefusedTotal.WithLabelValues("session", string(connlimit.ReasonListenerCap))
	waitFor(t, "the refusal to be counted", func() bool { return counterValue(atCap) == 1 })
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !(errors.As(err, &ne) && !ne.Timeout()) {
		t.Fatalf("after the refusal: %v, want the connection closed", err)
	}
}

// TestQUICConnectionsPerIPCap checks that QUIC connections count against
// the per-address cap too: one over it is closed with ConnCodeRefused and a
// reason naming the flag.
func TestQUICConnectionsPerIPCap(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxConnsPerIP = 2 })
	ctx := testContext(t, 30*time.Second)
	tlsConf := &tls.Config{RootCAs: nodeRoots(t, n)}
	for range 2 {
		c, err := transport.DialQUIC(ctx, n.QUICAddr(), tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseWithError(transport.ConnCodeClosed, "")
	}
	waitFor(t, "two QUIC connections served", func() bool { return n.lns.quic.Open() == 2 })
	third, err := transport.DialQUIC(ctx, n.QUICAddr(), tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-third.Context().Done():
	case <-ctx.Done():
		t.Fatal("a QUIC connection over the per-address cap was not closed")
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(third.Context()); !errors.As(err, &appErr) || appErr.ErrorCode != transport.ConnCodeRefused || !strings.Contains(appErr.ErrorMessage, "--max-conns-per-ip 2") {
		t.Fatalf("third QUIC connection ended with %v, want code %d naming --max-conns-per-ip 2", err, transport.ConnCodeRefused)
	}
}
