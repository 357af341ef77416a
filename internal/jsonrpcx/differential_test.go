package jsonrpcx_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// gatewayVerdict is what the gateway reads from one client message, the
// way node and transport read it: the strict envelope, then params.name of
// tools/call and params.requestId of notifications/cancelled.
type gatewayVerdict struct {
	refused bool
	method  string
	id      jsonrpc.ID
	call    bool
	tool    string
	cancel  jsonrpc.ID // the call a cancellation abandons; invalid for none
}

func readAsGateway(data []byte) gatewayVerdict {
	msg, err := jsonrpcx.DecodeMessage(data)
	if err != nil {
		return gatewayVerdict{refused: true}
	}
	req, ok := msg.(*jsonrpc.Request)
	if !ok {
		return gatewayVerdict{id: msg.(*jsonrpc.Response).ID}
	}
	if req.Method == "" { // transport refuses it: it cannot be re-encoded
		return gatewayVerdict{refused: true}
	}
	v := gatewayVerdict{method: req.Method, id: req.ID, call: req.IsCall()}
	switch {
	case req.Method == "tools/call" && req.IsCall():
		name, ok, err := jsonrpcx.ToolCallName(req.Params)
		if err != nil || !ok || name == "" {
			return gatewayVerdict{refused: true}
		}
		v.tool = name
	case req.Method == "notifications/cancelled" && !req.IsCall():
		id, _, err := jsonrpcx.CancelledRequestID(req.Params)
		if err != nil {
			return gatewayVerdict{refused: true}
		}
		v.cancel = id
	}
	return v
}

// action is what the server's receiving middleware saw: a request the
// server acted on, with the params it decoded.
type action struct {
	method string
	tool   string     // CallToolParamsRaw.Name
	cancel jsonrpc.ID // MakeID(CancelledParams.RequestID), what the SDK cancels
}

// bytesConn is a server-side mcp.Connection fed raw bytes. It decodes them
// with jsonrpc.DecodeMessage, as every go-sdk transport does (stdio, the
// streamable and SSE handlers, the in-memory transport), so the server
// below acts on exactly what it would act on from a wire. Bytes the SDK
// cannot decode are dropped here; its transports answer them with an error
// and never hand them to the server.
type bytesConn struct {
	in     chan []byte
	out    chan jsonrpc.Message
	closed chan struct{}
	once   sync.Once
}

func (c *bytesConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		select {
		case data := <-c.in:
			msg, err := jsonrpc.DecodeMessage(data)
			if err != nil {
				continue
			}
			return msg, nil
		case <-c.closed:
			return nil, mcp.ErrConnectionClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *bytesConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	select {
	case c.out <- msg:
		return nil
	case <-c.closed:
		return mcp.ErrConnectionClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *bytesConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *bytesConn) SessionID() string { return "" }

type bytesTransport struct{ conn *bytesConn }

func (t bytesTransport) Connect(context.Context) (mcp.Connection, error) { return t.conn, nil }

var errRecorded = errors.New("recorded; not run")

// sdkServer is a real go-sdk server, initialized, that records what it acts
// on.
type sdkServer struct {
	conn    *bytesConn
	acted   chan action
	session *mcp.ServerSession
	n       int // sentinel counter
}

func startSDKServer(tb testing.TB) *sdkServer {
	tb.Helper()
	s := &sdkServer{
		conn:  &bytesConn{in: make(chan []byte), out: make(chan jsonrpc.Message, 64), closed: make(chan struct{})},
		acted: make(chan action, 64),
	}
	srv := mcp.NewServer(&mcp.Implementation{Name: "differential", Version: "1"}, nil)
	for _, name := range []string{"echo", "delete_repo"} {
		srv.AddTool(&mcp.Tool{Name: name, InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	}
	srv.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			a := action{method: method}
			switch p := req.GetParams().(type) {
			case *mcp.CallToolParamsRaw:
				a.tool = p.Name
			case *mcp.CancelledParams:
				a.cancel, _ = jsonrpc.MakeID(p.RequestID)
			}
			switch method {
			case "initialize", "notifications/initialized", "ping":
				// Run for real: the session must be initialized, and the
				// sentinel ping answered.
				if method != "ping" {
					s.acted <- a
				}
				return next(ctx, method, req)
			}
			// What the server would act on is decided by now: the handler
			// gets these very params. Not running it keeps every call
			// quick (subscriptions/listen, say, would wait for a
			// cancellation), so each one is answered before the next.
			s.acted <- a
			return nil, errRecorded
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	ss, err := srv.Connect(ctx, bytesTransport{s.conn}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s.session = ss
	tb.Cleanup(func() { ss.Close() })
	s.send(tb, []byte(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}`))
	s.await(tb, mustID("init"))
	s.actOn(tb, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	return s
}

func mustID(v any) jsonrpc.ID {
	id, err := jsonrpc.MakeID(v)
	if err != nil {
		panic(err)
	}
	return id
}

func (s *sdkServer) send(tb testing.TB, data []byte) {
	tb.Helper()
	select {
	case s.conn.in <- data:
	case <-time.After(10 * time.Second):
		tb.Fatalf("server stopped reading")
	}
}

// await waits for the response to id, dropping other messages.
func (s *sdkServer) await(tb testing.TB, id jsonrpc.ID) {
	tb.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-s.conn.out:
			if r, ok := m.(*jsonrpc.Response); ok && r.ID == id {
				return
			}
		case <-deadline:
			tb.Fatalf("no response to %v from the server", id.Raw())
		}
	}
}

func (s *sdkServer) drain() []action {
	var out []action
	for {
		select {
		case a := <-s.acted:
			out = append(out, a)
		default:
			return out
		}
	}
}

// actOn feeds data to the server and returns what it acted on. A ping with
// a fresh id follows data: notifications are handled in order before it,
// and a call from data is waited for by its own response.
func (s *sdkServer) actOn(tb testing.TB, data []byte) []action {
	tb.Helper()
	var callID jsonrpc.ID
	if msg, err := jsonrpc.DecodeMessage(data); err == nil {
		if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
			callID = req.ID
		}
	}
	s.n++
	sentinel := mustID(fmt.Sprintf("\x00sentinel-%d", s.n))
	s.send(tb, data)
	s.send(tb, []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":"\u0000sentinel-%d","method":"ping"}`, s.n)))
	deadline := time.After(10 * time.Second)
	for gotCall, gotSentinel := !callID.IsValid(), false; !gotCall || !gotSentinel; {
		select {
		case m := <-s.conn.out:
			if r, ok := m.(*jsonrpc.Response); ok {
				gotCall = gotCall || r.ID == callID
				gotSentinel = gotSentinel || r.ID == sentinel
			}
		case <-deadline:
			tb.Fatalf("server did not answer after %q", data)
		}
	}
	return s.drain()
}

// FuzzStrictDecodeDifferential feeds arbitrary message bytes to the
// gateway's decoder and to a real go-sdk server. Whenever the server acts on
// a message, the gateway must either refuse it or have read the same
// method, id, tool name and cancelled request id; and the message the
// gateway forwards (re-encoded) must read the same as what it decided on.
func FuzzStrictDecodeDifferential(f *testing.F) {
	for _, seed := range differentialSeeds {
		f.Add([]byte(seed))
	}
	srv := startSDKServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		gw := readAsGateway(data)
		acted := srv.actOn(t, data)
		if gw.refused {
			return
		}
		for _, a := range acted {
			if a.method != gw.method {
				t.Fatalf("%q: server acted on method %q, gateway read %q", data, a.method, gw.method)
			}
			if a.tool != gw.tool {
				t.Fatalf("%q: server ran tool %q, gateway checked %q", data, a.tool, gw.tool)
			}
			if a.cancel != gw.cancel {
				t.Fatalf("%q: server cancelled %v, gateway abandoned %v", data, a.cancel.Raw(), gw.cancel.Raw())
			}
		}
		if len(acted) > 1 {
			t.Fatalf("%q: server acted %d times on one message", data, len(acted))
		}
		sdkMsg, err := jsonrpc.DecodeMessage(data)
		if err != nil {
			t.Fatalf("%q: gateway accepted what the SDK cannot decode: %v", data, err)
		}
		switch m := sdkMsg.(type) {
		case *jsonrpc.Request:
			if m.Method != gw.method || m.ID != gw.id {
				t.Fatalf("%q: SDK read %q id %v, gateway %q id %v", data, m.Method, m.ID.Raw(), gw.method, gw.id.Raw())
			}
		case *jsonrpc.Response:
			if gw.method != "" || m.ID != gw.id {
				t.Fatalf("%q: SDK read a response to %v, gateway %q id %v", data, m.ID.Raw(), gw.method, gw.id.Raw())
			}
		}
		// The gateway forwards its decoded message re-encoded: that must
		// read the same again.
		msg, _ := jsonrpcx.DecodeMessage(data)
		wire, err := jsonrpc.EncodeMessage(msg)
		if err != nil {
			t.Fatalf("%q: accepted message does not re-encode: %v", data, err)
		}
		if again := readAsGateway(wire); again != gw {
			t.Fatalf("%q: forwarded as %q, which reads %+v, not %+v", data, wire, again, gw)
		}
	})
}

// differentialSeeds are plain messages to mutate from; the attacks the
// strict decoder exists for are in testdata/fuzz/FuzzStrictDecodeDifferential.
var differentialSeeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
	`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"x"}}`,
	`{"jsonrpc":"2.0","id":"r","result":{}}`,
}
