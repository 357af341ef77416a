package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// scriptConn is an mcp.Connection that yields scripted messages (or read
// errors), records what is written to it, then blocks in Read until closed.
type scriptConn struct {
	in      chan any      // jsonrpc.Message or error
	after   int           // Read yields nothing until this many messages were written
	wrote   chan struct{} // signalled on every Write
	drained chan struct{} // closed when Read finds the script used up
	closed  chan struct{}
	once    sync.Once
	dOnce   sync.Once

	mu      sync.Mutex
	written []jsonrpc.Message // guarded by mu
}

func newScriptConn[T any](items []T) *scriptConn {
	c := &scriptConn{in: make(chan any, len(items)), wrote: make(chan struct{}, 1), drained: make(chan struct{}), closed: make(chan struct{})}
	for _, it := range items {
		c.in <- it
	}
	return c
}

func (c *scriptConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for c.writes() < c.after {
		select {
		case <-c.wrote:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closed:
			return nil, mcp.ErrConnectionClosed
		}
	}
	select {
	case it := <-c.in:
		if err, ok := it.(error); ok {
			return nil, err
		}
		return it.(jsonrpc.Message), nil
	default:
	}
	c.dOnce.Do(func() { close(c.drained) })
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, mcp.ErrConnectionClosed
	}
}

func (c *scriptConn) Write(_ context.Context, msg jsonrpc.Message) error {
	select {
	case <-c.closed:
		return mcp.ErrConnectionClosed
	default:
	}
	c.mu.Lock()
	c.written = append(c.written, msg)
	c.mu.Unlock()
	select {
	case c.wrote <- struct{}{}:
	default:
	}
	return nil
}

func (c *scriptConn) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.written)
}

// runScripted runs a session between two scripted connections until both
// scripts are used up, then ends it and waits for it to return.
func runScripted(t *testing.T, g *Gateway, down, up *scriptConn) {
	t.Helper()
	s := &session{
		g: g, id: "scripted", transport: "scripted", route: storage.Route{Name: "scripted"}, rm: g.metrics.route("scripted"),
		down: down, up: up,
		claims:   &policy.Claims{ID: "scripted", Service: "scripted", Orgs: []string{"*"}},
		pending:  make(map[jsonrpc.ID]pendingCall),
		finished: make(map[jsonrpc.ID]context.CancelFunc),
		logger:   g.logger,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan struct{})
	go func() { defer close(ended); s.run(ctx) }()
	deadline := time.After(10 * time.Second)
	for _, c := range []*scriptConn{down, up} {
		select {
		case <-c.drained:
		case <-ended:
		case <-deadline:
			t.Fatal("the proxy stopped reading before the scripts were used up")
		}
	}
	cancel()
	select {
	case <-ended:
	case <-deadline:
		t.Fatal("session.run did not return after its context ended")
	}
}

func (c *scriptConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *scriptConn) SessionID() string { return "" }

// decodeLines decodes each line that is a JSON-RPC message; the transports
// answer the others before the proxy sees them.
func decodeLines(data []byte) []jsonrpc.Message {
	var msgs []jsonrpc.Message
	for _, line := range bytes.Split(data, []byte("\n")) {
		if m, err := jsonrpc.DecodeMessage(line); err == nil {
			msgs = append(msgs, m)
		}
	}
	return msgs
}

// FuzzProxyMessages pumps arbitrary decoded messages from both sides through
// a session. The proxy must not panic, must end when the session ends, and
// must answer every call the client did not cancel.
func FuzzProxyMessages(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`),
		[]byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`+"\n"+`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}`), []byte{})
	f.Add([]byte(`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"slow"}}`+"\n"+`{"jsonrpc":"2.0","id":"a","method":"ping"}`+"\n"+
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}`), []byte(`{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"late"}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{"x":1}}}`+"\n"+`{"jsonrpc":"2.0","id":3,"result":{}}`),
		[]byte(`{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{}}`+"\n"+`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":2.5,"method":"initialize","params":{}}`+"\n"+`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`), []byte(`{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}`))

	// The session runs on a Gateway over a store in a temp dir: no raft,
	// no listeners.
	g := newTestGateway(f).Gateway
	f.Fuzz(func(t *testing.T, fromClient, fromServer []byte) {
		clientMsgs := decodeLines(fromClient)
		if len(clientMsgs) > g.opts.MaxCallsPerSession {
			return
		}
		down, up := newScriptConn(clientMsgs), newScriptConn(decodeLines(fromServer))
		runScripted(t, g, down, up)

		// Every call the client made and did not cancel got a response.
		calls := map[jsonrpc.ID]bool{}
		for _, m := range clientMsgs {
			req, ok := m.(*jsonrpc.Request)
			if !ok {
				continue
			}
			if req.IsCall() {
				calls[req.ID] = true
			}
			if req.Method == "notifications/cancelled" {
				var p struct {
					RequestID any `json:"requestId"`
				}
				if json.Unmarshal(req.Params, &p) == nil {
					if id, err := jsonrpc.MakeID(p.RequestID); err == nil {
						delete(calls, id)
					}
				}
			}
		}
		down.mu.Lock()
		defer down.mu.Unlock()
		for _, m := range down.written {
			if resp, ok := m.(*jsonrpc.Response); ok {
				delete(calls, resp.ID)
			}
		}
		for id := range calls {
			t.Errorf("call %v got no response", id.Raw())
		}
	})
}

// TestSessionAnswersRefusedMessages checks what the proxy does with a
// message a transport refused (over the cap, a binary frame) but whose id
// it could read: the call it belongs to fails at once, on whichever side
// made it.
func TestSessionAnswersRefusedMessages(t *testing.T) {
	id5, _ := jsonrpc.MakeID(float64(5))
	call5 := &jsonrpc.Request{ID: id5, Method: "tools/call", Params: json.RawMessage(`{"name":"echo"}`)}
	refused := func(response bool, id jsonrpc.ID) error {
		return &transport.MessageError{Code: jsonrpc.CodeInvalidRequest, Message: "message larger than 1024 bytes refused", ID: id, Response: response}
	}
	tests := []struct {
		name     string
		down, up []any // scripts; up's starts once the proxy wrote upAfter messages upstream
		upAfter  int
		toDown   string // the error response the client gets, encoded; "" for none
		toUp     string // the error response the upstream gets, encoded; "" for none
	}{
		{
			name:   "client call refused",
			down:   []any{refused(false, id5)},
			toDown: `{"jsonrpc":"2.0","id":5,"error":{"code":-32600,"message":"message larger than 1024 bytes refused"}}`,
		},
		{
			name:   "client message without a readable id",
			down:   []any{refused(false, jsonrpc.ID{})},
			toDown: `{"jsonrpc":"2.0","error":{"code":-32600,"message":"message larger than 1024 bytes refused"}}`,
		},
		{
			name: "client answer to an upstream request refused",
			down: []any{refused(true, id5)},
			toUp: `{"jsonrpc":"2.0","id":5,"error":{"code":-32600,"message":"message larger than 1024 bytes refused"}}`,
		},
		{
			name:    "upstream result refused",
			down:    []any{call5},
			up:      []any{refused(true, id5)},
			upAfter: 1,
			toDown:  `{"jsonrpc":"2.0","id":5,"error":{"code":-32084,"message":"upstream of route \"scripted\" answered with an unusable message: message larger than 1024 bytes refused"}}`,
		},
		{
			name: "upstream request refused",
			up:   []any{refused(false, id5)},
			toUp: `{"jsonrpc":"2.0","id":5,"error":{"code":-32600,"message":"message larger than 1024 bytes refused"}}`,
		},
		{
			name: "upstream message without a readable id",
			up:   []any{refused(true, jsonrpc.ID{})},
		},
	}
	g := newTestGateway(t).Gateway
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			down, up := newScriptConn(tc.down), newScriptConn(tc.up)
			up.after = tc.upAfter
			runScripted(t, g, down, up)
			for _, side := range []struct {
				name string
				c    *scriptConn
				want string
			}{{"client", down, tc.toDown}, {"upstream", up, tc.toUp}} {
				var got []string
				for _, m := range side.c.written {
					if r, ok := m.(*jsonrpc.Response); ok && r.Error != nil {
						b, _ := jsonrpc.EncodeMessage(r)
						got = append(got, string(b))
					}
				}
				var want []string
				if side.want != "" {
					want = []string{side.want}
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("error responses to the %s (-want +got):\n%s", side.name, diff)
				}
			}
		})
	}
}
