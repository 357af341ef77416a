package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/clocktest"
)

// keptServer is a real HTTP server counting the connections it accepts.
func keptServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, &conns
}

// keptPOST sends body to url on a kept connection and returns the answer's
// body.
func keptPOST(t *testing.T, client *http.Client, ctx context.Context, url, body string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(withConnUse(ctx, useKeptConn), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestKeptConnsReused: POSTs one after another share one connection; one
// the server closed while idle is noticed, and the next POST goes on a new
// connection and succeeds.
func TestKeptConnsReused(t *testing.T) {
	ts, conns := keptServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(append([]byte("got "), b...))
	})
	client := NewHTTPClient()
	defer client.CloseIdleConnections()
	for i := 0; i < 5; i++ {
		if got, err := keptPOST(t, client, context.Background(), ts.URL, "x"); err != nil || got != "got x" {
			t.Fatalf("POST %d = %q, %v", i, got, err)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Fatalf("5 sequential POSTs opened %d connections, want 1", got)
	}
	// The server closes its idle connection, as Node's do after 5 s.
	ts.CloseClientConnections()
	if got, err := keptPOST(t, client, context.Background(), ts.URL, "y"); err != nil || got != "got y" {
		t.Fatalf("POST after the server closed the idle connection = %q, %v", got, err)
	}
	if got := conns.Load(); got != 2 {
		t.Fatalf("%d connections after the server closed one, want 2", got)
	}
}

// TestKeptConnsNotReusedUnfinished: a connection whose answer was not read
// to its end, or that the server asked to close, is not used again.
func TestKeptConnsNotReusedUnfinished(t *testing.T) {
	ts, conns := keptServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		if r.URL.Path == "/long" {
			w.Write([]byte(strings.Repeat("x", 256<<10)))
			return
		}
		w.Write([]byte("ok"))
	})
	client := NewHTTPClient()
	defer client.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(withConnUse(context.Background(), useKeptConn), http.MethodPost, ts.URL+"/long", strings.NewReader("x"))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close() // most of the answer unread
	if _, err := keptPOST(t, client, context.Background(), ts.URL+"/close", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := keptPOST(t, client, context.Background(), ts.URL, "x"); err != nil {
		t.Fatal(err)
	}
	if got := conns.Load(); got != 3 {
		t.Fatalf("%d connections, want 3 (one per POST: the first left unread, the second closed by the server)", got)
	}
}

// TestKeptConnsBoundHeaders: an upstream that sends headers without end
// gets an error once they pass the bound, not the gateway's memory.
func TestKeptConnsBoundHeaders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		go io.Copy(io.Discard, c)
		w := bufio.NewWriter(c)
		w.WriteString("HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for {
			if _, err := w.WriteString(line); err != nil {
				return
			}
			if w.Flush() != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := NewHTTPClient()
	defer client.CloseIdleConnections()
	if _, err := keptPOST(t, client, ctx, "http://"+ln.Addr().String(), "x"); !errors.Is(err, errHeadersTooLarge) {
		t.Fatalf("POST to an endless header = %v, want %v", err, errHeadersTooLarge)
	}
	ln.Close()
	<-served
}

// TestKeptConnsContextEnds: a call whose context ends while its answer is
// awaited returns the context's error, and its connection is not kept.
func TestKeptConnsContextEnds(t *testing.T) {
	release := make(chan struct{})
	ts, conns := keptServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("ok"))
	})
	defer close(release)
	client := NewHTTPClient()
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := keptPOST(t, client, ctx, ts.URL+"/slow", "x")
		errc <- err
	}()
	clocktest.Poll(t, 20*time.Second, "the POST's connection to open", func() bool { return conns.Load() > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("POST whose context ended = %v, want context.Canceled", err)
	}
	if _, err := keptPOST(t, client, context.Background(), ts.URL, "x"); err != nil {
		t.Fatal(err)
	}
	if got := conns.Load(); got != 2 {
		t.Fatalf("%d connections, want 2 (the cancelled call's is not kept)", got)
	}
}

// TestKeptConnsNoDesync: bytes an upstream sends past the end of an
// answer are never read as the next call's answer: the connection they
// came on is not used again.
func TestKeptConnsNoDesync(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					// The first connection smuggles a second answer after
					// the first one.
					answer := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nc%03d", n)
					if n == 1 {
						answer += "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
					}
					if _, err := io.WriteString(c, answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	client := NewHTTPClient()
	defer client.CloseIdleConnections()
	url := "http://" + ln.Addr().String()
	for i, want := range []string{"c001", "c002"} {
		got, err := keptPOST(t, client, context.Background(), url, "x")
		if err != nil || got != want {
			t.Fatalf("POST %d = %q, %v; want %q", i, got, err, want)
		}
	}
}
