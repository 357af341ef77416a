package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Upstream transport names, as routes store them.
const (
	KindStreamable = "streamable"
	KindSSE        = "sse"
	KindWebSocket  = "websocket"
	KindStdio      = "stdio"
)

// Upstream describes one connection to make to an MCP server.
type Upstream struct {
	// Kind is the wire protocol: KindStreamable (default), KindSSE,
	// KindWebSocket or KindStdio.
	Kind string
	// URL is the endpoint for network kinds.
	URL string
	// Command is the argv for KindStdio.
	Command []string
	// Header returns headers to add to every HTTP request made for the
	// session (credentials). It is called per request, so a credential
	// replaced while the session is open is used from the next request on.
	Header func() (http.Header, error)
	// Env is added to the environment of a KindStdio command. The command
	// never inherits the gateway's own environment beyond PATH and HOME.
	Env []string
	// Client makes the HTTP requests; nil means a client with DialTimeout.
	Client *http.Client
	// MaxMessageBytes caps one message from the upstream. Default
	// DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// Logger receives the upstream's stderr (stdio) and stream events.
	Logger *slog.Logger
	// ParamHeaders, for KindStreamable, learns from the tools/list results
	// read on the connection and sets the Mcp-Param-* headers of the
	// tools/call POSTs it writes. nil: no Mcp-Param-* headers are sent.
	ParamHeaders *ParamHeaders
}

// DialTimeout bounds establishing a TCP connection to an upstream.
const DialTimeout = 10 * time.Second

// NewHTTPClient returns the HTTP client used for upstreams: bounded dial
// and TLS handshake, no overall timeout (streams are long-lived).
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = DialTimeout
	t.MaxIdleConnsPerHost = 64
	t.Proxy = nil // upstream egress is decided by routes, never by environment proxies
	return &http.Client{Transport: t}
}

var defaultHTTPClient = NewHTTPClient()

// Dial connects to the upstream.
func Dial(ctx context.Context, u Upstream) (mcp.Connection, error) {
	if u.Logger == nil {
		u.Logger = slog.New(slog.DiscardHandler)
	}
	if u.MaxMessageBytes <= 0 {
		u.MaxMessageBytes = DefaultMaxMessageBytes
	}
	base := u.Client
	if base == nil {
		base = defaultHTTPClient
	}
	rt := &injectingTransport{base: base.Transport, header: u.Header, params: u.ParamHeaders}
	if rt.base == nil {
		rt.base = http.DefaultTransport
	}
	client := &http.Client{Transport: rt, CheckRedirect: noRedirects}

	switch u.Kind {
	case "", KindStreamable:
		t := &mcp.StreamableClientTransport{
			Endpoint:             u.URL,
			HTTPClient:           client,
			MaxRetries:           2,
			DisableStandaloneSSE: true, // opened by streamableConn, which sees the handshake
			MaxEventSize:         int(u.MaxMessageBytes),
		}
		conn, err := t.Connect(ctx)
		if err != nil {
			return nil, err
		}
		return newStreamableConn(conn, u, client, rt), nil
	case KindSSE:
		// The SDK ties the event stream to the Connect context, while ctx
		// here bounds connecting only: give the stream a context of its own
		// that ctx can cancel until Connect returns.
		streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, cancel)
		t := &mcp.SSEClientTransport{Endpoint: u.URL, HTTPClient: client, MaxEventSize: int(u.MaxMessageBytes)}
		conn, err := t.Connect(streamCtx)
		stop()
		if err != nil {
			cancel()
			return nil, err
		}
		return &cancelOnClose{Connection: conn, cancel: cancel}, nil
	case KindWebSocket:
		var h http.Header
		if u.Header != nil {
			var err error
			if h, err = u.Header(); err != nil {
				return nil, err
			}
		}
		return DialWebSocket(ctx, u.URL, h, &http.Client{Transport: base.Transport, CheckRedirect: noRedirects}, WebSocketOptions{MaxMessageBytes: u.MaxMessageBytes})
	case KindStdio:
		return dialStdio(ctx, u)
	default:
		return nil, fmt.Errorf("unknown upstream transport %q (want streamable, sse, websocket or stdio)", u.Kind)
	}
}

// cancelOnClose ends a connection's context when it closes.
type cancelOnClose struct {
	mcp.Connection
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.Connection.Close()
	c.cancel()
	return err
}

// noRedirects refuses redirects: a route names the one endpoint the gateway
// may reach, and a redirect would carry the injected credential elsewhere.
func noRedirects(req *http.Request, via []*http.Request) error {
	return fmt.Errorf("upstream redirected to %s; routes must name the final endpoint", req.URL.Redacted())
}

// injectingTransport adds the session's credential headers and the
// negotiated protocol version to every upstream request.
type injectingTransport struct {
	base    http.RoundTripper
	header  func() (http.Header, error)
	params  *ParamHeaders          // may be nil
	version atomic.Pointer[string] // negotiated MCP protocol version, once known
}

func (t *injectingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if t.header != nil {
		h, err := t.header()
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		for k, vs := range h {
			req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		}
	}
	if v := t.version.Load(); v != nil && req.Header.Get(HeaderProtocolVersion) == "" {
		req.Header.Set(HeaderProtocolVersion, *v)
	}
	// The SDK sets Mcp-Method (from the body) on 2026-07-28 requests only,
	// which are the ones that carry Mcp-Param-* headers.
	if t.params != nil && req.Method == http.MethodPost && req.Header.Get(HeaderMethod) == "tools/call" && req.GetBody != nil {
		if rb, err := req.GetBody(); err == nil {
			body, err := io.ReadAll(rb)
			rb.Close()
			if err == nil {
				t.params.set(req.Header, body)
			}
		}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodPost {
		return resp, err
	}
	return t.explainRefusal(req, resp), nil
}

// CodeUpstreamError is the JSON-RPC error code for an upstream that failed
// a request without a JSON-RPC error of its own.
const CodeUpstreamError = -32084

// explainRefusal turns an upstream's non-JSON-RPC error answer to a POST
// into a JSON-RPC error for the request it refused. The SDK treats a bare
// HTTP error as the end of the whole connection; an MCP session should lose
// only the one request (a refused notification is logged and dropped).
func (t *injectingTransport) explainRefusal(req *http.Request, resp *http.Response) *http.Response {
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusMethodNotAllowed,
		http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusInternalServerError:
	default:
		return resp
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if _, ok := decodeErrorBody(body); ok {
		return resp // already a JSON-RPC error the SDK passes on
	}
	var id jsonrpc.ID
	if req.GetBody != nil {
		if rb, err := req.GetBody(); err == nil {
			data, _ := io.ReadAll(io.LimitReader(rb, 16<<20))
			rb.Close()
			if msg, err := jsonrpc.DecodeMessage(data); err == nil {
				if r, ok := msg.(*jsonrpc.Request); ok {
					id = r.ID
				}
			}
		}
	}
	detail := strings.TrimSpace(string(body))
	if len(detail) > 200 {
		detail = detail[:200] + "…"
	}
	msg := fmt.Sprintf("upstream answered HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if detail != "" {
		msg += ": " + detail
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg += "; the upstream refused the credential the gateway injected for this account (check it with `mcpgw vault list`)"
	}
	if !id.IsValid() {
		resp.StatusCode, resp.Status = http.StatusAccepted, "202 Accepted"
		resp.Body = io.NopCloser(bytes.NewReader(nil))
		resp.ContentLength = 0
		return resp
	}
	data, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: CodeUpstreamError, Message: msg}})
	resp.Header = resp.Header.Clone()
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Del("Content-Length")
	resp.ContentLength = int64(len(data))
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp
}

// streamableConn wraps the go-sdk's streamable client connection used at the
// message level. The SDK learns the negotiated protocol version and opens the
// standalone GET stream only for its own typed sessions; a proxy must do both
// itself, from the messages it carries.
type streamableConn struct {
	sdk    mcp.Connection
	u      Upstream
	client *http.Client
	rt     *injectingTransport

	in     chan jsonrpc.Message
	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc
	failed chan struct{}
	err    error // set before failed is closed
	once   sync.Once
	wg     sync.WaitGroup

	mu        sync.Mutex
	initID    jsonrpc.ID              // id of the initialize request, guarded by mu
	getStart  bool                    // standalone stream started, guarded by mu
	toolLists map[jsonrpc.ID]struct{} // tools/list calls awaiting their response, guarded by mu
}

func newStreamableConn(sdk mcp.Connection, u Upstream, client *http.Client, rt *injectingTransport) *streamableConn {
	c := &streamableConn{
		sdk: sdk, u: u, client: client, rt: rt,
		in:     make(chan jsonrpc.Message, 16),
		failed: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.readLoop()
	return c
}

func (c *streamableConn) readLoop() {
	defer c.wg.Done()
	ctx := c.ctx
	for {
		msg, err := c.sdk.Read(ctx)
		if err != nil {
			c.err = err
			close(c.failed)
			return
		}
		if resp, ok := msg.(*jsonrpc.Response); ok {
			c.observeResponse(resp)
		}
		select {
		case c.in <- msg:
		case <-ctx.Done():
			return
		}
	}
}

func (c *streamableConn) observeResponse(resp *jsonrpc.Response) {
	c.mu.Lock()
	isInit := c.initID.IsValid() && resp.ID == c.initID
	_, isToolList := c.toolLists[resp.ID]
	delete(c.toolLists, resp.ID)
	c.mu.Unlock()
	if isToolList && resp.Error == nil && c.u.ParamHeaders != nil {
		c.u.ParamHeaders.learn(resp.Result)
	}
	if !isInit || resp.Error != nil {
		return
	}
	var res struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if json.Unmarshal(resp.Result, &res) == nil && res.ProtocolVersion != "" {
		v := res.ProtocolVersion
		c.rt.version.Store(&v)
	}
}

func (c *streamableConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case m := <-c.in:
		return m, nil
	case <-c.ctx.Done():
		return nil, mcp.ErrConnectionClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.failed:
		// Deliver what arrived before the failure first.
		select {
		case m := <-c.in:
			return m, nil
		default:
		}
		return nil, c.err
	}
}

func (c *streamableConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	req, isReq := msg.(*jsonrpc.Request)
	if isReq && req.Method == "initialize" {
		c.mu.Lock()
		c.initID = req.ID
		c.mu.Unlock()
	}
	if isReq && req.Method == "tools/list" && req.IsCall() && c.u.ParamHeaders != nil {
		c.mu.Lock()
		if c.toolLists == nil {
			c.toolLists = make(map[jsonrpc.ID]struct{})
		}
		if len(c.toolLists) < maxInFlightToolLists {
			c.toolLists[req.ID] = struct{}{}
		}
		c.mu.Unlock()
	}
	if err := c.sdk.Write(ctx, msg); err != nil {
		return err
	}
	if isReq && req.Method == "notifications/initialized" {
		c.startStandalone()
	}
	return nil
}

// maxInFlightToolLists bounds the tools/list calls a connection watches
// for the tool schemas of their responses.
const maxInFlightToolLists = 64

// startStandalone opens the GET stream for server-initiated messages, once,
// for protocol versions that have it (before 2026-07-28).
func (c *streamableConn) startStandalone() {
	v := c.rt.version.Load()
	if v == nil || *v >= "2026-07-28" {
		return
	}
	c.mu.Lock()
	started := c.getStart
	c.getStart = true
	c.mu.Unlock()
	if started {
		return
	}
	c.wg.Add(1)
	go c.standaloneLoop()
}

func (c *streamableConn) standaloneLoop() {
	defer c.wg.Done()
	ctx := c.ctx
	lastID := ""
	for attempt := 0; attempt < 5; {
		got, retry := c.standaloneOnce(ctx, &lastID)
		if !retry || ctx.Err() != nil {
			return
		}
		if got {
			attempt = 0
		} else {
			attempt++
		}
		select {
		case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
	c.u.Logger.Warn("upstream event stream kept failing; server-initiated notifications are no longer received", slog.String("upstream", c.u.URL))
}

// standaloneOnce runs one GET stream. It reports whether any event arrived
// and whether reconnecting makes sense.
func (c *streamableConn) standaloneOnce(ctx context.Context, lastID *string) (got, retry bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.u.URL, nil)
	if err != nil {
		return false, false
	}
	req.Header.Set("Accept", "text/event-stream")
	if sid := c.sdk.SessionID(); sid != "" {
		req.Header.Set(HeaderSessionID, sid)
	}
	if *lastID != "" {
		req.Header.Set("Last-Event-ID", *lastID)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return false, true
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// 405 (no stream offered) and other 4xx: the server does not want one.
		return false, resp.StatusCode >= 500
	}
	r := newSSEReader(resp.Body, int(c.u.MaxMessageBytes))
	for {
		ev, err := r.Next()
		if err != nil {
			// The stream ended (cleanly or not): reconnect and resume.
			return got, true
		}
		if ev.ID != "" {
			*lastID = ev.ID
		}
		if ev.Name != "" && ev.Name != "message" {
			continue
		}
		msg, err := jsonrpc.DecodeMessage(ev.Data)
		if err != nil {
			c.u.Logger.Warn("upstream sent a malformed event; skipped", slog.String("upstream", c.u.URL), slog.Any("error", err))
			continue
		}
		got = true
		select {
		case c.in <- msg:
		case <-ctx.Done():
			return got, false
		}
	}
}

func (c *streamableConn) Close() error {
	var err error
	c.once.Do(func() {
		c.cancel()
		err = c.sdk.Close()
		c.wg.Wait()
	})
	return err
}

func (c *streamableConn) SessionID() string { return c.sdk.SessionID() }

// dialStdio starts the route's command with a clean environment plus the
// credential's variables.
func dialStdio(ctx context.Context, u Upstream) (mcp.Connection, error) {
	if len(u.Command) == 0 {
		return nil, errors.New("stdio upstream has no command")
	}
	cmd := exec.Command(u.Command[0], u.Command[1:]...)
	env := make([]string, 0, 2+len(u.Env))
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	cmd.Env = append(env, u.Env...)
	cmd.Stderr = &lineLogger{logger: u.Logger, command: u.Command[0]}
	t := &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
	conn, err := t.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", u.Command[0], err)
	}
	return conn, nil
}

// lineLogger logs a stdio upstream's stderr line by line at debug level.
type lineLogger struct {
	logger  *slog.Logger
	command string
	mu      sync.Mutex
	buf     []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > 8<<10 { // a runaway line: log what we have
				i = len(l.buf)
			} else {
				break
			}
		}
		line := string(l.buf[:i])
		l.buf = l.buf[min(i+1, len(l.buf)):]
		l.logger.Debug("upstream stderr", slog.String("command", l.command), slog.String("line", line))
	}
	return len(p), nil
}
