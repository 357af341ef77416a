package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/connlimit"
)

// The upstream wire protocols Dial speaks, by the names routes store
// (storage.Transport, whose values are persisted: the one public set of
// transport names).
const (
	transportStreamable = "streamable"
	transportSSE        = "sse"
	transportWebSocket  = "websocket"
	transportStdio      = "stdio"
)

// Upstream describes one connection to make to an MCP server.
type Upstream struct {
	// Transport is the wire protocol, a route's storage.Transport:
	// "streamable" (the default), "sse", "websocket" or "stdio".
	Transport string
	// URL is the endpoint for network kinds.
	URL string
	// Command is the argv of a stdio upstream.
	Command []string
	// Header returns headers to add to every HTTP request made for the
	// session (credentials). It is called per request, so a credential
	// replaced while the session is open is used from the next request on.
	Header func() (http.Header, error)
	// Env is added to the environment of a stdio command. The command
	// never inherits the gateway's own environment beyond PATH and HOME.
	Env []string
	// Client makes the HTTP requests; nil means a client with DialTimeout.
	Client *http.Client
	// MaxMessageBytes caps one message from the upstream. Default
	// DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// Logger receives the upstream's stderr (stdio) and stream events.
	Logger *slog.Logger
	// Route names the route in the errors a caller gets for the upstream's
	// unusable answers. Default "".
	Route string
	// Reauthorize, when set, is called when the upstream answers 401 or
	// 403 to an HTTP request that carried Header's credential, with the
	// status, the WWW-Authenticate values and the headers Header gave
	// that request. retry true: the credential
	// was renewed, and the request is sent once more with Header's new
	// value (requests whose body cannot be replayed are not). A non-nil
	// err replaces the refusal's message in the JSON-RPC error the caller
	// gets (its code too, when err has a RefusalCode() int64 method or is
	// a *Refusal). Default nil: refusals pass as they are.
	Reauthorize func(ctx context.Context, status int, challenge []string, injected http.Header) (retry bool, err error)
	// ParamHeaders, for streamable HTTP, learns from the tools/list results
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
	// Every session to a streamable upstream holds a connection for its
	// event stream, idle nearly all the time: a small write buffer saves
	// 3 KiB a session, and costs nothing on writes (a request body larger
	// than the buffer is written past it).
	t.WriteBufferSize = 1 << 10
	t.MaxResponseHeaderBytes = maxUpstreamHeaderBytes
	t.Proxy = nil // upstream egress is decided by routes, never by environment proxies
	return &http.Client{Transport: &upstreamTransport{Transport: t}}
}

var defaultHTTPClient = NewHTTPClient()

// Adder receives byte counts; a prometheus.Counter is one.
type Adder = connlimit.Adder

// NewCountedHTTPClient is NewHTTPClient whose connections add the bytes
// they read to in and those they write to out (the bytes on the wire, TLS
// included), for the gateway's traffic metrics.
func NewCountedHTTPClient(in, out Adder) *http.Client {
	c := NewHTTPClient()
	t := c.Transport.(*upstreamTransport).Transport
	dial := t.DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return connlimit.CountBytes(conn, in, out), nil
	}
	return c
}

// A Deliverer is an upstream connection that hands each message it
// receives straight to the proxy, on the goroutine that received it (the
// request a call's answer came on, the event stream's reader), instead of
// queueing it for Read. The proxy then needs no goroutine of its own
// reading the connection, and a call's answer reaches the client without
// passing between goroutines.
type Deliverer interface {
	// DeliverTo sends every message received from then on to fn, and the
	// error that ends the connection (what Read would return) once. fn
	// may be called from several goroutines at once; the messages of one
	// stream come in order. Call it once, before the first Write; Read is
	// not used after.
	DeliverTo(fn func(msg jsonrpc.Message, err error))
}

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
	rt := &injectingTransport{base: base.Transport, header: u.Header, reauth: u.Reauthorize, route: u.Route, max: u.MaxMessageBytes,
		logger: u.Logger, legacySSE: u.Transport == transportSSE, params: u.ParamHeaders}
	if rt.base == nil {
		rt.base = http.DefaultTransport
	}
	client := &http.Client{Transport: rt, CheckRedirect: noRedirects}
	if u.Transport == "" || u.Transport == transportStreamable || u.Transport == transportSSE || u.Transport == transportWebSocket {
		pu, err := url.Parse(u.URL)
		if err != nil {
			return nil, fmt.Errorf("upstream URL is not a URL: %w", err)
		}
		if rt.origin, err = originOf(pu); err != nil {
			return nil, err
		}
	}

	switch u.Transport {
	case "", transportStreamable:
		// The gateway's own client: it posts the bytes the proxy forwards
		// and reads answers as raw messages, decoded once, strictly.
		rt.ownClient = true
		return newStreamableConn(u, client, rt), nil
	case transportSSE:
		// The SDK ties the event stream to the Connect context, while ctx
		// here bounds connecting only: give the stream a context of its own
		// that ctx can cancel until Connect returns.
		streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, cancel)
		// The filter in rt has bounded every event already; the SDK's own
		// cap would end the session on one oversized event.
		t := &mcp.SSEClientTransport{Endpoint: u.URL, HTTPClient: client, MaxEventSize: -1}
		conn, err := t.Connect(streamCtx)
		stop()
		if err != nil {
			cancel()
			if ce := rt.endpointErr.Load(); ce != nil {
				return nil, ce
			}
			return nil, err
		}
		return &cancelOnClose{Connection: conn, cancel: cancel}, nil
	case transportWebSocket:
		// The handshake goes through rt like every other upstream request,
		// so the origin check and the credential are applied in one place.
		return dialWebSocket(ctx, u.URL, nil, client, WebSocketOptions{MaxMessageBytes: u.MaxMessageBytes}, decodeUpstream)
	case transportStdio:
		return dialStdio(ctx, u)
	default:
		return nil, fmt.Errorf("unknown upstream transport %q (want streamable, sse, websocket or stdio)", u.Transport)
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
// negotiated protocol version to every upstream request. It is the one
// place that decides where a request may go: it refuses, before sending
// anything, a request to any origin but the route's, so no transport (nor
// an SDK following what an upstream told it) can carry the credential
// elsewhere. It also bounds and checks every answer (see bound).
type injectingTransport struct {
	base    http.RoundTripper
	header  func() (http.Header, error)
	params  *ParamHeaders          // may be nil
	version atomic.Pointer[string] // negotiated MCP protocol version, once known
	// reauth is Upstream.Reauthorize; may be nil.
	reauth func(ctx context.Context, status int, challenge []string, injected http.Header) (bool, error)

	origin    origin // the route's; the only one requests may go to
	route     string // route name, for errors
	max       int64  // cap on one message from the upstream
	logger    *slog.Logger
	legacySSE bool // the upstream speaks legacy SSE: check its endpoint event
	// ownClient is set for the gateway's streamable HTTP client, which sets
	// the Mcp-Param-* headers and bounds and checks answers itself (see
	// streamableConn), so RoundTrip leaves both to it.
	ownClient bool
	// endpointErr is set when a legacy SSE upstream named an endpoint on
	// another origin, so Dial can say so instead of the SDK's generic error.
	endpointErr atomic.Pointer[CrossOriginError]
}

func (t *injectingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.checkOrigin(req.URL, false); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	ctx := req.Context()
	var guard *answerGuard
	if req.Method == http.MethodPost && !t.ownClient {
		ctx, guard = guardRequest(ctx)
	}
	if !t.ownClient { // the own client's requests are made for this one trip
		req = req.Clone(ctx)
	}
	var injected http.Header
	if t.header != nil {
		h, err := t.header()
		var coded interface{ RefusalCode() int64 }
		if err != nil && req.Method == http.MethodPost && errors.As(err, &coded) {
			// A refusal about the credential (it needs a new consent) is
			// the one call's answer, as the upstream's own refusal would
			// be, not the end of the connection.
			if req.Body != nil {
				req.Body.Close()
			}
			resp := &http.Response{StatusCode: http.StatusUnauthorized, Status: "401 Unauthorized", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{}, Body: http.NoBody, Request: req}
			return guard.wrap(t.bound(req, t.explainRefusal(req, resp, nil, err))), nil
		}
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			guard.release()
			return nil, err
		}
		for k, vs := range h {
			req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		}
		injected = h
	}
	if req.Method == http.MethodPost {
		setTraceHeader(req)
	}
	if v := t.version.Load(); v != nil && req.Header.Get(HeaderProtocolVersion) == "" {
		req.Header.Set(HeaderProtocolVersion, *v)
	}
	// The SDK sets Mcp-Method (from the body) on 2026-07-28 requests only,
	// which are the ones that carry Mcp-Param-* headers.
	if t.params != nil && !t.ownClient && req.Method == http.MethodPost && req.Header.Get(HeaderMethod) == "tools/call" && req.GetBody != nil {
		if rb, err := req.GetBody(); err == nil {
			body, err := io.ReadAll(rb)
			rb.Close()
			if err == nil {
				t.params.set(req.Header, body)
			}
		}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		guard.release()
		return resp, err
	}
	var reauthErr error
	if t.reauth != nil && injected != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
		resp, injected, reauthErr = t.reauthorize(req, resp, injected)
	}
	switch {
	case req.Method == http.MethodPost:
		resp = t.explainRefusal(req, resp, injected, reauthErr)
	case resp.StatusCode >= 400:
		resp = t.redactRefusal(resp, injected)
	}
	if t.ownClient {
		return resp, nil
	}
	return guard.wrap(t.bound(req, resp)), nil
}

// reauthorize has t.reauth deal with the upstream refusing the injected
// credential, and sends req once more when it renewed it: the caller's
// call succeeds on the new token as if nothing happened. It returns the
// answer to pass on, the credential it carried, and t.reauth's error.
func (t *injectingTransport) reauthorize(req *http.Request, resp *http.Response, injected http.Header) (*http.Response, http.Header, error) {
	retry, err := t.reauth(req.Context(), resp.StatusCode, resp.Header.Values("WWW-Authenticate"), injected)
	if !retry || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
		return resp, injected, err
	}
	h, err := t.header()
	if err != nil {
		return resp, injected, err
	}
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		if again.Body, err = req.GetBody(); err != nil {
			return resp, injected, nil
		}
	}
	for k, vs := range h {
		again.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	resp2, err := t.base.RoundTrip(again)
	if err != nil {
		// The first refusal stays the answer: it says more than a failed
		// connection would.
		return resp, injected, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp2, h, nil
}

// explainRefusal turns an upstream's non-JSON-RPC error answer to a POST
// into a JSON-RPC error for the request it refused. The SDK treats a bare
// HTTP error as the end of the whole connection; an MCP session should lose
// only the one request (a refused notification is logged and dropped).
//
// The upstream's body never reaches the caller's error as it is: an
// upstream may echo the request, credential included. A JSON-RPC error body
// is passed on with every injected value redacted; anything else becomes
// the status and a fixed message.
func (t *injectingTransport) explainRefusal(req *http.Request, resp *http.Response, injected http.Header, reauthErr error) *http.Response {
	if !explainedStatus(resp.StatusCode) {
		return resp
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	id := requestID(req)
	var rerr *jsonrpc.Error
	var coded interface{ RefusalCode() int64 }
	var ref *Refusal
	if werr, ok := decodeErrorBody(body); reauthErr != nil {
		// What the gateway found out about the credential says more than
		// the upstream's refusal; it holds no secret.
		rerr = &jsonrpc.Error{Code: CodeUpstreamError, Message: reauthErr.Error()}
		switch {
		case errors.As(reauthErr, &ref):
			rerr.Code, rerr.Data = ref.Code, ref.Data
		case errors.As(reauthErr, &coded):
			rerr.Code = coded.RefusalCode()
		}
	} else if ok {
		// Already a JSON-RPC error: only its text and data are the
		// upstream's, and both may echo the credential.
		red := newRedactor(headerValues(injected))
		rerr = &jsonrpc.Error{Code: werr.Code, Message: red.redact(werr.Message)}
		if werr.Data != nil {
			if d := json.RawMessage(red.redact(string(werr.Data))); json.Valid(d) {
				rerr.Data = d
			}
		}
	} else {
		msg := fmt.Sprintf("upstream answered HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			msg += "; the upstream refused the credential the gateway injected for this account (check it with `mcpgw vault list`)"
		default:
			msg += "; the gateway does not pass the upstream's error text on (see the upstream's own logs)"
		}
		rerr = &jsonrpc.Error{Code: CodeUpstreamError, Message: msg}
	}
	if !id.IsValid() {
		resp.StatusCode, resp.Status = http.StatusAccepted, "202 Accepted"
		resp.Body = io.NopCloser(bytes.NewReader(nil))
		resp.ContentLength = 0
		return resp
	}
	data, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: rerr})
	return t.replaceBody(resp, data)
}

// explainedStatus reports the refusals of a POST that explainRefusal
// rewrites: only their bodies have been redacted.
func explainedStatus(code int) bool {
	switch code {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusMethodNotAllowed,
		http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusInternalServerError:
		return true
	}
	return false
}

// redactRefusal keeps of a refused GET (a WebSocket handshake, an event
// stream) only a JSON-RPC error body, redacted of every injected value.
func (t *injectingTransport) redactRefusal(resp *http.Response, injected http.Header) *http.Response {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	var data []byte
	if werr, ok := decodeErrorBody(body); ok {
		red := newRedactor(headerValues(injected))
		data, _ = encodeMessage(&jsonrpc.Response{Error: &jsonrpc.Error{Code: werr.Code, Message: red.redact(werr.Message)}})
	}
	return t.replaceBody(resp, data)
}

// dialStdio starts the route's command with a clean environment plus the
// credential's variables. Its stdout is read as a LineConn, which bounds
// every line by the cap and refuses a bad line alone: the SDK's command
// transport ends the session on the first one.
func dialStdio(ctx context.Context, u Upstream) (mcp.Connection, error) {
	if len(u.Command) == 0 {
		return nil, errors.New("stdio upstream has no command")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cmd := exec.Command(u.Command[0], u.Command[1:]...)
	env := make([]string, 0, 2+len(u.Env))
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	cmd.Env = append(env, u.Env...)
	// A child the server left behind holding stderr open must not keep
	// Close waiting for the end of it.
	cmd.WaitDelay = 2 * time.Second
	cmd.Stderr = &lineLogger{logger: u.Logger, command: u.Command[0], red: newRedactor(envValues(u.Env))}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", u.Command[0], err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", u.Command[0], err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", u.Command[0], err)
	}
	c := newLineConn(&processPipes{cmd: cmd, stdout: stdout, stdin: stdin, terminate: 2 * time.Second},
		bufio.NewReaderSize(stdout, lineBufSize), LineOptions{MaxMessageBytes: u.MaxMessageBytes, decode: decodeUpstream})
	return c, nil
}

// processPipes is a stdio upstream's stdin and stdout as one stream.
// Closing it ends the process as the MCP spec asks: close stdin, wait, then
// SIGTERM, then SIGKILL.
type processPipes struct {
	cmd       *exec.Cmd
	stdout    io.Reader
	stdin     io.WriteCloser
	terminate time.Duration // how long each step waits for the process to exit
}

func (p *processPipes) Read(b []byte) (int, error)  { return p.stdout.Read(b) }
func (p *processPipes) Write(b []byte) (int, error) { return p.stdin.Write(b) }

func (p *processPipes) Close() error {
	p.stdin.Close()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	for _, stop := range []func() error{
		func() error { return nil },
		func() error { return p.cmd.Process.Signal(syscall.SIGTERM) },
		p.cmd.Process.Kill,
	} {
		if stop() != nil {
			continue
		}
		t := time.NewTimer(p.terminate)
		select {
		case err := <-exited:
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return errors.New("stdio upstream did not exit after SIGKILL")
}

// lineLogger logs a stdio upstream's stderr line by line at debug level,
// with the credential's values redacted: a server that prints its
// environment must not put the credential into the gateway's log.
type lineLogger struct {
	logger  *slog.Logger
	command string
	red     *redactor
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
		line := l.red.redact(string(l.buf[:i]))
		l.buf = l.buf[min(i+1, len(l.buf)):]
		l.logger.Debug("upstream stderr", slog.String("command", l.command), slog.String("line", line))
	}
	return len(p), nil
}
