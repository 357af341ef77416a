package transport

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
	"github.com/mcpgw/mcpgw/internal/tcptest"
)

// goroutinesIn counts the goroutines whose stack holds frame.
func goroutinesIn(frame string) int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, frame) {
			n++
		}
	}
	return n
}

const (
	testInitialize  = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`
	testInitialized = `{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}`
)

// listChangedUpstream is a real go-sdk streamable HTTP server; adding a
// tool to it sends notifications/tools/list_changed on every session's
// standalone stream.
func listChangedUpstream(t *testing.T) (*mcp.Server, string) {
	t.Helper()
	srv := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	addEcho := func(name string) {
		srv.AddTool(&mcp.Tool{Name: name, InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	}
	addEcho("first")
	ts := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(ts.Close)
	return srv, ts.URL
}

// TestStandaloneStreamOnOwnConnection: the event stream a session holds
// for its life on a plain-HTTP upstream runs on a connection of its own,
// with no net/http transport goroutines, and still carries what the
// server sends; closing the session ends it.
func TestStandaloneStreamOnOwnConnection(t *testing.T) {
	srv, url := listChangedUpstream(t)
	client := NewHTTPClient()
	defer client.CloseIdleConnections()
	conn, err := Dial(context.Background(), Upstream{URL: url, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, testInitialize)
	roundTrip(t, conn, testInitialized) // returns once the stream is open
	// The POSTs' pooled connections go; the stream's would keep a
	// net/http read loop.
	client.CloseIdleConnections()
	clocktest.Poll(t, 10*time.Second, "no net/http transport goroutine while the stream is open", func() bool {
		return goroutinesIn("net/http.(*persistConn)") == 0
	})

	srv.AddTool(&mcp.Tool{Name: "second", InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msg, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read the server's notification: %v", err)
	}
	if req, ok := msg.(*jsonrpc.Request); !ok || req.Method != "notifications/tools/list_changed" {
		t.Fatalf("read %#v, want notifications/tools/list_changed", msg)
	}
	if err := conn.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	clocktest.Poll(t, 10*time.Second, "the stream's reader to end", func() bool {
		return goroutinesIn("(*streamableConn).standaloneLoop") == 0
	})
}

// TestRoundTripOwnConnEndsWithContext: a stream request whose context ends
// while the server has not answered returns the context's error, and
// leaves nothing open.
func TestRoundTripOwnConnEndsWithContext(t *testing.T) {
	addr, accepted := tcptest.Silent(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(withConnUse(ctx, useOwnConn), http.MethodGet, "http://"+addr+"/mcp", nil)
	done := make(chan error, 1)
	go func() {
		_, err := NewHTTPClient().Do(req)
		done <- err
	}()
	server := <-accepted
	defer server.Close()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("request = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the request outlived its context")
	}
	// The client closed its end.
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := server.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the client kept the connection open after its context ended")
			}
			break
		}
	}
}

// TestStreamableClientDelivers: with DeliverTo, answers and server
// messages go to the function, and the upstream forgetting the session
// reaches it once, as the error that ends the connection.
func TestStreamableClientDelivers(t *testing.T) {
	_, url := listChangedUpstream(t)
	conn, err := Dial(context.Background(), Upstream{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type item struct {
		msg jsonrpc.Message
		err error
	}
	got := make(chan item, 16)
	conn.(Deliverer).DeliverTo(func(msg jsonrpc.Message, err error) { got <- item{msg, err} })
	write := func(data string) {
		t.Helper()
		msg, err := jsonrpcx.DecodeMessage([]byte(data))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := conn.Write(ctx, msg); err != nil {
			t.Fatalf("write %s: %v", data, err)
		}
	}
	next := func() item {
		t.Helper()
		select {
		case it := <-got:
			return it
		case <-time.After(20 * time.Second):
			t.Fatal("nothing delivered")
		}
		return item{}
	}
	write(testInitialize)
	if it := next(); it.err != nil || it.msg.(*jsonrpc.Response).ID.Raw() != int64(1) {
		t.Fatalf("delivered %+v, want the initialize response", it)
	}
	write(testInitialized)

	// The server forgets the session: the next call's POST gets 404.
	del, _ := http.NewRequest(http.MethodDelete, url, nil)
	del.Header.Set(HeaderSessionID, conn.SessionID())
	resp, err := http.DefaultClient.Do(del)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	msg, _ := jsonrpcx.DecodeMessage([]byte(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := conn.Write(ctx, msg); err == nil || !strings.Contains(err.Error(), "upstream ended the session") {
		t.Fatalf("write after the session ended = %v, want it to say the upstream ended the session", err)
	}
	var ended []error
	for len(got) > 0 || len(ended) == 0 {
		if it := next(); it.err != nil {
			ended = append(ended, it.err)
		}
	}
	if len(ended) != 1 || !strings.Contains(ended[0].Error(), "upstream ended the session (HTTP 404") {
		t.Fatalf("delivered errors %v, want one saying the upstream ended the session", ended)
	}
}
