package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// DefaultRotationDrainTimeout is Options.RotationDrainTimeout's default.
const DefaultRotationDrainTimeout = 30 * time.Second

// maxTrackedAsks bounds the server→client requests a connection remembers
// in order to route the client's answers back to it; beyond it answers go
// to the current connection, which is where they would go anyway unless a
// rotation happened in between.
const maxTrackedAsks = 1024

// maxHeldNotifications bounds the client notifications held while the
// upstream connection is being re-established; more are dropped.
const maxHeldNotifications = 64

// credStamp identifies what an upstream connection presents as its
// credential, without holding it: a digest of the environment (stdio) or
// headers (WebSocket) the credential turns into. A data-key rotation
// reseals a credential without changing it, and must not cost open
// sessions their upstream connection; a new value must.
type credStamp struct {
	cred *vault.Credential // the unsealed credential the digest was taken of, for a cheap "unchanged" check
	sum  [sha256.Size]byte // zero when there is no credential
}

// reconnectConn is the upstream connection of a stdio or WebSocket session.
// Those connections carry the credential they were opened with for their
// whole life (a process environment, a handshake header), so when the
// credential of the session's (org, account, route) changes, the
// connection is re-established on the new one at the next call boundary:
//
//  1. New calls wait (bounded) while the calls in flight on the old
//     connection finish, for at most the drain timeout; calls still
//     unanswered then fail with a retryable error.
//  2. The old connection is closed (a process gets the graceful shutdown of
//     a session close).
//  3. A new connection is opened on the new credential, the client's
//     initialize is replayed on it (same protocol version and
//     capabilities) and its response consumed here, followed by
//     notifications/initialized; an upstream that now agrees on another
//     protocol version ends the session.
//  4. The waiting calls go to the new connection.
//
// A credential removed from a route that requires one fails the next calls
// with the no-credential refusal (the old connection is closed), until one
// is stored again.
type reconnectConn struct {
	reconnectConfig

	mu sync.Mutex
	// cur is the connection new messages go to; nil when none is open
	// (the credential was removed, or re-establishing it failed). Guarded
	// by mu.
	cur *upstreamLink
	// old is the connection being drained, read until it is closed.
	// Guarded by mu.
	old *upstreamLink
	// rotating is set while a call re-establishes the connection; the
	// others wait for changed. Guarded by mu.
	rotating bool
	// changed is closed (and replaced) whenever cur, old, queue, fatal or
	// closed change. Guarded by mu.
	changed chan struct{}
	// curStamp is what cur presents. Guarded by mu.
	curStamp credStamp
	// init is the client's initialize request, replayed on a new
	// connection, and initialized whether notifications/initialized
	// followed it. Guarded by mu.
	init        *jsonrpc.Request
	initID      jsonrpc.ID
	initialized bool
	// version is the protocol version the upstream agreed on in its
	// initialize result. Guarded by mu.
	version string
	// queue holds messages for Read to deliver before reading on: what a
	// new connection sent during its handshake and the failures of calls
	// a drain gave up on. Guarded by mu.
	queue []jsonrpc.Message
	// held are client notifications written during a re-establishment,
	// written to the new connection once it is up. Guarded by mu.
	held []jsonrpc.Message
	// subs (resources/subscribe params by URI) and logLevel (the last
	// logging/setLevel params) are upstream session state the client set,
	// set again on a new connection. Guarded by mu.
	subs     map[string]json.RawMessage
	logLevel json.RawMessage
	// moving are the subscriptions/listen calls of a retired connection,
	// written again to the next one. Guarded by mu.
	moving []*jsonrpc.Request
	// fatal ends the session: Read returns it once queue is delivered.
	// Guarded by mu.
	fatal *jsonrpc.Error
	// waiters are the calls inside ready: when fatal is set, each is
	// answered with it through queue, before Read ends the session, so the
	// caller learns why. Guarded by mu.
	waiters map[jsonrpc.ID]struct{}
	closed  bool // guarded by mu
	// done ends with Close, cutting short a drain or re-establishment
	// under way.
	done      context.Context
	closeDone context.CancelFunc
	seq       int // numbers replayed initialize requests; guarded by mu
}

// reconnectConfig is what a reconnectConn needs from its session.
type reconnectConfig struct {
	// dial opens a connection on the credential current now.
	dial func(ctx context.Context) (mcp.Connection, error)
	// stamp reads the credential current now; an error is the refusal its
	// absence or damage earns a call.
	stamp func() (credStamp, error)
	// reestablished is told of each connection change, for the log, the
	// audit log and the metrics: reason is credential_rotated or
	// credential_removed, err is nil on success.
	reestablished func(reason string, err error)
	route         string
	drain         time.Duration // Options.RotationDrainTimeout
	wait          time.Duration // bounds how long a call waits for a re-establishment
	handshake     time.Duration // bounds the replayed handshake: Options.ConnectTimeout
}

// upstreamLink is one upstream connection of a reconnectConn and the ids
// in flight on it. Its fields are guarded by the reconnectConn's mu.
type upstreamLink struct {
	conn mcp.Connection
	// calls are client calls written to it and not answered yet.
	calls map[jsonrpc.ID]struct{}
	// listens are the client's subscriptions/listen calls open on it:
	// standing requests that end only when cancelled, so a drain does not
	// wait for them; they move to the new connection with the same id.
	listens map[jsonrpc.ID]*jsonrpc.Request
	// asks are server→client requests it sent that the client has not
	// answered yet, so the answers go back to the connection that asked.
	asks map[jsonrpc.ID]struct{}
	// drained, when set, is closed once calls is empty.
	drained chan struct{}
	// retired is set when a rotation closes it: its read error then is
	// not the session's end.
	retired bool
}

func newUpstreamLink(c mcp.Connection) *upstreamLink {
	return &upstreamLink{conn: c, calls: make(map[jsonrpc.ID]struct{}), asks: make(map[jsonrpc.ID]struct{}), listens: make(map[jsonrpc.ID]*jsonrpc.Request)}
}

// answered notes that a call is over on l.
func (l *upstreamLink) answered(id jsonrpc.ID) {
	delete(l.calls, id)
	if l.drained != nil && len(l.calls) == 0 {
		close(l.drained)
		l.drained = nil
	}
}

var _ mcp.Connection = (*reconnectConn)(nil)

// newReconnectConn wraps up, opened on the credential stamp describes.
func newReconnectConn(up mcp.Connection, stamp credStamp, cfg reconnectConfig) *reconnectConn {
	done, closeDone := context.WithCancel(context.Background())
	return &reconnectConn{reconnectConfig: cfg, cur: newUpstreamLink(up), curStamp: stamp, changed: make(chan struct{}), done: done, closeDone: closeDone}
}

// notifyLocked wakes everything waiting for a change; c.mu held.
func (c *reconnectConn) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// SessionID implements mcp.Connection.
func (c *reconnectConn) SessionID() string { return "" }

// Close closes the connections open and ends waiting calls.
func (c *reconnectConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	links := []*upstreamLink{c.cur, c.old}
	c.notifyLocked()
	c.mu.Unlock()
	c.closeDone()
	var err error
	for _, l := range links {
		if l != nil {
			err = errors.Join(err, l.conn.Close())
		}
	}
	return err
}

// DownstreamEnded tells c that no more client messages will come: a
// drain or re-establishment under way is given up, as the calls it holds
// back can no longer be answered; the connections stay open until Close.
func (c *reconnectConn) DownstreamEnded() { c.closeDone() }

// Write sends a client message to the connection it belongs to: an answer
// to the connection that asked, a cancellation to the connection its call
// is on, a call to the current connection once it presents the current
// credential.
func (c *reconnectConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	switch m := msg.(type) {
	case *jsonrpc.Response:
		return c.writeAnswer(ctx, m)
	case *jsonrpc.Request:
		if m.IsCall() {
			return c.writeCall(ctx, m)
		}
		return c.writeNotification(ctx, m)
	}
	return fmt.Errorf("unknown message type %T", msg)
}

func (c *reconnectConn) writeAnswer(ctx context.Context, resp *jsonrpc.Response) error {
	c.mu.Lock()
	var to *upstreamLink
	for _, l := range []*upstreamLink{c.cur, c.old} {
		if l != nil {
			if _, ok := l.asks[resp.ID]; ok {
				delete(l.asks, resp.ID)
				to = l
				break
			}
		}
	}
	if to == nil {
		to = c.cur
	}
	c.mu.Unlock()
	if to == nil {
		// The connection that asked is gone, and with it the question.
		return nil
	}
	return to.conn.Write(ctx, resp)
}

func (c *reconnectConn) writeNotification(ctx context.Context, req *jsonrpc.Request) error {
	c.mu.Lock()
	if req.Method == "notifications/cancelled" {
		if id, _, err := jsonrpcx.CancelledRequestID(req.Params); err == nil && id.IsValid() {
			for _, l := range []*upstreamLink{c.old, c.cur} {
				if l == nil {
					continue
				}
				_, call := l.calls[id]
				_, listen := l.listens[id]
				if call || listen {
					// A cancelled call gets no answer: stop waiting for it.
					l.answered(id)
					delete(l.listens, id)
					c.mu.Unlock()
					return l.conn.Write(ctx, req)
				}
			}
			// Its call was on a connection now closed, which ended it.
			c.mu.Unlock()
			return nil
		}
	}
	if req.Method == "notifications/initialized" && c.init != nil {
		c.initialized = true
	}
	if c.rotating || (c.old != nil && c.cur == nil) {
		if len(c.held) < maxHeldNotifications {
			c.held = append(c.held, req)
		}
		c.mu.Unlock()
		return nil
	}
	to := c.cur
	c.mu.Unlock()
	if to == nil {
		return nil // no upstream connection: nothing the notification could change
	}
	return to.conn.Write(ctx, req)
}

func (c *reconnectConn) writeCall(ctx context.Context, req *jsonrpc.Request) error {
	l, err := c.ready(ctx, req)
	if errors.Is(err, errAnswered) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := l.conn.Write(ctx, req); err != nil {
		c.mu.Lock()
		l.answered(req.ID)
		delete(l.listens, req.ID)
		c.mu.Unlock()
		return err
	}
	return nil
}

// recordStateLocked notes the upstream session state req sets, to set it
// again on a new connection; c.mu held.
func (c *reconnectConn) recordStateLocked(req *jsonrpc.Request) {
	switch req.Method {
	case "logging/setLevel":
		c.logLevel = slices.Clone(req.Params)
	case "resources/subscribe", "resources/unsubscribe":
		var p struct {
			URI string `json:"uri"`
		}
		if json.Unmarshal(req.Params, &p) != nil {
			return
		}
		if req.Method == "resources/unsubscribe" {
			delete(c.subs, p.URI)
			return
		}
		if c.subs == nil {
			c.subs = make(map[string]json.RawMessage)
		}
		if len(c.subs) < maxTrackedAsks {
			c.subs[p.URI] = slices.Clone(req.Params)
		}
	}
}

// ready returns the connection req goes to, with req counted as in flight
// on it, re-establishing it first when the credential changed.
func (c *reconnectConn) ready(ctx context.Context, req *jsonrpc.Request) (*upstreamLink, error) {
	c.mu.Lock()
	if !c.closed && c.fatal == nil && !c.rotating && c.cur != nil {
		if st, err := c.stamp(); err == nil && c.unchangedLocked(st) {
			l := c.takeLocked(req)
			c.mu.Unlock()
			return l, nil
		}
	}
	c.mu.Unlock()
	return c.readySlow(ctx, req)
}

// unchangedLocked reports whether st describes the credential cur
// presents; c.mu held.
func (c *reconnectConn) unchangedLocked(st credStamp) bool {
	if st.cred == c.curStamp.cred || st.sum == c.curStamp.sum {
		c.curStamp.cred = st.cred
		return true
	}
	return false
}

// takeLocked counts req as in flight on cur and returns cur; c.mu held,
// cur current.
func (c *reconnectConn) takeLocked(req *jsonrpc.Request) *upstreamLink {
	l := c.cur
	if req.Method == "initialize" && c.init == nil {
		c.init = &jsonrpc.Request{Method: req.Method, Params: slices.Clone(req.Params)}
		c.initID = req.ID
	}
	c.recordStateLocked(req)
	// Counted under the lock that found l current, so a drain starting
	// now waits for it.
	if req.Method == "subscriptions/listen" {
		l.listens[req.ID] = req
	} else {
		l.calls[req.ID] = struct{}{}
	}
	return l
}

// readySlow is ready when the connection may have to be re-established or
// waited for.
func (c *reconnectConn) readySlow(ctx context.Context, req *jsonrpc.Request) (*upstreamLink, error) {
	deadline := time.NewTimer(c.wait)
	defer deadline.Stop()
	c.mu.Lock()
	if c.waiters == nil {
		c.waiters = make(map[jsonrpc.ID]struct{})
	}
	c.waiters[req.ID] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, req.ID)
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		switch {
		case c.closed || c.done.Err() != nil:
			c.mu.Unlock()
			return nil, mcp.ErrConnectionClosed
		case c.fatal != nil:
			c.answerFatalLocked(req.ID)
			c.mu.Unlock()
			return nil, errAnswered
		case c.rotating:
			ch := c.changed
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-c.done.Done():
				return nil, mcp.ErrConnectionClosed
			case <-deadline.C:
				return nil, rpcError(transport.CodeUpstreamError, fmt.Sprintf("the upstream connection of route %q is being re-established on a rotated credential and was not ready within %v; retry the call", c.route, c.wait), nil)
			}
		}
		st, serr := c.stamp()
		if serr != nil {
			if c.cur == nil && c.old == nil {
				c.mu.Unlock()
				return nil, asRPCError(serr)
			}
			// The credential was removed (or broke): the connection opened
			// on it must not go on being used.
			c.rotating = true
			c.mu.Unlock()
			c.retire("credential_removed")
			c.mu.Lock()
			c.rotating, c.curStamp, c.held = false, credStamp{}, nil
			c.notifyLocked()
			c.mu.Unlock()
			c.reestablished("credential_removed", nil)
			return nil, asRPCError(serr)
		}
		if c.cur != nil && c.unchangedLocked(st) {
			l := c.takeLocked(req)
			c.mu.Unlock()
			return l, nil
		}
		c.rotating = true
		c.mu.Unlock()
		reason := "credential_rotated"
		if st.cred == nil {
			reason = "credential_removed" // from a route where it is optional
		}
		err := c.reestablish(ctx, st)
		c.reestablished(reason, err)
		c.mu.Lock()
		fatal := c.fatal != nil
		if fatal {
			c.answerFatalLocked(req.ID)
		}
		c.mu.Unlock()
		if fatal {
			return nil, errAnswered
		}
		if err != nil {
			return nil, asRPCError(err)
		}
	}
}

// answerFatalLocked queues the answer that tells the call id waiting in
// ready why the session ends, once; c.mu held, c.fatal set.
func (c *reconnectConn) answerFatalLocked(id jsonrpc.ID) {
	if _, waiting := c.waiters[id]; waiting {
		delete(c.waiters, id)
		c.queue = append(c.queue, &jsonrpc.Response{ID: id, Error: c.fatal})
	}
}

// errAnswered tells writeCall that ready has queued the call's answer.
var errAnswered = errors.New("answered")

// asRPCError gives a refusal the form a call's failed write is answered
// with.
func asRPCError(err error) error {
	var ref *transport.Refusal
	if errors.As(err, &ref) {
		return &jsonrpc.Error{Code: ref.Code, Message: ref.Message}
	}
	if errors.Is(err, errNoCredential) {
		return &jsonrpc.Error{Code: transport.CodeNoCredential, Message: err.Error()}
	}
	return err
}

// retire drains the current connection and closes it; c.rotating is set.
// Calls still unanswered after the drain timeout fail with a retryable
// error.
func (c *reconnectConn) retire(reason string) {
	c.mu.Lock()
	l := c.cur
	if l == nil {
		c.mu.Unlock()
		return
	}
	c.cur, c.old = nil, l
	var drained chan struct{}
	if len(l.calls) > 0 {
		drained = make(chan struct{})
		l.drained = drained
	}
	c.notifyLocked()
	c.mu.Unlock()
	if drained != nil {
		t := time.NewTimer(c.drain)
		select {
		case <-drained:
		case <-t.C:
		case <-c.done.Done():
		}
		t.Stop()
	}
	c.mu.Lock()
	l.retired = true
	l.drained = nil
	left := make([]jsonrpc.ID, 0, len(l.calls))
	for id := range l.calls {
		left = append(left, id)
	}
	for _, req := range l.listens {
		if reason == "credential_removed" {
			left = append(left, req.ID)
		} else {
			c.moving = append(c.moving, req)
		}
	}
	c.mu.Unlock()
	// The same shutdown as at a session's close: a process gets its stdin
	// closed, then SIGTERM, then SIGKILL.
	l.conn.Close()
	what := "re-established on a rotated credential"
	if reason == "credential_removed" {
		what = "closed because its credential was removed"
	}
	c.mu.Lock()
	for _, id := range left {
		c.queue = append(c.queue, &jsonrpc.Response{ID: id, Error: rpcError(transport.CodeUpstreamError,
			fmt.Sprintf("the upstream connection of route %q was %s before this call was answered (it may or may not have run); retry it if it is safe to repeat", c.route, what), nil)})
	}
	c.old = nil
	c.notifyLocked()
	c.mu.Unlock()
}

// reestablish replaces the connection by one on the credential st
// describes; c.rotating is set, and cleared on return.
func (c *reconnectConn) reestablish(ctx context.Context, st credStamp) (err error) {
	// Not the call's context: the call that happened to find the new
	// credential may be cancelled, the others waiting on it may not. Close
	// ends it.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(c.done, cancel)
	defer stop()
	defer func() {
		c.mu.Lock()
		if err != nil {
			// Their connection is gone and no other took them on.
			for _, req := range c.moving {
				c.queue = append(c.queue, &jsonrpc.Response{ID: req.ID, Error: rpcError(transport.CodeUpstreamError,
					fmt.Sprintf("the upstream connection of route %q could not be re-established on the rotated credential, which ended this request; retry it", c.route), nil)})
			}
			c.moving = nil
		}
		c.rotating = false
		c.notifyLocked()
		c.mu.Unlock()
	}()
	c.retire("credential_rotated")
	if c.done.Err() != nil {
		return mcp.ErrConnectionClosed
	}
	up, err := c.dial(ctx)
	if err != nil {
		return err
	}
	l := newUpstreamLink(up)
	c.mu.Lock()
	c.seq++
	hs := handshake{init: c.init, initialized: c.initialized, version: c.version, seq: c.seq, logLevel: c.logLevel}
	for _, uri := range slices.Sorted(maps.Keys(c.subs)) {
		hs.subs = append(hs.subs, c.subs[uri])
	}
	c.mu.Unlock()
	early, err := c.handshake(ctx, l, hs)
	if err != nil {
		up.Close()
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		up.Close()
		return mcp.ErrConnectionClosed
	}
	held := c.held
	moving := c.moving
	c.held, c.moving = nil, nil
	for _, req := range moving {
		l.listens[req.ID] = req
	}
	c.mu.Unlock()
	for _, m := range moving {
		held = append(held, m)
	}
	for _, m := range held {
		if err := up.Write(ctx, m); err != nil {
			up.Close()
			return fmt.Errorf("upstream of route %q failed right after it was re-established: %w", c.route, err)
		}
	}
	c.mu.Lock()
	c.cur, c.curStamp = l, st
	c.queue = append(c.queue, early...)
	c.mu.Unlock()
	return nil
}

// handshake is what a new connection is told before the waiting calls
// reach it.
type handshake struct {
	init        *jsonrpc.Request // nil when the client sent none (2026-07-28 sessions need none)
	initialized bool
	version     string // the protocol version agreed on the first connection
	seq         int
	logLevel    json.RawMessage   // nil when never set
	subs        []json.RawMessage // resources/subscribe params
}

// handshake replays the session's initialize on l, consumes the response,
// sends notifications/initialized, and sets again the log level and
// resource subscriptions the client had set; the upstream's answers to all
// of these are consumed here. It returns the other messages the upstream
// sent meanwhile, for Read to deliver.
func (c *reconnectConn) handshake(ctx context.Context, l *upstreamLink, hs handshake) ([]jsonrpc.Message, error) {
	hctx, cancel := context.WithTimeout(ctx, c.reconnectConfig.handshake)
	defer cancel()
	var early []jsonrpc.Message
	n := 0
	// call writes one request of the gateway's own and waits for its
	// answer.
	call := func(method string, params json.RawMessage) (*jsonrpc.Response, error) {
		n++
		id, _ := jsonrpc.MakeID(fmt.Sprintf("mcpgw-reestablish-%d-%d", hs.seq, n))
		if err := l.conn.Write(hctx, &jsonrpc.Request{ID: id, Method: method, Params: params}); err != nil {
			return nil, fmt.Errorf("replay %s to the re-established upstream: %w", method, err)
		}
		for {
			msg, err := l.conn.Read(hctx)
			if err != nil {
				if _, ok := transport.AsMessageError(err); ok {
					continue
				}
				return nil, fmt.Errorf("read the %s response of the re-established upstream: %w", method, err)
			}
			if resp, ok := msg.(*jsonrpc.Response); ok && resp.ID == id {
				return resp, nil
			}
			if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() && len(l.asks) < maxTrackedAsks {
				l.asks[req.ID] = struct{}{} // l is not shared yet
			}
			if len(early) < maxHeldNotifications {
				early = append(early, msg)
			}
		}
	}
	if hs.init != nil {
		resp, err := call("initialize", hs.init.Params)
		if err != nil {
			return nil, err
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("the re-established upstream refused the replayed initialize: %v", resp.Error)
		}
		if got := protocolVersionOf(resp.Result); hs.version != "" && got != hs.version {
			c.mu.Lock()
			fatal := rpcError(transport.CodeUpstreamError, fmt.Sprintf("the upstream of route %q, re-established on a rotated credential, now speaks protocol version %q instead of %q; open a new session", c.route, got, hs.version), nil)
			c.fatal = fatal
			for id := range c.waiters {
				c.answerFatalLocked(id)
			}
			err := error(fatal)
			c.notifyLocked()
			c.mu.Unlock()
			return nil, err
		}
		if hs.initialized {
			n := &jsonrpc.Request{Method: "notifications/initialized", Params: json.RawMessage(`{}`)}
			if err := l.conn.Write(hctx, n); err != nil {
				return nil, fmt.Errorf("write notifications/initialized to the re-established upstream: %w", err)
			}
		}
	}
	if hs.logLevel != nil {
		if _, err := call("logging/setLevel", hs.logLevel); err != nil {
			return nil, err
		}
	}
	for _, p := range hs.subs {
		if _, err := call("resources/subscribe", p); err != nil {
			return nil, err
		}
	}
	return early, nil
}

// protocolVersionOf reads protocolVersion from an initialize result.
func protocolVersionOf(result json.RawMessage) string {
	var r struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	json.Unmarshal(result, &r)
	return r.ProtocolVersion
}

// Read returns the next upstream message: queued ones first, then from the
// connection being drained until it closes, then from the current one.
func (c *reconnectConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			m := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return m, nil
		}
		if c.fatal != nil {
			err := c.fatal
			c.mu.Unlock()
			return nil, err
		}
		if c.closed {
			c.mu.Unlock()
			return nil, mcp.ErrConnectionClosed
		}
		l := c.old
		if l == nil {
			l = c.cur
		}
		if l == nil || l.retired {
			ch := c.changed
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		c.mu.Unlock()
		msg, err := l.conn.Read(ctx)
		if err != nil {
			if _, ok := transport.AsMessageError(err); ok {
				return nil, err
			}
			c.mu.Lock()
			retired := l.retired
			c.mu.Unlock()
			if retired {
				continue // closed by a rotation, not by the upstream
			}
			return nil, err
		}
		c.mu.Lock()
		switch m := msg.(type) {
		case *jsonrpc.Response:
			delete(l.listens, m.ID)
			if _, ok := l.calls[m.ID]; ok {
				l.answered(m.ID)
				if c.init != nil && c.version == "" && m.ID == c.initID && m.Error == nil {
					c.version = protocolVersionOf(m.Result)
				}
			}
		case *jsonrpc.Request:
			if m.IsCall() && len(l.asks) < maxTrackedAsks {
				l.asks[m.ID] = struct{}{}
			}
		}
		c.mu.Unlock()
		return msg, nil
	}
}

// rotates reports whether sessions of route hold a connection that carries
// its credential for life, and so are re-established when it changes.
func rotates(route storage.Route) bool {
	if route.Credential == storage.CredentialNone {
		return false
	}
	return route.Transport == storage.TransportStdio || route.Transport == storage.TransportWebSocket
}

// stampFor reads the credential of creds current now, as the digest of what
// a connection of route presents.
func stampFor(route storage.Route, creds *credentialSource) (credStamp, error) {
	cred, hdr, err := creds.current()
	if err != nil || cred == nil {
		return credStamp{}, err
	}
	creds.mu.Lock()
	defer creds.mu.Unlock()
	if creds.stampCred == cred {
		return credStamp{cred: cred, sum: creds.stampSum}, nil
	}
	h := sha256.New()
	if route.Transport == storage.TransportStdio {
		for _, kv := range cred.Environ() {
			h.Write([]byte(kv))
			h.Write([]byte{0})
		}
	} else {
		writeHeader(h, hdr)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	creds.stampCred, creds.stampSum = cred, sum
	return credStamp{cred: cred, sum: sum}, nil
}

// writeHeader writes hdr to h in a canonical order.
func writeHeader(h interface{ Write([]byte) (int, error) }, hdr http.Header) {
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		for _, v := range hdr[k] {
			h.Write([]byte(v))
			h.Write([]byte{0})
		}
		h.Write([]byte{1})
	}
}
