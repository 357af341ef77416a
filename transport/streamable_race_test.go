package transport

import (
	"bufio"
	"context"
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

// echoServer is a StreamableServer whose sessions answer every call with an
// empty result, after before (when set) has seen the call.
func echoServer(t *testing.T, before func(c mcp.Connection, call *jsonrpc.Request)) (*StreamableServer, string) {
	t.Helper()
	s := NewStreamableServer(func(*http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
		return func(*http.Request) error { return nil }, func(c mcp.Connection) {
			for {
				msg, err := c.Read(context.Background())
				if err != nil {
					return
				}
				if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
					if before != nil {
						before(c, req)
					}
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
	_, url := echoServer(t, nil)
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
			// A lone call answered at once comes as a JSON body.
			if strings.HasPrefix(sc.Text(), "data: ") || resp.Header.Get("Content-Type") == "application/json" && strings.Contains(sc.Text(), `"result"`) {
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

// TestPOSTAnswerForm: a POST's lone call answered before anything else
// gets its answer as one JSON response; a call with a notification before
// its answer, or whose answer is slow (past headerWait), gets an event
// stream whose headers come first.
func TestPOSTAnswerForm(t *testing.T) {
	release := make(chan struct{}) // the slow call's answer waits for it
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	_, url := echoServer(t, func(c mcp.Connection, call *jsonrpc.Request) {
		switch call.Method {
		case "slow":
			<-release
		case "chatty":
			c.Write(context.Background(), &jsonrpc.Request{Method: "notifications/message", Params: []byte(`{"level":"info","data":"x"}`)})
		}
	})
	// Registered after the server's cleanup, so it runs first: a failing
	// test does not leave the slow call holding the server's Close.
	t.Cleanup(unblock)
	post := func(method string) (*http.Response, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"`+method+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp, time.Since(start)
	}
	resp, _ := post("ping")
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || resp.ContentLength != int64(len(body)) || string(body) != `{"jsonrpc":"2.0","id":1,"result":{}}` {
		t.Fatalf("lone call answered at once: %s, length %d, body %q; want one JSON response", ct, resp.ContentLength, body)
	}
	resp, _ = post("chatty")
	body, _ = io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || strings.Count(string(body), "data: ") != 2 {
		t.Fatalf("call with a notification first: %s, body %q; want an event stream of two events", ct, body)
	}
	resp, headers := post("slow") // returns with the headers, the answer still held
	unblock()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || headers < headerWait {
		t.Fatalf("slow call: %s after %v; want event stream headers after headerWait (%v), before the answer", ct, headers, headerWait)
	}
	body, _ = io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `"result":{}`) {
		t.Fatalf("slow call's stream %q, want its answer", body)
	}
}
