package transport

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// wsPair returns the gateway side of a WebSocket MCP connection, accepted by
// a loopback server, and the raw peer that dialed it.
func wsPair(t testing.TB, opts WebSocketOptions) (*wsConn, *websocket.Conn) {
	t.Helper()
	accepted := make(chan mcp.Connection, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := AcceptWebSocket(w, r, opts)
		if err != nil {
			return
		}
		accepted <- c
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peer, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	peer.SetReadLimit(-1)
	var conn *wsConn
	select {
	case c := <-accepted:
		conn = c.(*wsConn)
	case <-ctx.Done():
		t.Fatal("server never accepted the WebSocket")
	}
	t.Cleanup(func() {
		peer.CloseNow()
		conn.Close()
	})
	return conn, peer
}

// send writes one frame from the peer and reads it on the gateway side.
func send(t testing.TB, conn *wsConn, peer *websocket.Conn, typ websocket.MessageType, data []byte) (jsonrpc.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	werr := make(chan error, 1)
	go func() { werr <- peer.Write(ctx, typ, data) }()
	msg, err := conn.Read(ctx)
	if e := <-werr; e != nil {
		t.Fatalf("peer write: %v", e)
	}
	return msg, err
}

func TestWebSocketRead(t *testing.T) {
	const limit = 1024
	conn, peer := wsPair(t, WebSocketOptions{MaxMessageBytes: limit, PingInterval: -1})
	ping := []byte(`{"jsonrpc":"2.0","id":7,"method":"ping"}`)
	exact := append(bytes.Repeat([]byte(" "), limit-len(ping)), ping...)

	tests := []struct {
		name    string
		typ     websocket.MessageType
		data    []byte
		code    int64  // 0: the message must decode
		message string // part of the MessageError's text
		id      any    // the MessageError's ID; nil for none
	}{
		{name: "request", typ: websocket.MessageText, data: ping},
		{name: "exactly the cap", typ: websocket.MessageText, data: exact},
		{name: "malformed JSON", typ: websocket.MessageText, data: []byte(`{"jsonrpc":"2.0","id":1,"method":`), code: jsonrpc.CodeParseError, message: "malformed JSON-RPC message"},
		{name: "not JSON-RPC 2.0", typ: websocket.MessageText, data: []byte(`{"id":1,"method":"ping"}`), code: jsonrpc.CodeParseError, message: "send one JSON-RPC 2.0 object per message"},
		{name: "empty frame", typ: websocket.MessageText, data: nil, code: jsonrpc.CodeParseError, message: "malformed JSON-RPC message"},
		{name: "binary frame", typ: websocket.MessageBinary, data: ping, code: jsonrpc.CodeInvalidRequest, message: "binary WebSocket frame refused", id: int64(7)},
		{name: "one byte over the cap", typ: websocket.MessageText, data: append([]byte(" "), exact...), code: jsonrpc.CodeInvalidRequest, message: "message larger than 1024 bytes refused", id: int64(7)},
		{name: "call over the cap", typ: websocket.MessageText, data: []byte(`{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"text":"` + strings.Repeat("x", 2*limit) + `"}}`),
			code: jsonrpc.CodeInvalidRequest, message: "message larger than 1024 bytes refused", id: "big"},
		{name: "far over the cap", typ: websocket.MessageText, data: bytes.Repeat([]byte("x"), 1<<20), code: jsonrpc.CodeInvalidRequest, message: "raise the message size limit"},
		{name: "binary over the cap", typ: websocket.MessageBinary, data: bytes.Repeat([]byte("x"), 2*limit), code: jsonrpc.CodeInvalidRequest, message: "message larger than 1024 bytes refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := send(t, conn, peer, tc.typ, tc.data)
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if got, want := msg.(*jsonrpc.Request).Method, "ping"; got != want {
					t.Fatalf("method=%q, want %q", got, want)
				}
				return
			}
			me, ok := AsMessageError(err)
			if !ok {
				t.Fatalf("Read error %v (%T), want a *MessageError", err, err)
			}
			if got, want := me.Code, tc.code; got != want {
				t.Errorf("code=%d, want %d", got, want)
			}
			if !strings.Contains(me.Message, tc.message) {
				t.Errorf("message %q does not contain %q", me.Message, tc.message)
			}
			if got, want := me.ID.Raw(), tc.id; got != want {
				t.Errorf("MessageError ID=%v, want %v", got, want)
			}
			// The connection survives a bad message.
			msg, err = send(t, conn, peer, websocket.MessageText, ping)
			if err != nil {
				t.Fatalf("Read after the bad message: %v", err)
			}
			if got, want := msg.(*jsonrpc.Request).Method, "ping"; got != want {
				t.Fatalf("method after the bad message=%q, want %q", got, want)
			}
		})
	}
}

func TestWebSocketWriteNullID(t *testing.T) {
	conn, peer := wsPair(t, WebSocketOptions{PingInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Write(ctx, &jsonrpc.Response{Error: &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "bad"}}); err != nil {
		t.Fatal(err)
	}
	typ, data, err := peer.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := typ, websocket.MessageText; got != want {
		t.Errorf("frame type=%v, want %v", got, want)
	}
	if got, want := string(data), `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}`; got != want {
		t.Errorf("frame=%s, want %s", got, want)
	}
}

func TestWebSocketPeerClose(t *testing.T) {
	conn, peer := wsPair(t, WebSocketOptions{PingInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go peer.Close(websocket.StatusNormalClosure, "bye")
	_, err := conn.Read(ctx)
	if !errors.Is(err, mcp.ErrConnectionClosed) {
		t.Fatalf("Read after the peer closed: %v, want mcp.ErrConnectionClosed", err)
	}
}

func TestDialWebSocketRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteHTTPError(w, &HTTPError{Status: http.StatusNotFound, Code: -32085, Message: `no route for target "http://x/mcp"`})
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := DialWebSocket(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil, nil, WebSocketOptions{})
	var re *RefusalError
	if !errors.As(err, &re) {
		t.Fatalf("DialWebSocket error %v (%T), want a *RefusalError", err, err)
	}
	if got, want := re.Status, http.StatusNotFound; got != want {
		t.Errorf("status=%d, want %d", got, want)
	}
	if got, want := re.Code, int64(-32085); got != want {
		t.Errorf("code=%d, want %d", got, want)
	}
	if got, want := re.Message, `no route for target "http://x/mcp"`; got != want {
		t.Errorf("message=%q, want %q", got, want)
	}
	// A client that reads only the handshake's status and headers sees the
	// reason too.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get(ErrorHeader), `no route for target "http://x/mcp"`; got != want {
		t.Errorf("%s=%q, want %q", ErrorHeader, got, want)
	}
	if got, want := headerSafe("bad\r\nInjected: 1 é"), "bad??Injected: 1 ??"; got != want {
		t.Errorf("headerSafe=%q, want %q", got, want)
	}
}

// FuzzWebSocketRead feeds arbitrary frames to a real WebSocket connection:
// Read must return a message or a *MessageError and leave the connection
// usable, never panic or fail the connection.
func FuzzWebSocketRead(f *testing.F) {
	const limit = 256
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`), false)
	f.Add([]byte(`{"jsonrpc":"2.0","id":"x","result":{}}`), false)
	f.Add([]byte(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`), false)
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":`), false)
	f.Add([]byte(`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`), false)
	f.Add([]byte(`{"jsonrpc":"2.0","id":{},"method":"ping"}`), false)
	f.Add([]byte(`{"jsonrpc":"2.0","id":1e400,"method":"ping"}`), false)
	f.Add([]byte("\xff\xfe\x00"), false)
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`), true)
	f.Add(bytes.Repeat([]byte("a"), limit+1), false)
	f.Add([]byte{}, false)

	conn, peer := wsPair(f, WebSocketOptions{MaxMessageBytes: limit, PingInterval: -1})
	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		if len(data) > 16*limit {
			// Far over the cap takes the path of just over it (TestWebSocketRead
			// sends 1 MiB); huge inputs only slow the fuzzer down.
			return
		}
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		msg, err := send(t, conn, peer, typ, data)
		if err != nil {
			me, ok := AsMessageError(err)
			if !ok {
				t.Fatalf("Read error %v (%T), want a *MessageError", err, err)
			}
			if me.Code != jsonrpc.CodeParseError && me.Code != jsonrpc.CodeInvalidRequest {
				t.Fatalf("MessageError code %d, want parse error or invalid request", me.Code)
			}
			return
		}
		if binary || len(data) > limit {
			t.Fatalf("Read accepted a %d-byte frame (binary=%v) over a %d-byte cap", len(data), binary, limit)
		}
		if msg == nil {
			t.Fatal("Read returned neither a message nor an error")
		}
		// Whatever decodes must re-encode: the proxy forwards it.
		if _, err := encodeMessage(msg); err != nil {
			t.Fatalf("decoded %q but cannot re-encode it: %v", data, err)
		}
	})
}

// TestWebSocketWriteCancelKeepsConnection cancels writes while they run, as
// the proxy does when a call is answered or cancelled: the connection must
// survive, and the peer must see only whole messages.
func TestWebSocketWriteCancelKeepsConnection(t *testing.T) {
	conn, peer := wsPair(t, WebSocketOptions{PingInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	received := make(chan int, 1)
	go func() {
		n := 0
		defer func() { received <- n }()
		for {
			_, data, err := peer.Read(ctx)
			if err != nil {
				return
			}
			if string(data) == `{"jsonrpc":"2.0","method":"done"}` {
				return
			}
			if _, err := jsonrpc.DecodeMessage(data); err != nil {
				t.Errorf("peer got a broken message %q: %v", data, err)
				return
			}
			n++
		}
	}()
	ping := &jsonrpc.Request{Method: "notifications/ping", Params: []byte(`{"pad":"` + strings.Repeat("x", 4096) + `"}`)}
	sent := 0
	for i := 0; i < 300; i++ {
		wctx, wcancel := context.WithCancel(ctx)
		go wcancel()
		if conn.Write(wctx, ping) == nil {
			sent++
		}
		wcancel()
	}
	if err := conn.Write(ctx, &jsonrpc.Request{Method: "done"}); err != nil {
		t.Fatalf("Write after cancelled writes: %v", err)
	}
	if got := <-received; got != sent {
		t.Fatalf("peer received %d messages, Write reported %d sent", got, sent)
	}
}

// TestWebSocketKeepalive checks that the keepalive pings a reading peer
// again and again without a goroutine of its own, and stops when the
// connection closes.
func TestWebSocketKeepalive(t *testing.T) {
	accepted := make(chan mcp.Connection, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := AcceptWebSocket(w, r, WebSocketOptions{PingInterval: 10 * time.Millisecond}); err == nil {
			accepted <- c
		}
	}))
	t.Cleanup(srv.Close)
	var pings atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	peer, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
		Subprotocols:   []string{Subprotocol},
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.CloseNow()
	go func() { // pongs are sent while the peer reads
		for {
			if _, _, err := peer.Read(ctx); err != nil {
				return
			}
		}
	}()
	conn := (<-accepted).(*wsConn)
	go func() { // and the pinging side reads the pongs while it reads messages
		for {
			if _, err := conn.Read(ctx); err != nil {
				return
			}
		}
	}()
	for pings.Load() < 3 {
		if ctx.Err() != nil {
			t.Fatalf("%d pings in 20 s, want 3", pings.Load())
		}
		time.Sleep(time.Millisecond) // polling the count, not synchronising
	}
	conn.Close()
	conn.pingMu.Lock()
	closed := conn.pingClosed
	conn.pingMu.Unlock()
	if !closed {
		t.Fatal("keepalive still armed after Close")
	}
}
