package transport

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestStreamableStatelessNotificationsDelivered sends many stateless POSTs
// that carry only a notification. Each one is answered 202 and its one-POST
// session closed right away; the session's consumer must still read the
// notification before it sees the session end.
func TestStreamableStatelessNotificationsDelivered(t *testing.T) {
	const posts = 500
	var (
		mu       sync.Mutex
		received = make(map[string]bool)
		served   sync.WaitGroup
	)
	s := NewStreamableServer(func(*http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
		served.Add(1)
		return func(*http.Request) error { return nil }, func(c mcp.Connection) {
			defer served.Done()
			for {
				msg, err := c.Read(context.Background())
				if err != nil {
					return
				}
				if req, ok := msg.(*jsonrpc.Request); ok && !req.IsCall() {
					mu.Lock()
					received[string(req.Params)] = true
					mu.Unlock()
				}
			}
		}, nil
	}, nil)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		ts.Close()
		s.Close()
	})

	for i := range posts {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/message","params":{"n":%d}}`, i)
		req, err := http.NewRequest(http.MethodPost, ts.URL, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got, want := resp.StatusCode, http.StatusAccepted; got != want {
			t.Fatalf("POST %d status=%d, want %d", i, got, want)
		}
	}

	// Every session's consumer returns once it has seen the close; only then
	// is the count final.
	waited := make(chan struct{})
	go func() { served.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		t.Fatal("session consumers did not return within 20s of their sessions closing")
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := len(received), posts; got != want {
		t.Fatalf("consumers received %d of %d notifications, want all", got, want)
	}
}
