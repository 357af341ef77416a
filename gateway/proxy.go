package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// session is one proxied MCP session: a downstream connection, the upstream
// connection opened for it, and what the proxy tracks between the two.
type session struct {
	g         *Gateway
	id        string
	transport string // downstream transport, for metrics and logs
	route     storage.Route
	rm        *routeMetrics // the route's metric series
	org       string
	account   string
	claims    *policy.Claims // the service token's claims
	logger    *slog.Logger

	remote string            // downstream network address, for the audit log
	creds  *credentialSource // the credential the upstream connection injects
	// oneShot is set for a session that serves one stateless request: its
	// opening and closing are logged at debug level and not audited (its
	// tools/call records are), since they are one request's, not a
	// session's.
	oneShot bool

	down, up mcp.Connection
	// consent is set for a session held open until its account consents;
	// up is nil until then (see awaitConsent).
	consent *consentWait

	// traceCtx holds the session's span (and the trace context of the
	// request that opened it), the parent of calls that bring none of
	// their own. It is context.Background when tracing is off.
	traceCtx context.Context

	// stop ends run; set before the session is registered as live.
	stop context.CancelFunc
	// ended is set when the gateway ends the session because its token was
	// revoked or expired: the error outstanding and later calls get.
	ended atomic.Pointer[sessionEnd]
	// upstreamEnded is set when the upstream ended the session, so calls
	// it left unanswered count as upstream errors.
	upstreamEnded atomic.Bool

	mu      sync.Mutex
	pending map[jsonrpc.ID]pendingCall // client→server calls awaiting a response; guarded by mu
	pings   int                        // pending entries that are pings, capped apart from calls; guarded by mu
	// finished holds the write contexts of answered calls whose upstream
	// write has not returned yet; guarded by mu.
	finished map[jsonrpc.ID]context.CancelFunc
	// spanStarts holds, per method and tool, the span names and start
	// options of its calls, built once per session rather than per call;
	// guarded by mu, at most maxSpanStarts entries.
	spanStarts map[spanStartKey]*spanStart
}

// sessionEnd is why the gateway ended a session whose token stopped being
// valid.
type sessionEnd struct {
	err    *jsonrpc.Error // answers outstanding and later calls
	reason string         // audit and metrics: token_revoked or token_expired
	close  string         // the WebSocket close reason
}

// pendingCall is what the proxy remembers of a call until its response.
type pendingCall struct {
	method string
	tool   string
	start  time.Time
	// sent is when the call was handed to the upstream, from which the
	// gateway waits on it.
	sent time.Time
	// gated is set when the call holds a node-wide in-flight slot.
	gated bool
	// cancel ends the upstream write of the call: for streamable HTTP that
	// aborts the request, which is how a stateless upstream learns of a
	// cancellation. For streamable HTTP the response arrives on the
	// request's own stream, so cancel runs only once the write has returned
	// and the response has come (or the caller cancelled).
	cancel context.CancelFunc
	// written is set when the upstream write returned.
	written bool
	// span and upSpan are the call's gateway and upstream spans; nil when
	// tracing is off.
	span, upSpan trace.Span
	// spanStart holds the attributes the spans get as they end.
	spanStart *spanStart
	// argsSHA256 and resultSHA256 are the payload hashes the call's audit
	// record carries (Options.AuditHashPayloads); empty otherwise.
	argsSHA256, resultSHA256 string
}

// run pumps messages both ways until either side ends, then closes both and
// answers calls still outstanding so no caller waits forever.
func (s *session) run(ctx context.Context) {
	defer s.g.releaseSessionSlot()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.stop = cancel
	s.g.live.add(s)
	defer s.g.live.remove(s)
	if s.consent != nil && !s.awaitConsent(ctx) {
		s.down.Close()
		if s.up != nil {
			s.up.Close()
		}
		return
	}
	tm := s.g.metrics.transport(s.transport)
	tm.active.Inc()
	tm.opened.Inc()
	defer tm.active.Dec()
	if s.oneShot {
		s.logger.Debug("stateless request session opened")
	} else {
		s.logger.Info("session opened")
		s.auditOpen()
	}
	start := time.Now()
	if s.traceCtx == nil {
		s.traceCtx = context.Background()
	}
	if s.g.tracer != nil {
		var span trace.Span
		s.traceCtx, span = s.g.tracer.Start(s.traceCtx, "session", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attrRoute.String(s.route.Name), attrTransport.String(s.transport)))
		defer span.End()
	}

	// The session's own goroutine reads the client. What ends the session
	// first (the client, the upstream, a revoked token, the node shutting
	// down) cancels ctx, and shutdown then closes both sides, which ends
	// the read. An upstream connection that delivers what it receives on
	// its own goroutines (the streamable HTTP client) needs no goroutine
	// reading it; any other is read by one.
	shut := make(chan struct{})
	context.AfterFunc(ctx, func() { defer close(shut); s.shutdown(ctx) })
	var reader sync.WaitGroup
	if d, ok := s.up.(transport.Deliverer); ok {
		d.DeliverTo(func(msg jsonrpc.Message, err error) {
			if !s.fromUpstream(ctx, msg, err) {
				cancel()
			}
		})
	} else {
		reader.Go(func() { defer cancel(); s.serverToClient(ctx) })
	}
	s.clientToServer(ctx)
	cancel()
	<-shut
	reader.Wait()
	if s.oneShot {
		s.logger.Debug("stateless request session closed", slog.Duration("duration", time.Since(start)))
		return
	}
	s.logger.Info("session closed", slog.Duration("duration", time.Since(start)))
	s.auditClose(time.Since(start))
}

// shutdown closes both sides of a session that is ending, in the order
// that gives its caller the clearest answer, and answers the calls still
// outstanding.
func (s *session) shutdown(ctx context.Context) {
	if end := s.ended.Load(); end != nil {
		// The caller learns at once that its token ended the session; the
		// upstream, which may take seconds to close a session with calls
		// in flight, is closed after.
		s.failPending(ctx)
		if cp, ok := s.down.(interface{ ClosePolicy(reason string) error }); ok {
			cp.ClosePolicy(end.close)
		} else {
			s.down.Close()
		}
		s.up.Close()
		return
	}
	s.up.Close()
	s.failPending(ctx)
	if ga, ok := s.down.(interface{ CloseGoingAway() error }); ok && s.g.ctx.Err() != nil {
		// Everything read has been answered: tell the client that what
		// it sent since was never processed, so it may resend it
		// elsewhere.
		ga.CloseGoingAway()
	} else {
		s.down.Close()
	}
}

// clientToServer forwards downstream messages upstream until the client's
// stream ends, then waits for the calls it is still writing.
func (s *session) clientToServer(ctx context.Context) {
	var writes sync.WaitGroup
	defer writes.Wait()
	// The read is not bound to ctx: a WebSocket read whose context ends
	// drops the connection, and run must still answer outstanding calls
	// over it after ctx ends. run ends the read by closing down.
	readCtx := context.WithoutCancel(ctx)
	for {
		msg, err := s.down.Read(readCtx)
		if err != nil {
			if me, ok := transport.AsMessageError(err); ok {
				// One bad message: answer it and keep the session. A refused
				// response fails the upstream's request it answered.
				s.g.metrics.refusalsTotal.WithLabelValues("bad_message").Inc()
				refusal := &jsonrpc.Response{ID: me.ID, Error: &jsonrpc.Error{Code: me.Code, Message: me.Message}}
				if me.Response {
					if err := s.up.Write(ctx, refusal); err != nil {
						s.logger.Debug("upstream write failed", slog.Any("error", err))
					}
					continue
				}
				s.writeDown(ctx, refusal)
				continue
			}
			if ctx.Err() == nil {
				s.logger.Debug("downstream ended", slog.Any("error", err))
			}
			if de, ok := s.up.(interface{ DownstreamEnded() }); ok {
				// Calls held back for a re-establishment could only wait
				// it out, and the session with them.
				de.DownstreamEnded()
			}
			return
		}
		s.g.metrics.msgClientToServer.Inc()
		req, ok := msg.(*jsonrpc.Request)
		if !ok || !req.IsCall() {
			var cancelled jsonrpc.ID
			if ok && req.Method == "notifications/cancelled" {
				id, _, err := jsonrpcx.CancelledRequestID(req.Params)
				if err != nil {
					// Which call the upstream would cancel is unclear: not
					// forwarded, and the call it may name stays tracked.
					s.g.metrics.refusalsTotal.WithLabelValues("bad_message").Inc()
					s.writeDown(ctx, &jsonrpc.Response{Error: rpcError(jsonrpcx.CodeInvalidRequest, err.Error(), nil)})
					continue
				}
				cancelled = id
			}
			err := s.up.Write(ctx, msg)
			if cancelled.IsValid() {
				s.abandon(cancelled)
			}
			if err != nil {
				s.logger.Debug("upstream write failed", slog.Any("error", err))
				if errors.Is(err, mcp.ErrConnectionClosed) {
					return
				}
			}
			continue
		}
		req = forUpstream(req)
		callCtx, fwd, rerr := s.admit(ctx, req)
		if rerr != nil {
			s.writeDown(ctx, &jsonrpc.Response{ID: req.ID, Error: rerr})
			continue
		}
		// Calls are written concurrently: a streamable HTTP upstream holds the
		// write until the response starts, and one slow call must not stall
		// the session's other calls or its cancellations. admit bounds the
		// calls pending, and so these goroutines.
		writes.Add(1)
		s.g.writers.Go(func() {
			defer writes.Done()
			if err := s.up.Write(callCtx, fwd); err != nil {
				s.answerFailedWrite(ctx, req, err)
			}
			s.wrote(req.ID)
		})
	}
}

// admit records a call and applies the gateway's checks to it. It returns
// the context and the request to write upstream (req, or with tracing on a
// copy naming the upstream span in params._meta), or an error refusing it.
func (s *session) admit(ctx context.Context, req *jsonrpc.Request) (context.Context, *jsonrpc.Request, *jsonrpc.Error) {
	pc := pendingCall{method: req.Method, start: time.Now()}
	if req.Method == "tools/call" {
		name, ok, err := jsonrpcx.ToolCallName(req.Params)
		if err != nil {
			s.g.metrics.refusalsTotal.WithLabelValues("bad_message").Inc()
			return nil, nil, rpcError(jsonrpcx.CodeInvalidRequest, err.Error(), nil)
		}
		if !ok || name == "" {
			return nil, nil, rpcError(jsonrpc.CodeInvalidParams, "tools/call needs params.name naming the tool", nil)
		}
		pc.tool = name
	}
	if end := s.ended.Load(); end != nil {
		return nil, nil, end.err
	}
	limit := s.g.opts.MaxCallsPerSession
	s.mu.Lock()
	_, dup := s.pending[req.ID]
	// Pings are counted apart, so that a session whose calls are all busy
	// can still tell it is alive.
	busy := len(s.pending) - s.pings
	if req.Method == "ping" {
		busy = s.pings
	}
	s.mu.Unlock()
	if dup {
		return nil, nil, rpcError(jsonrpc.CodeInvalidRequest, fmt.Sprintf("request id %v is already in flight; use a new id", req.ID.Raw()), nil)
	}
	if busy >= limit {
		s.g.metrics.refusalsTotal.WithLabelValues("session_inflight").Inc()
		rerr := rpcError(transport.CodeOverloaded, fmt.Sprintf("this session has %d calls in flight; wait for answers or open another session", busy), nil)
		if pc.tool != "" {
			s.rm.refused.Inc()
			s.auditToolCall(pc, storage.AuditRefused, rerr)
		}
		return nil, nil, rerr
	}
	if pc.tool != "" {
		if rerr := s.admitToolCall(pc.tool); rerr != nil {
			s.rm.refused.Inc()
			s.auditToolCall(pc, storage.AuditRefused, rerr)
			return nil, nil, rerr
		}
		pc.gated = true
	}
	fwd := req
	var traceHeader http.Header
	if s.g.tracer != nil {
		var rerr *jsonrpc.Error
		if fwd, traceHeader, rerr = s.startCall(req, &pc); rerr != nil {
			s.release(pc)
			return nil, nil, rerr
		}
	}
	if pc.tool != "" && s.g.opts.AuditHashPayloads {
		pc.argsSHA256 = argumentsSHA256(req.Params)
	}
	callCtx, cancel := context.WithCancel(ctx)
	if traceHeader != nil {
		callCtx = transport.WithTraceHeader(callCtx, traceHeader)
	}
	pc.cancel = cancel
	pc.sent = time.Now()
	s.mu.Lock()
	if _, dup := s.pending[req.ID]; dup {
		s.mu.Unlock()
		cancel()
		s.release(pc)
		rerr := rpcError(jsonrpc.CodeInvalidRequest, fmt.Sprintf("request id %v is already in flight; use a new id", req.ID.Raw()), nil)
		endCall(pc, "refused", rerr)
		return nil, nil, rerr
	}
	s.pending[req.ID] = pc
	if pc.method == "ping" {
		s.pings++
	}
	s.mu.Unlock()
	return callCtx, fwd, nil
}

// abandon stops tracking the call id a forwarded notifications/cancelled
// names and aborts its upstream write. A response that still arrives is
// dropped, as for any id nothing is waiting on.
func (s *session) abandon(id jsonrpc.ID) {
	pc, ok := s.takePending(id)
	if ok {
		pc.cancel()
		s.release(pc)
		endCall(pc, "cancelled", nil)
		if pc.method == "tools/call" {
			s.auditCancelled(pc)
		}
	}
}

// takePending stops tracking a call and returns what was tracked.
func (s *session) takePending(id jsonrpc.ID) (pendingCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takePendingLocked(id)
}

// takePendingLocked is takePending with s.mu held.
func (s *session) takePendingLocked(id jsonrpc.ID) (pendingCall, bool) {
	pc, ok := s.pending[id]
	if ok {
		delete(s.pending, id)
		if pc.method == "ping" {
			s.pings--
		}
	}
	return pc, ok
}

// release gives back what an admitted call holds.
func (s *session) release(pc pendingCall) {
	if pc.gated {
		s.g.pol.inflight.Release()
	}
}

// wrote notes that a call's upstream write returned; if its response has
// already come (or the call failed or was abandoned), the write's context
// is done with.
func (s *session) wrote(id jsonrpc.ID) {
	s.mu.Lock()
	pc, ok := s.pending[id]
	if ok {
		pc.written = true
		s.pending[id] = pc
	}
	s.mu.Unlock()
	if !ok {
		s.cancelWrite(id)
	}
}

// cancelWrite cancels the write context of a call no longer pending.
func (s *session) cancelWrite(id jsonrpc.ID) {
	s.mu.Lock()
	cancel := s.finished[id]
	delete(s.finished, id)
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// answerFailedWrite turns an upstream write failure into the call's error
// response: the upstream's own JSON-RPC error when it sent one, otherwise an
// error that names the route. A call already answered (a response can
// overtake the end of its own write) or abandoned gets nothing more.
func (s *session) answerFailedWrite(ctx context.Context, req *jsonrpc.Request, err error) {
	s.mu.Lock()
	_, pending := s.pending[req.ID]
	s.mu.Unlock()
	if !pending {
		s.logger.Debug("upstream write ended after its call was answered", slog.String("method", req.Method), slog.Any("error", err))
		return
	}
	if end := s.ended.Load(); end != nil {
		// The write failed because the gateway ended the session.
		s.complete(ctx, &jsonrpc.Response{ID: req.ID, Error: end.err})
		return
	}
	var werr *jsonrpc.Error
	var rerr *jsonrpc.Error
	if cr := s.g.consentRefusal(ctx, sessionSpec{route: s.route, org: s.org, account: s.account}, err); cr != nil {
		// The credential went away (revoked) or can no longer be
		// refreshed: the call carries a fresh authorization URL.
		s.complete(ctx, &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: cr.ref.Code, Message: cr.ref.Message, Data: cr.ref.Data}})
		return
	}
	if errors.As(err, &werr) && werr.Code != transport.CodeSDKRejected {
		rerr = &jsonrpc.Error{Code: werr.Code, Message: werr.Message, Data: werr.Data}
	} else {
		s.g.metrics.refusalsTotal.WithLabelValues("upstream_error").Inc()
		s.rm.upstreamError("request")
		s.logger.Warn("upstream request failed", slog.String("method", req.Method), slog.Any("error", err))
		rerr = rpcError(transport.CodeUpstreamError, fmt.Sprintf("upstream of route %q failed: %v; check the server is up and the route URL is right (`mcpgw route list`)", s.route.Name, err), nil)
	}
	s.complete(ctx, &jsonrpc.Response{ID: req.ID, Error: rerr})
}

// serverToClient forwards upstream messages downstream, for upstream
// connections that are read rather than deliver.
func (s *session) serverToClient(ctx context.Context) {
	for {
		msg, err := s.up.Read(ctx)
		if !s.fromUpstream(ctx, msg, err) {
			return
		}
	}
}

// fromUpstream forwards one message the upstream sent (or handles the
// error reading it); false when the upstream's stream has ended. It may run
// on several goroutines at once.
func (s *session) fromUpstream(ctx context.Context, msg jsonrpc.Message, err error) bool {
	if err != nil {
		if me, ok := transport.AsMessageError(err); ok {
			s.logger.Warn("upstream sent an unusable message; skipped", slog.Any("error", err))
			if !me.ID.IsValid() {
				return true
			}
			// Fail the call the message answered, or tell the upstream
			// its request was refused, rather than leave either waiting.
			s.rm.upstreamError("unusable_message")
			if me.Response {
				s.complete(ctx, &jsonrpc.Response{ID: me.ID, Error: rpcError(transport.CodeUpstreamError,
					fmt.Sprintf("upstream of route %q answered with an unusable message: %s", s.route.Name, me.Message), nil)})
			} else if err := s.up.Write(ctx, &jsonrpc.Response{ID: me.ID, Error: &jsonrpc.Error{Code: me.Code, Message: me.Message}}); err != nil {
				s.logger.Debug("upstream write failed", slog.Any("error", err))
			}
			return true
		}
		if ctx.Err() == nil {
			s.upstreamEnded.Store(true)
			s.logger.Info("upstream ended the session", slog.Any("error", err))
		}
		return false
	}
	s.g.metrics.msgServerToClient.Inc()
	if resp, ok := msg.(*jsonrpc.Response); ok {
		s.complete(ctx, resp)
		return true
	}
	s.writeDown(ctx, msg)
	return true
}

// complete delivers a response for a tracked call and records its outcome.
func (s *session) complete(ctx context.Context, resp *jsonrpc.Response) {
	arrived := time.Now()
	s.mu.Lock()
	pc, ok := s.takePendingLocked(resp.ID)
	if ok && !pc.written {
		// The write is still running; it cancels its context when it returns.
		s.finished[resp.ID] = pc.cancel
	}
	s.mu.Unlock()
	if !ok {
		// Nothing asked for it (or its caller gave up on it): passing it on
		// would let the upstream answer the client's future calls, or a
		// call the gateway refused, in the gateway's name.
		s.rm.unrequested.Inc()
		s.logger.Debug("upstream response to no pending call dropped", slog.Any("id", resp.ID.Raw()))
		return
	}
	if pc.written {
		pc.cancel()
	}
	s.release(pc)
	if pc.method == "tools/list" && resp.Error == nil {
		resp = s.filterTools(resp)
	}
	toolError := false
	traced := "ok" // the outcome the call's spans get
	if resp.Error != nil {
		traced = "error"
	}
	if pc.method == "tools/call" && resp.Error == nil {
		if s.g.opts.AuditHashPayloads && len(resp.Result) > 0 {
			pc.resultSHA256 = hexSHA256(resp.Result)
		}
		var err error
		if toolError, err = jsonrpcx.IsToolError(resp.Result); err != nil {
			resp = s.unusableResult(resp.ID, pc.method, err)
		}
	}
	if pc.method == "tools/call" {
		outcome, label := "ok", "ok"
		switch {
		case resp.Error != nil:
			outcome, label = "error", "error"
		case toolError:
			// The call went through and the tool reported a failure.
			outcome, label = "error", "tool_error"
		}
		s.rm.outcome(label).Inc()
		s.auditToolCall(pc, outcome, resp.Error)
		traced = label
	}
	total := time.Since(pc.start)
	if pc.method == "tools/call" {
		s.rm.call.Observe(total.Seconds())
	}
	waited := arrived.Sub(pc.sent)
	s.rm.upstream.Observe(waited.Seconds())
	s.rm.gateway.Observe((total - waited).Seconds())
	s.writeDown(ctx, resp)
	endCall(pc, traced, resp.Error)
}

// failPending answers every call still outstanding when the session ends.
func (s *session) failPending(ctx context.Context) {
	s.mu.Lock()
	ids := make([]jsonrpc.ID, 0, len(s.pending))
	for id := range s.pending {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	rerr := rpcError(transport.CodeUpstreamError, fmt.Sprintf("upstream of route %q closed the session before answering; open a new session and retry", s.route.Name), nil)
	switch end := s.ended.Load(); {
	case end != nil:
		rerr = end.err
	case s.g.ctx.Err() != nil:
		rerr = rpcError(transport.CodeNodeLost, "this gateway node is shutting down and the call was not answered; retry it through another node if it is safe to repeat", nil)
	case s.upstreamEnded.Load():
		for range ids {
			s.rm.upstreamError("closed")
		}
	}
	for _, id := range ids {
		s.complete(context.WithoutCancel(ctx), &jsonrpc.Response{ID: id, Error: rerr})
	}
}

func (s *session) writeDown(ctx context.Context, msg jsonrpc.Message) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.down.Write(wctx, msg); err != nil {
		s.logger.Debug("downstream write failed", slog.Any("error", err))
	}
}

// filterTools removes from a tools/list result the tools the rules deny
// this session, so callers see only what they may call. A result whose
// tool names the client could read differently from the gateway fails the
// call instead: the rules would have been applied to other names.
func (s *session) filterTools(resp *jsonrpc.Response) *jsonrpc.Response {
	st, err := s.g.policy()
	if err != nil || st.rules.Len() == 0 {
		return resp
	}
	tl, err := jsonrpcx.ListedTools(resp.Result)
	if err != nil {
		return s.unusableResult(resp.ID, "tools/list", err)
	}
	allowed := st.rules.FilterTools(policy.Request{Service: s.claims.Service, Org: s.org, Account: s.account, Route: s.route.Name}, tl.Names)
	kept := 0
	for _, a := range allowed {
		if a {
			kept++
		}
	}
	if kept == len(tl.Names) {
		return resp
	}
	return &jsonrpc.Response{ID: resp.ID, Result: tl.Keep(allowed)}
}

// unusableResult is the error a call gets in place of an upstream result
// the gateway refuses to decide on.
func (s *session) unusableResult(id jsonrpc.ID, method string, err error) *jsonrpc.Response {
	s.g.metrics.refusalsTotal.WithLabelValues("upstream_error").Inc()
	s.rm.upstreamError("bad_result")
	s.logger.Warn("upstream result refused", slog.String("method", method), slog.Any("error", err))
	return &jsonrpc.Response{ID: id, Error: rpcError(transport.CodeUpstreamError,
		fmt.Sprintf("upstream of route %q answered %s with a result the gateway refuses (%v); report it to the server's maintainers", s.route.Name, method, err), nil)}
}
