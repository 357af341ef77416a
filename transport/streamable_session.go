package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// httpSession is one MCP session over streamable HTTP, seen from the proxy
// as an mcp.Connection.
type httpSession struct {
	id        string
	authorize func(*http.Request) error // may this request drive the session
	ephemeral bool
	logger    *slog.Logger

	incoming chan jsonrpc.Message
	done     chan struct{}
	once     sync.Once
	drain    <-chan struct{} // closed when the server drains: GET streams end

	mu         sync.Mutex
	pending    map[jsonrpc.ID]*sseStream // call id → the POST stream awaiting its response
	progress   map[string]*sseStream     // progress token → the POST stream of its request
	open       []*sseStream              // POST streams still awaiting responses, oldest first
	standalone *sseStream                // the GET stream, if connected
	backlog    []jsonrpc.Message         // server-to-client messages with nowhere to go yet
	active     int                       // POST requests being served
	lastUsed   time.Time                 // when the last request or GET stream ended
	lastPOST   time.Time                 // when the last request ended
}

func newHTTPSession(authorize func(*http.Request) error, ephemeral bool, logger *slog.Logger, drain <-chan struct{}) *httpSession {
	now := time.Now()
	return &httpSession{
		authorize: authorize,
		ephemeral: ephemeral,
		logger:    logger,
		drain:     drain,
		incoming:  make(chan jsonrpc.Message, 16),
		done:      make(chan struct{}),
		pending:   make(map[jsonrpc.ID]*sseStream),
		progress:  make(map[string]*sseStream),
		lastUsed:  now,
		lastPOST:  now,
	}
}

// OneShot reports whether the session serves a single POST (a stateless
// request) and ends with it.
func (h *httpSession) OneShot() bool { return h.ephemeral }

// expired says why the session should be closed at now, or "" if it should
// not: "abandoned" when it has had no GET stream and no request for
// abandon, "idle" when it has had no request for idle. A request in flight
// keeps it, however long it takes.
func (h *httpSession) expired(now time.Time, abandon, idle time.Duration) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.active > 0:
		return ""
	case h.standalone == nil && now.Sub(h.lastUsed) > abandon:
		return "abandoned"
	case now.Sub(h.lastPOST) > idle:
		return "idle"
	}
	return ""
}

func (h *httpSession) enter() {
	h.mu.Lock()
	h.active++
	h.mu.Unlock()
}

func (h *httpSession) leave() {
	h.mu.Lock()
	h.active--
	h.lastUsed = time.Now()
	h.lastPOST = h.lastUsed
	h.mu.Unlock()
}

// sseStream is one open HTTP response carrying server-sent events, or,
// for a POST whose one call is answered before anything else is sent on
// it, that answer as a JSON body.
type sseStream struct {
	w         http.ResponseWriter
	mu        sync.Mutex // serialises writes to w
	detached  bool       // the handler is returning, so w must not be used; guarded by mu
	remaining int        // calls not yet answered; guarded by the session's mu
	finished  chan struct{}
	endOnce   sync.Once
	header    http.Header // the POST's request headers, for its calls' trace context
	// unstarted is set while a POST's response has no headers yet: the
	// first message decides between JSON and an event stream. Guarded by
	// mu.
	unstarted bool
	// startLate sends the event stream's headers of a POST whose first
	// message is slow to come; nil when started at once.
	startLate *time.Timer
}

// errStreamDetached is returned when a message is sent to a stream whose
// client has already gone.
var errStreamDetached = errors.New("client stream already ended")

func newSSEStream(w http.ResponseWriter) *sseStream {
	return &sseStream{w: w, finished: make(chan struct{})}
}

// headerWait is how long a POST's response waits for its first message
// before it starts as an event stream anyway: a client (or a proxy in
// between) may give up on a response whose headers never come, while it
// waits on an open stream.
const headerWait = time.Second

// newPOSTStream returns the stream of a POST carrying calls: its headers
// wait for the first message (headerWait at most), so that a lone call
// answered at once gets its answer as one JSON response, written with the
// handler's return, instead of an event stream's headers, event and end,
// each written and flushed on its own.
func newPOSTStream(w http.ResponseWriter) *sseStream {
	st := &sseStream{w: w, finished: make(chan struct{}), unstarted: true}
	st.startLate = time.AfterFunc(headerWait, st.start)
	return st
}

// start sends the event stream's headers if nothing has been sent yet.
func (st *sseStream) start() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.startLocked()
}

func (st *sseStream) startLocked() {
	if st.unstarted && !st.detached {
		st.unstarted = false
		startSSE(st.w)
	}
}

// send writes msg on the stream; last says it answers the stream's last
// outstanding call.
func (st *sseStream) send(msg jsonrpc.Message, last bool) error {
	data, err := encodeMessage(msg)
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.detached {
		return errStreamDetached
	}
	if st.unstarted {
		st.startLate.Stop()
		if _, ok := msg.(*jsonrpc.Response); ok && last {
			st.unstarted = false
			h := st.w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", strconv.Itoa(len(data)))
			st.w.WriteHeader(http.StatusOK)
			_, err := st.w.Write(data)
			return err
		}
		st.startLocked()
	}
	return writeSSE(st.w, "", data)
}

func (st *sseStream) end() { st.endOnce.Do(func() { close(st.finished) }) }

// detach is called by the stream's handler before it returns. A session
// goroutine may hold the stream after the handler stopped waiting for it (the
// client hung up, the session closed); detach waits out a send in progress
// and turns later ones into errors, since a ResponseWriter must not be used
// once its handler has returned. A POST's stream that sent nothing yet
// starts (and so ends) as an empty event stream.
func (st *sseStream) detach() {
	st.mu.Lock()
	if st.startLate != nil {
		st.startLate.Stop()
	}
	st.startLocked()
	st.detached = true
	st.mu.Unlock()
}

func startSSE(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache, no-transform")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func (h *httpSession) servePOST(w http.ResponseWriter, r *http.Request, msgs []jsonrpc.Message) {
	h.enter()
	defer h.leave()

	var st *sseStream
	var calls []jsonrpc.ID
	// A call whose id an earlier element of the batch already uses is
	// answered here and not passed on: two calls under one id cannot both
	// be answered, and the stream would wait for the second forever.
	var dups []jsonrpc.ID
	var seen map[jsonrpc.ID]bool
	if len(msgs) > 1 {
		seen = make(map[jsonrpc.ID]bool, len(msgs))
	}
	forward := msgs[:0:0]
	for i, m := range msgs {
		if req, ok := m.(*jsonrpc.Request); ok && req.IsCall() {
			if seen[req.ID] {
				if dups == nil {
					forward = append(forward, msgs[:i]...)
				}
				dups = append(dups, req.ID)
				continue
			}
			if seen != nil {
				seen[req.ID] = true
			}
			calls = append(calls, req.ID)
		}
		if dups != nil {
			forward = append(forward, m)
		}
	}
	if dups != nil {
		msgs = forward
	}
	if len(calls) > 0 {
		st = newPOSTStream(w)
		st.header = r.Header
		defer st.detach()
		h.mu.Lock()
		for _, id := range calls {
			if _, dup := h.pending[id]; dup {
				h.mu.Unlock()
				WriteHTTPError(w, &HTTPError{Status: http.StatusBadRequest, Code: jsonrpc.CodeInvalidRequest, Message: fmt.Sprintf("request id %v is already in flight on this session; use a new id", id.Raw())})
				return
			}
		}
		for _, m := range msgs {
			req, ok := m.(*jsonrpc.Request)
			if !ok || !req.IsCall() {
				continue
			}
			h.pending[req.ID] = st
			st.remaining++
			if tok, _ := progressToken(req.Method, req.Params); tok != "" { // checkBody refused ambiguous tokens
				h.progress[tok] = st
			}
		}
		// Once in h.open the stream may be handed a server request (it
		// is the newest POST stream).
		h.open = append(h.open, st)
		h.mu.Unlock()
		for _, id := range dups {
			if err := st.send(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest,
				Message: fmt.Sprintf("duplicate id %v in batch: an earlier element uses it; give every call in a batch its own id", id.Raw())}}, false); err != nil {
				h.logger.Debug("client stream write failed", slog.String("session", h.id), slog.Any("error", err))
			}
		}
	}

	for _, m := range msgs {
		select {
		case h.incoming <- m:
		case <-h.done:
			if st == nil {
				WriteHTTPError(w, &HTTPError{Status: http.StatusNotFound, Code: jsonrpc.CodeInvalidRequest, Message: "session closed; send initialize to start a new one"})
			}
			return
		case <-r.Context().Done():
			return
		}
	}
	if st == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	h.flushBacklog()
	select {
	case <-st.finished:
	case <-h.done:
	case <-r.Context().Done():
	}
	h.forget(st)
}

// forget drops every reference to a finished or abandoned POST stream.
func (h *httpSession) forget(st *sseStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, s := range h.pending {
		if s == st {
			delete(h.pending, id)
		}
	}
	for tok, s := range h.progress {
		if s == st {
			delete(h.progress, tok)
		}
	}
	for i, s := range h.open {
		if s == st {
			h.open = append(h.open[:i], h.open[i+1:]...)
			break
		}
	}
}

func (h *httpSession) serveStandalone(w http.ResponseWriter, r *http.Request) {
	select {
	case <-h.drain:
		WriteHTTPError(w, &HTTPError{Status: http.StatusServiceUnavailable, Code: jsonrpc.CodeInternalError, Message: "gateway is shutting down; retry on another node"})
		return
	default:
	}
	st := newSSEStream(w)
	// Held until the headers are out: a message routed to the stream as
	// soon as it is published waits for them instead of racing them.
	st.mu.Lock()
	h.mu.Lock()
	if h.standalone != nil {
		h.mu.Unlock()
		st.mu.Unlock()
		WriteHTTPError(w, &HTTPError{Status: http.StatusConflict, Code: jsonrpc.CodeInvalidRequest, Message: "this session already has an open GET stream; close it before opening another"})
		return
	}
	h.standalone = st
	h.mu.Unlock()
	defer func() {
		st.detach()
		h.mu.Lock()
		if h.standalone == st {
			h.standalone = nil
		}
		h.lastUsed = time.Now()
		h.mu.Unlock()
	}()
	startSSE(w)
	st.mu.Unlock()
	h.flushBacklog()
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-h.drain:
			return
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			st.mu.Lock()
			_, err := io.WriteString(w, ": keepalive\n\n")
			if f, ok := w.(http.Flusher); ok && err == nil {
				f.Flush()
			}
			st.mu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// flushBacklog delivers held server-to-client messages now that a stream
// may be open.
func (h *httpSession) flushBacklog() {
	h.mu.Lock()
	backlog := h.backlog
	h.backlog = nil
	h.mu.Unlock()
	for _, m := range backlog {
		h.Write(context.Background(), m)
	}
}

func (h *httpSession) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case m := <-h.incoming:
		return m, nil
	case <-h.done:
		// A one-POST session is closed as soon as its 202 is sent, when
		// its notifications may still be queued: deliver them first.
		select {
		case m := <-h.incoming:
			return m, nil
		default:
		}
		return nil, mcp.ErrConnectionClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Write routes a message to the client: a response to the POST stream that
// carried its request; a progress notification to the stream of the request
// it reports on; any other server-to-client message to the GET stream, else
// the newest open POST stream, else a bounded backlog.
func (h *httpSession) Write(_ context.Context, msg jsonrpc.Message) error {
	select {
	case <-h.done:
		return mcp.ErrConnectionClosed
	default:
	}
	h.mu.Lock()
	var st *sseStream
	last := false
	switch m := msg.(type) {
	case *jsonrpc.Response:
		st = h.pending[m.ID]
		if st == nil {
			h.mu.Unlock()
			h.logger.Debug("dropping response for a request no stream awaits", slog.Any("id", m.ID.Raw()))
			return nil
		}
		delete(h.pending, m.ID)
		st.remaining--
		last = st.remaining == 0
	case *jsonrpc.Request:
		if m.Method == "notifications/progress" {
			// An ambiguous token from the upstream routes like no token:
			// to the GET stream or the newest POST stream of the session.
			if tok, err := progressToken(m.Method, m.Params); err == nil && tok != "" {
				st = h.progress[tok]
			}
		}
		if st == nil {
			st = h.standalone
		}
		if st == nil && len(h.open) > 0 {
			st = h.open[len(h.open)-1]
		}
		if st == nil {
			if len(h.backlog) >= maxBacklog {
				h.backlog = h.backlog[1:]
				h.logger.Warn("streamable HTTP client has no open stream; dropped the oldest held message", slog.String("session", h.id))
			}
			h.backlog = append(h.backlog, msg)
			h.mu.Unlock()
			return nil
		}
	}
	h.mu.Unlock()
	err := st.send(msg, last)
	if last {
		st.end()
	}
	if err != nil {
		h.logger.Debug("client stream write failed", slog.String("session", h.id), slog.Any("error", err))
	}
	return nil
}

func (h *httpSession) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *httpSession) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

func (h *httpSession) SessionID() string { return h.id }

// progressToken returns the progress token of a message's params as a map
// key (see jsonrpcx.ProgressToken), or "" if there is none.
func progressToken(method string, params json.RawMessage) (string, error) {
	if len(params) == 0 {
		return "", nil
	}
	return jsonrpcx.ProgressToken(method, params)
}
