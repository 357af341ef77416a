package transport

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// Header names of the streamable HTTP transport.
const (
	HeaderSessionID       = "Mcp-Session-Id"
	HeaderProtocolVersion = "Mcp-Protocol-Version"
)

// StreamableServer serves MCP sessions over streamable HTTP for standard MCP
// clients. Each session is an mcp.Connection handed to the Open callback's
// serve function.
//
// It carries both protocol generations: a POST that starts with initialize
// opens a stateful session with an Mcp-Session-Id; a POST without a session
// id that is not initialize (the stateless 2026-07-28 protocol, or a
// stateless legacy client) is served as a one-request session that ends when
// its calls are answered.
type StreamableServer struct {
	// Open authenticates and routes a request that starts a session. It
	// returns the check every later request on the session (POST, GET,
	// DELETE) must pass, which refuses with an *HTTPError a request whose
	// credentials could not have opened the session, and the function that
	// serves the session until it ends; or an *HTTPError to refuse.
	Open func(r *http.Request) (authorize func(*http.Request) error, serve func(mcp.Connection), err error)
	// Authenticate, when set, checks the credentials of every request that
	// names a session before the session is looked up, so that a revoked
	// or expired credential is refused as such (its *HTTPError) even once
	// the session it opened has ended.
	Authenticate func(r *http.Request) error
	// MaxMessageBytes caps a POST body. Default DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// IdleTimeout closes a stateful session after this long without
	// requests or open streams. Default 30m.
	IdleTimeout time.Duration
	// Logger receives lifecycle and per-message debug logs.
	Logger *slog.Logger

	mu       sync.Mutex
	sessions map[string]*httpSession // guarded by mu
	closed   bool                    // guarded by mu
	wg       sync.WaitGroup          // session serve goroutines and the janitor
	stopOnce sync.Once
	stop     chan struct{}

	drainOnce sync.Once
	draining  chan struct{} // closed by Drain
}

func (s *StreamableServer) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == nil {
		s.sessions = make(map[string]*httpSession)
		s.stop = make(chan struct{})
		s.draining = make(chan struct{})
		if s.MaxMessageBytes <= 0 {
			s.MaxMessageBytes = DefaultMaxMessageBytes
		}
		if s.IdleTimeout <= 0 {
			s.IdleTimeout = 30 * time.Minute
		}
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		s.wg.Add(1)
		go s.janitor()
	}
}

// janitor closes idle sessions.
func (s *StreamableServer) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(min(s.IdleTimeout/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			var idle []*httpSession
			s.mu.Lock()
			for _, sess := range s.sessions {
				if sess.idleSince(now) > s.IdleTimeout {
					idle = append(idle, sess)
				}
			}
			s.mu.Unlock()
			for _, sess := range idle {
				s.Logger.Info("closing idle streamable HTTP session", slog.String("session", sess.id))
				sess.Close()
			}
		}
	}
}

// Sessions returns the number of live stateful sessions.
func (s *StreamableServer) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Drain ends the sessions' GET event streams and refuses new ones, leaving
// the sessions open. A GET stream never finishes by itself, so a server
// shutting down calls Drain to let http.Server.Shutdown wait only for the
// requests that will (calls in flight).
func (s *StreamableServer) Drain() {
	s.init()
	s.drainOnce.Do(func() { close(s.draining) })
}

// Close ends every session and waits for their serve functions to return.
func (s *StreamableServer) Close() {
	s.init()
	s.stopOnce.Do(func() { close(s.stop) })
	s.mu.Lock()
	s.closed = true
	all := make([]*httpSession, 0, len(s.sessions))
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.Close()
	}
	s.wg.Wait()
}

func (s *StreamableServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	id := r.Header.Get(HeaderSessionID)
	switch r.Method {
	case http.MethodPost:
		s.servePOST(w, r, id)
	case http.MethodGet:
		if !acceptsEventStream(r) {
			WriteHTTPError(w, &HTTPError{Status: http.StatusNotAcceptable, Code: jsonrpc.CodeInvalidRequest, Message: "GET opens a server-sent event stream: send Accept: text/event-stream"})
			return
		}
		sess, ok := s.lookup(w, r, id)
		if !ok {
			return
		}
		sess.serveStandalone(w, r)
	case http.MethodDelete:
		sess, ok := s.lookup(w, r, id)
		if !ok {
			return
		}
		sess.Close()
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		WriteHTTPError(w, &HTTPError{Status: http.StatusMethodNotAllowed, Code: jsonrpc.CodeInvalidRequest, Message: fmt.Sprintf("method %s not allowed; use POST for messages, GET for the event stream, DELETE to end a session", r.Method)})
	}
}

// lookup finds the session named by id and checks the caller may drive it.
func (s *StreamableServer) lookup(w http.ResponseWriter, r *http.Request, id string) (*httpSession, bool) {
	if id == "" {
		WriteHTTPError(w, &HTTPError{Status: http.StatusBadRequest, Code: jsonrpc.CodeInvalidRequest, Message: "missing Mcp-Session-Id header; start a session with an initialize POST first"})
		return nil, false
	}
	if s.Authenticate != nil {
		if err := s.Authenticate(r); err != nil {
			WriteHTTPError(w, err)
			return nil, false
		}
	}
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil || sess.closed() {
		// The spec's signal for "start a new session". A closed session
		// stays in the map until its serve function returns.
		WriteHTTPError(w, &HTTPError{Status: http.StatusNotFound, Code: jsonrpc.CodeInvalidRequest, Message: "unknown or expired session; send initialize to start a new one"})
		return nil, false
	}
	if err := sess.authorize(r); err != nil {
		WriteHTTPError(w, err)
		return nil, false
	}
	return sess, true
}

func (s *StreamableServer) servePOST(w http.ResponseWriter, r *http.Request, id string) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		WriteHTTPError(w, &HTTPError{Status: http.StatusUnsupportedMediaType, Code: jsonrpc.CodeInvalidRequest, Message: "POST body must be Content-Type: application/json"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxMessageBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteHTTPError(w, &HTTPError{Status: http.StatusRequestEntityTooLarge, Code: jsonrpc.CodeInvalidRequest, Message: tooLarge(s.MaxMessageBytes, nil).Message})
			return
		}
		WriteHTTPError(w, &HTTPError{Status: http.StatusBadRequest, Code: jsonrpc.CodeInvalidRequest, Message: "could not read request body"})
		return
	}
	msgs, err := decodeBody(body)
	if err != nil {
		he := &HTTPError{Status: http.StatusBadRequest, Code: jsonrpc.CodeParseError, Message: err.Error()}
		if me, ok := AsMessageError(err); ok {
			he.Code = me.Code
			if !me.Response {
				he.ID = me.ID
			}
		}
		WriteHTTPError(w, he)
		return
	}
	if err := checkBody(r.Header, msgs); err != nil {
		WriteHTTPError(w, err)
		return
	}

	var sess *httpSession
	if id != "" {
		var ok bool
		if sess, ok = s.lookup(w, r, id); !ok {
			return
		}
	} else {
		stateful := false
		for _, m := range msgs {
			if req, ok := m.(*jsonrpc.Request); ok && req.Method == "initialize" {
				stateful = true
			}
		}
		if sess, err = s.open(r, stateful); err != nil {
			WriteHTTPError(w, err)
			return
		}
		if stateful {
			w.Header().Set(HeaderSessionID, sess.id)
		}
	}
	sess.servePOST(w, r, msgs)
	if sess.ephemeral {
		sess.Close()
	}
}

// open starts a new session: stateful ones get a fresh id and live until
// closed; ephemeral ones serve one POST.
func (s *StreamableServer) open(r *http.Request, stateful bool) (*httpSession, error) {
	authorize, serve, err := s.Open(r)
	if err != nil {
		return nil, err
	}
	sess := newHTTPSession(authorize, !stateful, s.Logger, s.draining)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &HTTPError{Status: http.StatusServiceUnavailable, Code: jsonrpc.CodeInternalError, Message: "gateway is shutting down; retry on another node"}
	}
	if stateful {
		sess.id = rand.Text() // 128+ bits from crypto/rand
		s.sessions[sess.id] = sess
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		serve(sess)
		sess.Close()
		if stateful {
			s.mu.Lock()
			delete(s.sessions, sess.id)
			s.mu.Unlock()
		}
	}()
	return sess, nil
}

// decodeBody parses a POST body: one JSON-RPC message or a batch.
func decodeBody(body []byte) ([]jsonrpc.Message, error) {
	trimmed := strings.TrimSpace(string(body))
	if trimmed == "" {
		return nil, fmt.Errorf("empty POST body; send a JSON-RPC message")
	}
	if trimmed[0] != '[' {
		msg, err := decodeMessage(body)
		if err != nil {
			return nil, err
		}
		return []jsonrpc.Message{msg}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, fmt.Errorf("malformed JSON-RPC batch: %v", err)
	}
	if len(raws) == 0 {
		return nil, fmt.Errorf("empty JSON-RPC batch; send at least one message")
	}
	msgs := make([]jsonrpc.Message, 0, len(raws))
	for i, raw := range raws {
		msg, err := decodeMessage(raw)
		if err != nil {
			if me, ok := AsMessageError(err); ok {
				return nil, &MessageError{Code: me.Code, Message: fmt.Sprintf("batch element %d: %s", i, me.Message)}
			}
			return nil, fmt.Errorf("batch element %d: %v", i, err)
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
			if mt == "text/event-stream" || mt == "*/*" || mt == "text/*" {
				return true
			}
		}
	}
	return false
}

// maxBacklog bounds server-to-client messages held while the client has no
// open stream to receive them.
const maxBacklog = 256

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
	active     int                       // requests being served
	lastUsed   time.Time
}

func newHTTPSession(authorize func(*http.Request) error, ephemeral bool, logger *slog.Logger, drain <-chan struct{}) *httpSession {
	return &httpSession{
		authorize: authorize,
		ephemeral: ephemeral,
		logger:    logger,
		drain:     drain,
		incoming:  make(chan jsonrpc.Message, 16),
		done:      make(chan struct{}),
		pending:   make(map[jsonrpc.ID]*sseStream),
		progress:  make(map[string]*sseStream),
		lastUsed:  time.Now(),
	}
}

func (h *httpSession) idleSince(now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.active > 0 {
		return 0
	}
	return now.Sub(h.lastUsed)
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
	h.mu.Unlock()
}

// sseStream is one open HTTP response carrying server-sent events.
type sseStream struct {
	w         http.ResponseWriter
	mu        sync.Mutex // serialises writes to w
	detached  bool       // the handler is returning, so w must not be used; guarded by mu
	remaining int        // calls not yet answered; guarded by the session's mu
	finished  chan struct{}
	endOnce   sync.Once
}

// errStreamDetached is returned when a message is sent to a stream whose
// client has already gone.
var errStreamDetached = errors.New("client stream already ended")

func newSSEStream(w http.ResponseWriter) *sseStream {
	return &sseStream{w: w, finished: make(chan struct{})}
}

func (st *sseStream) send(msg jsonrpc.Message) error {
	data, err := encodeMessage(msg)
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.detached {
		return errStreamDetached
	}
	return writeSSE(st.w, "", data)
}

func (st *sseStream) end() { st.endOnce.Do(func() { close(st.finished) }) }

// detach is called by the stream's handler before it returns. A session
// goroutine may hold the stream after the handler stopped waiting for it (the
// client hung up, the session closed); detach waits out a send in progress
// and turns later ones into errors, since a ResponseWriter must not be used
// once its handler has returned.
func (st *sseStream) detach() {
	st.mu.Lock()
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
		st = newSSEStream(w)
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
		h.open = append(h.open, st)
		h.mu.Unlock()
		startSSE(w)
		for _, id := range dups {
			if err := st.send(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest,
				Message: fmt.Sprintf("duplicate id %v in batch: an earlier element uses it; give every call in a batch its own id", id.Raw())}}); err != nil {
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
	h.mu.Lock()
	if h.standalone != nil {
		h.mu.Unlock()
		WriteHTTPError(w, &HTTPError{Status: http.StatusConflict, Code: jsonrpc.CodeInvalidRequest, Message: "this session already has an open GET stream; close it before opening another"})
		return
	}
	h.standalone = st
	h.active++
	h.mu.Unlock()
	defer func() {
		st.detach()
		h.mu.Lock()
		if h.standalone == st {
			h.standalone = nil
		}
		h.active--
		h.lastUsed = time.Now()
		h.mu.Unlock()
	}()
	startSSE(w)
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
	err := st.send(msg)
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
