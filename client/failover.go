package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/transport"
)

// CodeNodeLost is the JSON-RPC error code a call gets when the gateway node
// carrying it went away before answering. The session itself has moved to
// another node; the call may be retried.
const CodeNodeLost = transport.CodeNodeLost

// failoverTimeout bounds the search for a live node after one is lost.
const failoverTimeout = 30 * time.Second

// dialFunc opens a connection through one gateway node.
type dialFunc func(ctx context.Context) (mcp.Connection, error)

// failoverConn is an mcp.Connection through one of several gateway nodes.
// When the node it uses goes away, it connects through the next one and
// replays the session's initialize handshake there, so the caller's
// *mcp.ClientSession goes on. Calls that were in flight on the lost node
// are answered with CodeNodeLost: the gateway cannot know whether the
// upstream executed them, so only the caller may decide to retry.
//
// What does not survive a failover is upstream session state: resource
// subscriptions, logging level and anything else the server keeps per
// session start afresh on the new upstream session.
type failoverConn struct {
	dialers []dialFunc

	in     chan jsonrpc.Message
	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc
	closed sync.Once
	wg     sync.WaitGroup // read loops and failovers, which Close waits for; Add only under mu while ctx is live

	mu          sync.Mutex
	cur         mcp.Connection                  // guarded by mu
	next        int                             // index of the dialer to try after cur fails; guarded by mu
	gen         int                             // increments per reconnection; guarded by mu
	initReq     *jsonrpc.Request                // the session's initialize, replayed on a new node; guarded by mu
	initialized *jsonrpc.Request                // notifications/initialized, replayed too; guarded by mu
	pending     map[jsonrpc.ID]*jsonrpc.Request // calls sent and not answered, kept to resend; guarded by mu
	replayIDs   map[jsonrpc.ID]chan struct{}    // replayed initialize ids, closed when their responses arrive; guarded by mu
	failed      error                           // set once no node can be reached; guarded by mu
	failing     bool                            // a failover is under way; guarded by mu
	moved       chan struct{}                   // closed when the current failover ends; guarded by mu
}

func newFailoverConn(ctx context.Context, dialers []dialFunc) (*failoverConn, error) {
	c := &failoverConn{
		dialers:   dialers,
		in:        make(chan jsonrpc.Message, 16),
		pending:   make(map[jsonrpc.ID]*jsonrpc.Request),
		replayIDs: make(map[jsonrpc.ID]chan struct{}),
		moved:     make(chan struct{}),
	}
	conn, idx, err := c.dialAny(ctx, 0)
	if err != nil {
		return nil, err
	}
	c.cur, c.next = conn, (idx+1)%len(dialers)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.Lock()
	c.spawn(func() { c.readLoop(conn, 0) })
	c.mu.Unlock()
	return c, nil
}

// dialAny tries every dialer once, starting at start.
func (c *failoverConn) dialAny(ctx context.Context, start int) (mcp.Connection, int, error) {
	var errs []error
	for i := range c.dialers {
		idx := (start + i) % len(c.dialers)
		conn, err := c.dialers[idx](ctx)
		if err == nil {
			return conn, idx, nil
		}
		errs = append(errs, err)
		// A refusal (bad token, no route) would be the same on every node.
		var re interface{ Refused() bool }
		if errors.As(err, &re) && re.Refused() {
			break
		}
	}
	return nil, 0, errors.Join(errs...)
}

// spawn runs f in a goroutine that Close waits for. It reports false, and
// runs nothing, once the connection is closed. The caller holds c.mu.
func (c *failoverConn) spawn(f func()) bool {
	if c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// readLoop forwards messages from one node until it fails, then fails over.
func (c *failoverConn) readLoop(conn mcp.Connection, gen int) {
	for {
		msg, err := conn.Read(c.ctx)
		if err != nil {
			select {
			case <-c.ctx.Done():
				return
			default:
			}
			c.failover(gen, transport.IsGoingAway(err))
			return
		}
		if resp, ok := msg.(*jsonrpc.Response); ok && !c.settle(resp) {
			continue
		}
		select {
		case c.in <- msg:
		case <-c.ctx.Done():
			return
		}
	}
}

// settle records a response's arrival; it reports false for the response
// to a replayed initialize, which the caller never asked for.
func (c *failoverConn) settle(resp *jsonrpc.Response) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if answered, ok := c.replayIDs[resp.ID]; ok {
		delete(c.replayIDs, resp.ID)
		close(answered)
		return false
	}
	delete(c.pending, resp.ID)
	return true
}

// failover moves the session to another node after the one of generation
// gen failed. A node that went away gracefully answered every call it had
// read, so the calls still unanswered were never processed and are sent
// again through the new node; after an abrupt loss nobody knows, so they
// are answered with CodeNodeLost.
func (c *failoverConn) failover(gen int, graceful bool) {
	c.mu.Lock()
	if gen != c.gen || c.failed != nil || c.failing || c.ctx.Err() != nil {
		c.mu.Unlock()
		return
	}
	c.failing = true
	lost := c.pending
	c.pending = make(map[jsonrpc.ID]*jsonrpc.Request)
	c.cur.Close()
	start := c.next
	c.mu.Unlock()

	if !graceful {
		for id := range lost {
			c.deliver(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: CodeNodeLost,
				Message: "the gateway node carrying this call went away before it was answered; the session moved to another node, retry the call if it is safe to repeat"}})
		}
		lost = nil
	}

	// Derived from c.ctx so that Close stops the search.
	ctx, cancel := context.WithTimeout(c.ctx, failoverTimeout)
	defer cancel()
	var conn mcp.Connection
	var idx int
	var err error
	for backoff := 50 * time.Millisecond; ; backoff = min(backoff*2, 2*time.Second) {
		conn, idx, err = c.dialAny(ctx, start)
		if err == nil {
			break
		}
		select {
		case <-c.ctx.Done():
			return
		case <-ctx.Done():
			if c.ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.failed = fmt.Errorf("%w: no gateway node reachable for %s: %v", mcp.ErrConnectionClosed, failoverTimeout, err)
			c.failing = false
			close(c.moved)
			c.moved = make(chan struct{})
			c.mu.Unlock()
			c.shutdown()
			return
		case <-time.After(backoff):
		}
	}

	c.mu.Lock()
	if c.ctx.Err() != nil {
		// Closed while the dial completed: Close has already closed cur,
		// so what was just dialed is this goroutine's to close.
		c.mu.Unlock()
		conn.Close()
		return
	}
	c.cur, c.next = conn, (idx+1)%len(c.dialers)
	c.gen++
	gen = c.gen
	initReq, initialized := c.initReq, c.initialized
	answered := make(chan struct{})
	if initReq != nil {
		c.replayIDs[initReq.ID] = answered
	}
	c.spawn(func() { c.readLoop(conn, gen) })
	c.mu.Unlock()

	// Replay the handshake (the stateless protocol has none) before anyone
	// else writes on the new connection.
	var replayErr error
	if initReq != nil {
		replayErr = conn.Write(ctx, initReq)
		if replayErr == nil {
			// The protocol sends initialized only after initialize is answered.
			select {
			case <-answered:
			case <-ctx.Done():
				replayErr = ctx.Err()
			case <-c.ctx.Done():
				return
			}
		}
		if replayErr == nil && initialized != nil {
			replayErr = conn.Write(ctx, initialized)
		}
	}
	// Resend what the old node never processed.
	for id, req := range lost {
		if replayErr != nil {
			break
		}
		c.mu.Lock()
		c.pending[id] = req
		c.mu.Unlock()
		replayErr = conn.Write(ctx, req)
	}
	c.mu.Lock()
	c.failing = false
	close(c.moved)
	c.moved = make(chan struct{})
	c.mu.Unlock()
	if replayErr != nil {
		c.failover(gen, false)
	}
}

func (c *failoverConn) deliver(msg jsonrpc.Message) {
	select {
	case c.in <- msg:
	case <-c.ctx.Done():
	}
}

func (c *failoverConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case m := <-c.in:
		return m, nil
	case <-c.ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.failed != nil {
			return nil, c.failed
		}
		return nil, mcp.ErrConnectionClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Write sends msg through the current node. A write that fails because the
// node went away was never delivered, so it is sent again, once, through
// the node the session moves to.
func (c *failoverConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	req, isReq := msg.(*jsonrpc.Request)
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		if c.failed != nil {
			err := c.failed
			c.mu.Unlock()
			return err
		}
		if c.failing {
			moved := c.moved
			c.mu.Unlock()
			if err := c.await(ctx, moved); err != nil {
				return err
			}
			continue
		}
		if isReq {
			switch req.Method {
			case "initialize":
				c.initReq = cloneRequest(req)
			case "notifications/initialized":
				c.initialized = cloneRequest(req)
			}
			if req.IsCall() {
				c.pending[req.ID] = cloneRequest(req)
			}
		}
		conn, gen, moved := c.cur, c.gen, c.moved
		c.mu.Unlock()
		err := conn.Write(ctx, msg)
		if err == nil || attempt > 0 || ctx.Err() != nil {
			return err
		}
		if isReq && req.IsCall() {
			c.mu.Lock()
			delete(c.pending, req.ID)
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.spawn(func() { c.failover(gen, false) })
		c.mu.Unlock()
		if err := c.await(ctx, moved); err != nil {
			return err
		}
	}
}

// await waits for a failover to end.
func (c *failoverConn) await(ctx context.Context, moved <-chan struct{}) error {
	select {
	case <-moved:
		return nil
	case <-c.ctx.Done():
		return mcp.ErrConnectionClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends the connection and waits for its read loops and any failover
// under way, so nothing it dialed outlives it.
func (c *failoverConn) Close() error {
	c.shutdown()
	c.wg.Wait()
	return nil
}

// shutdown ends the connection without waiting, for its own goroutines
// (which Close waits for) to call.
func (c *failoverConn) shutdown() {
	c.closed.Do(func() {
		c.cancel()
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		cur.Close()
	})
}

func (c *failoverConn) SessionID() string { return "" }

func cloneRequest(r *jsonrpc.Request) *jsonrpc.Request {
	return &jsonrpc.Request{ID: r.ID, Method: r.Method, Params: append(json.RawMessage(nil), r.Params...)}
}
