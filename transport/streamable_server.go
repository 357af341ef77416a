package transport

import (
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
)

// Header names of the streamable HTTP transport.
const (
	HeaderSessionID       = "Mcp-Session-Id"
	HeaderProtocolVersion = "Mcp-Protocol-Version"
)

// StreamableServer serves MCP sessions over streamable HTTP for standard MCP
// clients. Each session is an mcp.Connection handed to the serve function
// its open callback returns (see NewStreamableServer).
//
// It carries both protocol generations: a POST that starts with initialize
// opens a stateful session with an Mcp-Session-Id; a POST without a session
// id that is not initialize (the stateless 2026-07-28 protocol, or a
// stateless legacy client) is served as a one-request session that ends when
// its calls are answered.
type StreamableServer struct {
	openSession func(r *http.Request) (authorize func(*http.Request) error, serve func(mcp.Connection), err error)
	opts        StreamableServerOptions

	mu       sync.Mutex
	sessions map[string]*httpSession // guarded by mu
	closed   bool                    // guarded by mu
	wg       sync.WaitGroup          // session serve goroutines and the janitor
	stopOnce sync.Once
	stop     chan struct{}

	drainOnce sync.Once
	draining  chan struct{} // closed by Drain
}

// StreamableServerOptions configures a StreamableServer. A nil
// *StreamableServerOptions means all defaults.
type StreamableServerOptions struct {
	// Authenticate, when set, checks the credentials of every request that
	// names a session before the session is looked up, so that a revoked
	// or expired credential is refused as such (its *Refusal) even once
	// the session it opened has ended. Default: none.
	Authenticate func(r *http.Request) error
	// MaxMessageBytes caps a POST body. Default DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// IdleTimeout closes a stateful session after this long without
	// requests, even one that keeps its GET stream open. Default 30m.
	IdleTimeout time.Duration
	// AbandonTimeout closes a stateful session whose client seems gone:
	// no GET stream open and no request for this long. Standard clients
	// keep a GET stream open while they live and rarely send DELETE, so a
	// session without either has most likely lost its client; what it holds
	// upstream (for a stdio route, a process) is let go this soon rather
	// than after IdleTimeout. Default DefaultAbandonTimeout.
	AbandonTimeout time.Duration
	// Expired, when set, is called for each session the server closes for
	// want of use, with the reason: "abandoned" or "idle". Default: none.
	Expired func(reason string)
	// Logger receives lifecycle and per-message debug logs. Default:
	// discard.
	Logger *slog.Logger
}

// NewStreamableServer returns a server whose sessions open with open: it
// authenticates and routes a request that starts a session, and returns
// the check every later request on the session (POST, GET, DELETE) must
// pass, which refuses with a *Refusal a request whose credentials could
// not have opened the session, and the function that serves the session
// until it ends; or a *Refusal to refuse. It starts the goroutine that
// closes idle sessions; Close stops it.
func NewStreamableServer(open func(r *http.Request) (authorize func(*http.Request) error, serve func(mcp.Connection), err error), opts *StreamableServerOptions) *StreamableServer {
	s := &StreamableServer{openSession: open, sessions: make(map[string]*httpSession), stop: make(chan struct{}), draining: make(chan struct{})}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.MaxMessageBytes <= 0 {
		s.opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if s.opts.IdleTimeout <= 0 {
		s.opts.IdleTimeout = 30 * time.Minute
	}
	if s.opts.AbandonTimeout <= 0 {
		s.opts.AbandonTimeout = DefaultAbandonTimeout
	}
	if s.opts.Logger == nil {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	s.wg.Add(1)
	go s.janitor()
	return s
}

// DefaultAbandonTimeout is StreamableServerOptions.AbandonTimeout's
// default: twice the longest pause between a standard client's attempts to
// reopen a GET stream (the TypeScript SDK's reconnection delay caps at 30s),
// so a live client that lost its stream gets it back before its session
// goes.
const DefaultAbandonTimeout = time.Minute

// janitor closes sessions no longer used (see expired).
func (s *StreamableServer) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(max(min(s.opts.IdleTimeout/4, s.opts.AbandonTimeout/4, time.Minute), time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			type expiry struct {
				sess   *httpSession
				reason string
			}
			var gone []expiry
			s.mu.Lock()
			for _, sess := range s.sessions {
				if reason := sess.expired(now, s.opts.AbandonTimeout, s.opts.IdleTimeout); reason != "" {
					gone = append(gone, expiry{sess, reason})
				}
			}
			s.mu.Unlock()
			for _, e := range gone {
				if e.sess.closed() {
					continue
				}
				s.opts.Logger.Info("closing unused streamable HTTP session", slog.String("session", e.sess.id), slog.String("reason", e.reason))
				e.sess.Close()
				if s.opts.Expired != nil {
					s.opts.Expired(e.reason)
				}
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
	s.drainOnce.Do(func() { close(s.draining) })
}

// Close ends every session and waits for their serve functions and the
// idle-session goroutine to return. It is safe to call more than once.
func (s *StreamableServer) Close() {
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
	if s.opts.Authenticate != nil {
		if err := s.opts.Authenticate(r); err != nil {
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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxMessageBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteHTTPError(w, &HTTPError{Status: http.StatusRequestEntityTooLarge, Code: jsonrpc.CodeInvalidRequest, Message: tooLarge(s.opts.MaxMessageBytes, nil).Message})
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
	authorize, serve, err := s.openSession(r)
	if err != nil {
		return nil, err
	}
	sess := newHTTPSession(authorize, !stateful, s.opts.Logger, s.draining)
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
