package adminapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/tcptest"
)

// serve answers every request with status on a real loopback listener at
// addr ("" for a new port) and counts them.
func serve(t *testing.T, addr string, status int, hits *atomic.Int32) string {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(status)
		w.Write([]byte(`{"error":"answered"}`))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestClientFailover: a node that refuses connections is skipped for the
// next; one that answers with an error is not (the request reached it).
func TestClientFailover(t *testing.T) {
	var okHits, errHits atomic.Int32
	ok := serve(t, "", http.StatusOK, &okHits)
	down := tcptest.FreeAddr(t)
	a := NewClient(down+","+ok, "tok", nil)
	if err := a.Do(context.Background(), http.MethodGet, "/v1/routes", nil, nil); err != nil {
		t.Fatalf("Do with the first address down: %v", err)
	}
	if got, want := a.Base(), "http://"+ok; got != want {
		t.Fatalf("Base()=%q after failover, want %q", got, want)
	}

	failing := serve(t, "", http.StatusInternalServerError, &errHits)
	b := NewClient(failing+","+ok, "tok", nil)
	before := okHits.Load()
	err := b.Do(context.Background(), http.MethodPost, "/v1/routes", map[string]string{"name": "x"}, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusInternalServerError || se.Message != "answered" {
		t.Fatalf("Do against a node answering 500: %v, want its StatusError", err)
	}
	if okHits.Load() != before {
		t.Fatal("a request a node answered was sent to another node too")
	}
}

// TestClientWaitsForStartingNode: with StartWait, a request to a node that
// refuses connections waits, calling Waiting once, until it listens.
func TestClientWaitsForStartingNode(t *testing.T) {
	addr := tcptest.FreeAddr(t)
	var waits atomic.Int32
	started := make(chan struct{})
	var hits atomic.Int32
	a := NewClient(addr, "tok", &ClientOptions{StartWait: 20 * time.Second, Waiting: func(base string) {
		if waits.Add(1) == 1 {
			close(started)
		}
	}})
	done := make(chan error, 1)
	go func() { done <- a.Do(context.Background(), http.MethodGet, "/v1/routes", nil, nil) }()
	<-started
	serve(t, addr, http.StatusOK, &hits)
	if err := <-done; err != nil {
		t.Fatalf("Do: %v", err)
	}
	if got := waits.Load(); got != 1 {
		t.Fatalf("Waiting called %d times, want 1", got)
	}

	// Without StartWait, it fails at once, naming the address once.
	down := tcptest.FreeAddr(t)
	err := NewClient(down, "tok", nil).Do(context.Background(), http.MethodGet, "/v1/routes", nil, nil)
	want := "admin API unreachable at http://" + down + ": connect: connection refused (is `mcpgw serve` running? set --admin or MCPGW_ADMIN)"
	if err == nil || err.Error() != want {
		t.Fatalf("Do against a closed port: %v, want %q", err, want)
	}
	if strings.Count(err.Error(), down) != 1 {
		t.Fatalf("the address appears %d times in %q", strings.Count(err.Error(), down), err)
	}
}
