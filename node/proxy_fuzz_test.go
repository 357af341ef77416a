package node

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/storage"
)

// scriptConn is an mcp.Connection that yields scripted messages, records
// what is written to it, then blocks in Read until closed.
type scriptConn struct {
	in      chan jsonrpc.Message
	drained chan struct{} // closed when Read finds the script used up
	closed  chan struct{}
	once    sync.Once
	dOnce   sync.Once

	mu      sync.Mutex
	written []jsonrpc.Message // guarded by mu
}

func newScriptConn(msgs []jsonrpc.Message) *scriptConn {
	c := &scriptConn{in: make(chan jsonrpc.Message, len(msgs)), drained: make(chan struct{}), closed: make(chan struct{})}
	for _, m := range msgs {
		c.in <- m
	}
	return c
}

func (c *scriptConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case m := <-c.in:
		return m, nil
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
	return nil
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

	n := &Node{metrics: newMetrics(), logger: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, fromClient, fromServer []byte) {
		clientMsgs := decodeLines(fromClient)
		if len(clientMsgs) > maxInFlight {
			return
		}
		down, up := newScriptConn(clientMsgs), newScriptConn(decodeLines(fromServer))
		s := &session{
			n: n, id: "fuzz", transport: "fuzz", route: storage.Route{Name: "fuzz"},
			down: down, up: up,
			pending:  make(map[jsonrpc.ID]pendingCall),
			inflight: make(chan struct{}, maxInFlight),
			logger:   n.logger,
		}
		ctx, cancel := context.WithCancel(context.Background())
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
