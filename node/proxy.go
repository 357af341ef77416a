package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// maxInFlight bounds the calls one session may have outstanding upstream.
const maxInFlight = 256

// session is one proxied MCP session: a downstream connection, the upstream
// connection opened for it, and what the proxy tracks between the two.
type session struct {
	n         *Node
	id        string
	transport string // downstream transport, for metrics and logs
	route     storage.Route
	org       string
	account   string
	principal string
	logger    *slog.Logger

	down, up mcp.Connection

	mu      sync.Mutex
	pending map[jsonrpc.ID]pendingCall // client→server calls awaiting a response; guarded by mu

	inflight chan struct{} // semaphore of outstanding upstream calls
}

// pendingCall is what the proxy remembers of a call until its response.
type pendingCall struct {
	method string
	tool   string
	start  time.Time
	// cancel ends the upstream write of the call: for streamable HTTP that
	// aborts the request, which is how a stateless upstream learns of a
	// cancellation.
	cancel context.CancelFunc
}

// run pumps messages both ways until either side ends, then closes both and
// answers calls still outstanding so no caller waits forever.
func (s *session) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.n.metrics.sessionsActive.WithLabelValues(s.transport).Inc()
	s.n.metrics.sessionsTotal.WithLabelValues(s.transport).Inc()
	defer s.n.metrics.sessionsActive.WithLabelValues(s.transport).Dec()
	s.logger.Info("session opened")
	start := time.Now()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); defer cancel(); s.clientToServer(ctx) }()
	go func() { defer wg.Done(); defer cancel(); s.serverToClient(ctx) }()
	<-ctx.Done()
	s.up.Close()
	s.failPending(ctx)
	s.down.Close()
	wg.Wait()
	s.logger.Info("session closed", slog.Duration("duration", time.Since(start)))
}

// clientToServer forwards downstream messages upstream.
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
				s.n.metrics.refusalsTotal.WithLabelValues("bad_message").Inc()
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
			return
		}
		s.n.metrics.messagesTotal.WithLabelValues("client_to_server").Inc()
		req, ok := msg.(*jsonrpc.Request)
		if !ok || !req.IsCall() {
			err := s.up.Write(ctx, msg)
			if ok && req.Method == "notifications/cancelled" {
				s.abandon(req)
			}
			if err != nil {
				s.logger.Debug("upstream write failed", slog.Any("error", err))
				if errors.Is(err, mcp.ErrConnectionClosed) {
					return
				}
			}
			continue
		}
		callCtx, rerr := s.admit(ctx, req)
		if rerr != nil {
			s.writeDown(ctx, &jsonrpc.Response{ID: req.ID, Error: rerr})
			continue
		}
		select {
		case s.inflight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		// Calls are written concurrently: a streamable HTTP upstream holds the
		// write until the response starts, and one slow call must not stall
		// the session's other calls or its cancellations.
		writes.Add(1)
		go func() {
			defer writes.Done()
			defer func() { <-s.inflight }()
			if err := s.up.Write(callCtx, req); err != nil {
				s.answerFailedWrite(ctx, req, err)
			}
		}()
	}
}

// admit records a call and applies the gateway's checks to it. It returns
// the context to write the call upstream with, or an error refusing it.
func (s *session) admit(ctx context.Context, req *jsonrpc.Request) (context.Context, *jsonrpc.Error) {
	pc := pendingCall{method: req.Method, start: time.Now()}
	if req.Method == "tools/call" {
		var p struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(req.Params, &p); err != nil || p.Name == "" {
			return nil, rpcError(jsonrpc.CodeInvalidParams, "tools/call needs params.name naming the tool", nil)
		}
		pc.tool = p.Name
	}
	callCtx, cancel := context.WithCancel(ctx)
	pc.cancel = cancel
	s.mu.Lock()
	if _, dup := s.pending[req.ID]; dup {
		s.mu.Unlock()
		cancel()
		return nil, rpcError(jsonrpc.CodeInvalidRequest, fmt.Sprintf("request id %v is already in flight; use a new id", req.ID.Raw()), nil)
	}
	s.pending[req.ID] = pc
	s.mu.Unlock()
	return callCtx, nil
}

// abandon stops tracking the call a forwarded notifications/cancelled names
// and aborts its upstream write. A response that still arrives is forwarded;
// the client ignores it, as the protocol says.
func (s *session) abandon(note *jsonrpc.Request) {
	var p struct {
		RequestID any `json:"requestId"`
	}
	if json.Unmarshal(note.Params, &p) != nil {
		return
	}
	id, err := jsonrpc.MakeID(p.RequestID)
	if err != nil {
		return
	}
	s.mu.Lock()
	pc, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if ok {
		pc.cancel()
	}
}

// answerFailedWrite turns an upstream write failure into the call's error
// response: the upstream's own JSON-RPC error when it sent one, otherwise an
// error that names the route.
func (s *session) answerFailedWrite(ctx context.Context, req *jsonrpc.Request, err error) {
	var werr *jsonrpc.Error
	var rerr *jsonrpc.Error
	if errors.As(err, &werr) && werr.Code != sdkRejectedCode {
		rerr = &jsonrpc.Error{Code: werr.Code, Message: werr.Message, Data: werr.Data}
	} else {
		s.n.metrics.refusalsTotal.WithLabelValues("upstream_error").Inc()
		s.logger.Warn("upstream request failed", slog.String("method", req.Method), slog.Any("error", err))
		rerr = rpcError(CodeUpstreamError, fmt.Sprintf("upstream of route %q failed: %v; check the server is up and the route URL is right (`mcpgw route list`)", s.route.Name, err), nil)
	}
	s.complete(ctx, &jsonrpc.Response{ID: req.ID, Error: rerr})
}

// serverToClient forwards upstream messages downstream.
func (s *session) serverToClient(ctx context.Context) {
	for {
		msg, err := s.up.Read(ctx)
		if err != nil {
			if me, ok := transport.AsMessageError(err); ok {
				s.logger.Warn("upstream sent an unusable message; skipped", slog.Any("error", err))
				if !me.ID.IsValid() {
					continue
				}
				// Fail the call the message answered, or tell the upstream
				// its request was refused, rather than leave either waiting.
				if me.Response {
					s.complete(ctx, &jsonrpc.Response{ID: me.ID, Error: rpcError(CodeUpstreamError,
						fmt.Sprintf("upstream of route %q answered with an unusable message: %s", s.route.Name, me.Message), nil)})
				} else if err := s.up.Write(ctx, &jsonrpc.Response{ID: me.ID, Error: &jsonrpc.Error{Code: me.Code, Message: me.Message}}); err != nil {
					s.logger.Debug("upstream write failed", slog.Any("error", err))
				}
				continue
			}
			if ctx.Err() == nil {
				s.logger.Info("upstream ended the session", slog.Any("error", err))
			}
			return
		}
		s.n.metrics.messagesTotal.WithLabelValues("server_to_client").Inc()
		if resp, ok := msg.(*jsonrpc.Response); ok {
			s.complete(ctx, resp)
			continue
		}
		s.writeDown(ctx, msg)
	}
}

// complete delivers a response for a tracked call and records its outcome.
func (s *session) complete(ctx context.Context, resp *jsonrpc.Response) {
	s.mu.Lock()
	pc, ok := s.pending[resp.ID]
	delete(s.pending, resp.ID)
	s.mu.Unlock()
	if ok {
		pc.cancel()
	}
	if ok && pc.method == "tools/call" {
		outcome := "ok"
		if resp.Error != nil {
			outcome = "error"
		}
		s.n.metrics.callsTotal.WithLabelValues(s.route.Name, outcome).Inc()
		s.n.metrics.callSeconds.WithLabelValues(s.route.Name).Observe(time.Since(pc.start).Seconds())
	}
	s.writeDown(ctx, resp)
}

// failPending answers every call still outstanding when the session ends.
func (s *session) failPending(ctx context.Context) {
	s.mu.Lock()
	ids := make([]jsonrpc.ID, 0, len(s.pending))
	for id := range s.pending {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.complete(context.WithoutCancel(ctx), &jsonrpc.Response{ID: id, Error: rpcError(CodeUpstreamError,
			fmt.Sprintf("upstream of route %q closed the session before answering; open a new session and retry", s.route.Name), nil)})
	}
}

func (s *session) writeDown(ctx context.Context, msg jsonrpc.Message) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.down.Write(wctx, msg); err != nil {
		s.logger.Debug("downstream write failed", slog.Any("error", err))
	}
}
