package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// SSEParamSession is the query parameter that names a legacy HTTP+SSE
// session in the URL its endpoint event gives the client to POST to.
const SSEParamSession = "sessionid"

// SSEServer serves MCP sessions over the 2024-11-05 HTTP+SSE transport,
// for clients that speak nothing newer (TypeScript SDK 1.0.x
// SSEClientTransport, the Inspector's --transport sse, the go-sdk's
// SSEClientTransport): a GET opens an event stream whose first event,
// endpoint, names the URL the client POSTs its messages to; the server's
// messages arrive as message events on the stream. The session lives as
// long as the GET: when the client hangs up, the session ends.
type SSEServer struct {
	openSession func(r *http.Request) (authorize func(*http.Request) error, serve func(mcp.Connection), err error)
	opts        SSEServerOptions

	mu       sync.Mutex
	sessions map[string]*sseSession // guarded by mu
	closed   bool                   // guarded by mu; set by Close and Drain
}

// SSEServerOptions configures an SSEServer. A nil *SSEServerOptions means
// all defaults.
type SSEServerOptions struct {
	// MaxMessageBytes caps a POST body, which carries one message.
	// Default DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// KeepAlive is how often an idle event stream gets a comment line, so
	// proxies do not cut it and a vanished client is noticed. Default
	// 30s; negative disables.
	KeepAlive time.Duration
	// Logger receives lifecycle logs. Default: discard.
	Logger *slog.Logger
}

// NewSSEServer returns a server whose sessions open with open, as for
// NewStreamableServer: it authenticates and routes the GET that opens a
// session and returns the check every POST on the session must pass and
// the function that serves the session until it ends; or a *Refusal to
// refuse. New does no I/O and starts no goroutine.
func NewSSEServer(open func(r *http.Request) (authorize func(*http.Request) error, serve func(mcp.Connection), err error), opts *SSEServerOptions) *SSEServer {
	s := &SSEServer{openSession: open, sessions: make(map[string]*sseSession)}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.MaxMessageBytes <= 0 {
		s.opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if s.opts.KeepAlive == 0 {
		s.opts.KeepAlive = 30 * time.Second
	}
	if s.opts.Logger == nil {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	return s
}

// Sessions returns the number of open sessions.
func (s *SSEServer) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Drain ends every session and refuses new ones. An event stream never
// ends by itself, so a server shutting down calls Drain to let
// http.Server.Shutdown return; a legacy client has no way to be told to
// move its session, so it sees its stream end.
func (s *SSEServer) Drain() { s.Close() }

// Close ends every session; their GET handlers return once their serve
// functions have. It is safe to call more than once.
func (s *SSEServer) Close() {
	s.mu.Lock()
	s.closed = true
	all := make([]*sseSession, 0, len(s.sessions))
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.Close()
	}
}

func (s *SSEServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		s.serveGET(w, r)
	case http.MethodPost:
		s.servePOST(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		WriteHTTPError(w, &HTTPError{Status: http.StatusMethodNotAllowed, Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("method %s not allowed on the HTTP+SSE endpoint; GET opens the event stream, POST to the endpoint it names sends a message", r.Method)})
	}
}

func (s *SSEServer) serveGET(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has(SSEParamSession) {
		WriteHTTPError(w, &HTTPError{Status: http.StatusMethodNotAllowed, Code: jsonrpc.CodeInvalidRequest,
			Message: "a session's message endpoint takes POST; GET without ?" + SSEParamSession + "= opens a new session"})
		return
	}
	if !acceptsEventStream(r) && r.Header.Get("Accept") != "" {
		WriteHTTPError(w, &HTTPError{Status: http.StatusNotAcceptable, Code: jsonrpc.CodeInvalidRequest, Message: "GET opens a server-sent event stream: send Accept: text/event-stream"})
		return
	}
	if _, ok := w.(http.Flusher); !ok {
		WriteHTTPError(w, errors.New("response writer cannot flush"))
		return
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		WriteHTTPError(w, &Refusal{Code: CodeOverloaded, RetryAfter: 1, Message: "this gateway node is shutting down; reconnect to another node"})
		return
	}
	authorize, serve, err := s.openSession(r)
	if err != nil {
		WriteHTTPError(w, err)
		return
	}
	sess := &sseSession{w: w, authorize: authorize, id: rand.Text(), incoming: make(chan jsonrpc.Message), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		// serve owns what open took (the session slot, the upstream): run it
		// on a closed connection so it releases them at once.
		sess.Close()
		serve(sess)
		WriteHTTPError(w, &Refusal{Code: CodeOverloaded, RetryAfter: 1, Message: "this gateway node is shutting down; reconnect to another node"})
		return
	}
	s.sessions[sess.id] = sess
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess.id)
		s.mu.Unlock()
	}()

	startSSE(w)
	if err := sess.writeEvent("endpoint", []byte(endpointURL(r, sess.id))); err != nil {
		sess.Close()
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		serve(sess)
	}()
	var tick <-chan time.Time
	if s.opts.KeepAlive > 0 {
		t := time.NewTicker(s.opts.KeepAlive)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-r.Context().Done():
			sess.Close()
		case <-sess.done:
			// The serve function closes the connection when the session
			// ends; it may still be writing its last answers, which need
			// this handler alive.
			<-served
			sess.detach()
			return
		case <-tick:
			if err := sess.writeComment(); err != nil {
				sess.Close()
			}
		}
	}
}

// endpointURL is the URL a session's client POSTs to: this path with the
// session id. An access_token the client put in the query is kept, since
// a client that cannot set headers on the stream cannot on its POSTs
// either.
func endpointURL(r *http.Request, id string) string {
	q := url.Values{}
	if tok := r.URL.Query().Get("access_token"); tok != "" {
		q.Set("access_token", tok)
	}
	q.Set(SSEParamSession, id)
	return (&url.URL{Path: r.URL.Path, RawQuery: q.Encode()}).RequestURI()
}

func (s *SSEServer) servePOST(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get(SSEParamSession)
	if id == "" {
		WriteHTTPError(w, &HTTPError{Status: http.StatusBadRequest, Code: jsonrpc.CodeInvalidRequest,
			Message: "missing ?" + SSEParamSession + "=: open a session with GET first and POST to the endpoint its first event names"})
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		WriteHTTPError(w, &HTTPError{Status: http.StatusUnsupportedMediaType, Code: jsonrpc.CodeInvalidRequest, Message: "POST a JSON-RPC message with Content-Type: application/json"})
		return
	}
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil || sess.isClosed() {
		WriteHTTPError(w, &HTTPError{Status: http.StatusNotFound, Code: jsonrpc.CodeInvalidRequest,
			Message: "unknown or ended session: a session ends with its event stream; open a new one with GET"})
		return
	}
	if err := sess.authorize(r); err != nil {
		WriteHTTPError(w, err)
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, s.opts.MaxMessageBytes+1))
	if err != nil {
		WriteHTTPError(w, &HTTPError{Status: http.StatusBadRequest, Code: jsonrpc.CodeInvalidRequest, Message: "could not read the request body; send it again"})
		return
	}
	if int64(len(data)) > s.opts.MaxMessageBytes {
		me := tooLarge(s.opts.MaxMessageBytes, data)
		WriteHTTPError(w, &HTTPError{Status: http.StatusRequestEntityTooLarge, Code: me.Code, Message: me.Message, ID: me.ID})
		return
	}
	msg, err := decodeSSEPost(data)
	if err != nil {
		var me *MessageError
		errors.As(err, &me)
		WriteHTTPError(w, &HTTPError{Status: http.StatusBadRequest, Code: me.Code, Message: me.Message, ID: me.ID})
		return
	}
	select {
	case sess.incoming <- msg:
		w.WriteHeader(http.StatusAccepted)
	case <-sess.done:
		WriteHTTPError(w, &HTTPError{Status: http.StatusNotFound, Code: jsonrpc.CodeInvalidRequest,
			Message: "the session ended before the message was read; open a new one with GET"})
	case <-r.Context().Done():
	}
}

// decodeSSEPost decodes the body of a POST: one JSON-RPC message, decoded
// as strictly as on every other transport. A batch (a JSON array, which
// 2024-11-05 allowed and later versions dropped) is refused as the other
// transports refuse it. Its errors are *MessageError.
func decodeSSEPost(data []byte) (jsonrpc.Message, error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		return nil, &MessageError{Code: jsonrpc.CodeInvalidRequest, Message: "JSON-RPC batches are not supported; POST one message per request"}
	}
	return decodeMessage(data)
}

// sseSession is one HTTP+SSE session: an mcp.Connection whose reads are
// the POSTs and whose writes are events on the GET's stream.
type sseSession struct {
	id        string
	authorize func(*http.Request) error
	incoming  chan jsonrpc.Message // POSTed messages, handed to Read

	mu       sync.Mutex          // serialises writes to w
	w        http.ResponseWriter // the GET's; guarded by mu
	detached bool                // the GET handler returned, so w must not be used; guarded by mu

	closeOnce sync.Once
	done      chan struct{} // closed by Close
}

func (c *sseSession) writeEvent(name string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.detached {
		return mcp.ErrConnectionClosed
	}
	var b bytes.Buffer
	b.Grow(len(data) + 32)
	b.WriteString("event: ")
	b.WriteString(name)
	// Encoded JSON has no raw line breaks, but a line break in data would
	// end the field early, so each line is a data field of its own.
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		b.WriteString("\ndata: ")
		b.Write(bytes.TrimSuffix(line, []byte("\r")))
	}
	b.WriteString("\n\n")
	if _, err := c.w.Write(b.Bytes()); err != nil {
		return err
	}
	c.w.(http.Flusher).Flush()
	return nil
}

func (c *sseSession) writeComment() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.detached {
		return mcp.ErrConnectionClosed
	}
	if _, err := io.WriteString(c.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	c.w.(http.Flusher).Flush()
	return nil
}

// detach waits out a write in progress and refuses later ones: the GET
// handler is returning, and its ResponseWriter must not be used after.
func (c *sseSession) detach() {
	c.mu.Lock()
	c.detached = true
	c.mu.Unlock()
}

func (c *sseSession) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case msg := <-c.incoming:
		return msg, nil
	case <-c.done:
		return nil, fmt.Errorf("%w: event stream ended", mcp.ErrConnectionClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *sseSession) Write(ctx context.Context, msg jsonrpc.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.isClosed() {
		return mcp.ErrConnectionClosed
	}
	data, err := encodeMessage(msg)
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		// A client that stops reading must not hold the writer past the
		// caller's deadline.
		rc := http.NewResponseController(c.w)
		c.mu.Lock()
		if !c.detached {
			rc.SetWriteDeadline(d)
		}
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			if !c.detached {
				rc.SetWriteDeadline(time.Time{})
			}
			c.mu.Unlock()
		}()
	}
	return c.writeEvent("message", data)
}

func (c *sseSession) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return nil
}

func (c *sseSession) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// SessionID is empty: the session id of this transport is a capability of
// the POST URL, not something the proxy should log or echo.
func (c *sseSession) SessionID() string { return "" }
