package transport

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// echoServer is a StreamableServer whose sessions answer every call with an
// empty result.
func echoServer(t *testing.T) (*StreamableServer, string) {
	t.Helper()
	s := NewStreamableServer(func(*http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
		return func(*http.Request) error { return nil }, func(c mcp.Connection) {
			for {
				msg, err := c.Read(context.Background())
				if err != nil {
					return
				}
				if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
					c.Write(context.Background(), &jsonrpc.Response{ID: req.ID, Result: []byte(`{}`)})
				}
			}
		}, nil
	}, nil)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		ts.Close()
		s.Close()
	})
	return s, ts.URL
}

// TestStreamableClientLeavesMidResponse has clients hang up as soon as they
// have their answer, so request handlers return while the session may
// still be writing to their stream. Run with -race.
func TestStreamableClientLeavesMidResponse(t *testing.T) {
	_, url := echoServer(t)
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		got := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				got = true
				break
			}
		}
		cancel()
		resp.Body.Close()
		if !got {
			t.Fatalf("request %d: no response event", i)
		}
	}
}
