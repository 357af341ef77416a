package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// streamableConn is the gateway's streamable HTTP client connection to an
// upstream, at the message level: both the 2025-11-25 session protocol
// (Mcp-Session-Id, a standalone GET stream, DELETE on close) and the
// 2026-07-28 stateless one (the protocol version and routing headers on
// every POST, from the message itself).
//
// It posts the message the proxy forwards, written once around the params
// as received, and reads each answer (a JSON body or an event stream) as
// raw messages that are checked (injectingTransport) and then decoded once,
// by the strict decoder. The go-sdk's client decoded every outgoing message
// again to set its headers and every answer with a fresh 32 KiB decoder,
// and ran a goroutine per POST; a proxy needs none of that.
type streamableConn struct {
	u      Upstream
	client *http.Client // requests go through rt
	rt     *injectingTransport

	in chan upstreamItem
	// push, when set (DeliverTo), receives what in would; set before the
	// first Write, so before any goroutine reads it.
	push   func(jsonrpc.Message, error)
	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc
	failed chan struct{}
	err    error // set before failed is closed
	fail1  sync.Once
	once   sync.Once
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool                    // Close has begun: no goroutine may start; guarded by mu
	sessionID string                  // the upstream's Mcp-Session-Id, once it named one; guarded by mu
	gone      bool                    // the upstream forgot the session (404): no DELETE; guarded by mu
	initID    jsonrpc.ID              // id of the initialize request, guarded by mu
	getStart  bool                    // standalone stream started, guarded by mu
	toolLists map[jsonrpc.ID]struct{} // tools/list calls awaiting their response, guarded by mu
}

// upstreamItem is what Read returns next: a message, or a MessageError for
// one the strict decoder refused.
type upstreamItem struct {
	msg jsonrpc.Message
	err error
}

func newStreamableConn(u Upstream, client *http.Client, rt *injectingTransport) *streamableConn {
	c := &streamableConn{
		u: u, client: client, rt: rt,
		in:     make(chan upstreamItem, 16),
		failed: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// fail ends the connection for every Read (or the DeliverTo function)
// with err.
func (c *streamableConn) fail(err error) {
	c.fail1.Do(func() {
		c.err = err
		close(c.failed)
		if c.push != nil {
			c.push(nil, err)
		}
	})
}

// DeliverTo implements Deliverer.
func (c *streamableConn) DeliverTo(fn func(jsonrpc.Message, error)) { c.push = fn }

func (c *streamableConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case it := <-c.in:
		return it.msg, it.err
	case <-c.ctx.Done():
		return nil, mcp.ErrConnectionClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.failed:
		// Deliver what arrived before the failure first.
		select {
		case it := <-c.in:
			return it.msg, it.err
		default:
		}
		return nil, c.err
	}
}

// deliver hands one message the upstream sent to Read (or the DeliverTo
// function); false when the connection or ctx ended first.
func (c *streamableConn) deliver(ctx context.Context, it upstreamItem) bool {
	if resp, ok := it.msg.(*jsonrpc.Response); ok {
		c.observeResponse(resp)
	}
	if c.push != nil {
		if c.ctx.Err() != nil || ctx.Err() != nil {
			return false
		}
		c.push(it.msg, it.err)
		return true
	}
	select {
	case c.in <- it:
		return true
	case <-c.ctx.Done():
	case <-ctx.Done():
	}
	return false
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

// decodeChecked decodes a message injectingTransport has checked already
// (see checkUpstreamMessage), strictly.
func decodeChecked(data []byte) upstreamItem {
	msg, err := decodeMessage(data)
	if err != nil {
		return upstreamItem{err: err}
	}
	return upstreamItem{msg: msg}
}

func (c *streamableConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	select {
	case <-c.failed:
		return c.err
	default:
	}
	if c.ctx.Err() != nil {
		return mcp.ErrConnectionClosed
	}
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
	if isReq && req.Method == "notifications/initialized" {
		return c.writeInitialized(ctx, msg)
	}
	return c.post(ctx, msg)
}

// post sends one message and, for a call, reads its answer to the end.
// It returns once the answer has been handed to Read (or the call's
// context ended): the proxy writes every call from a goroutine of its
// own, so waiting here costs nothing a goroutine per POST would not.
func (c *streamableConn) post(ctx context.Context, msg jsonrpc.Message) error {
	body, err := appendMessage(nil, msg)
	if err != nil {
		return fmt.Errorf("encode the message for the upstream: %w", err)
	}
	var call *jsonrpc.Request
	if r, ok := msg.(*jsonrpc.Request); ok && r.IsCall() {
		call = r
	}
	// On a connection the gateway keeps, read on this goroutine (see
	// keptConns).
	hreq, err := http.NewRequestWithContext(withConnUse(ctx, useKeptConn), http.MethodPost, c.u.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	h := hreq.Header
	h["Content-Type"] = contentTypeJSON
	h["Accept"] = acceptBoth
	c.setHeaders(h, msg)
	resp, err := c.client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The caller's error names the route, not its URL, which may carry
		// a key in its query.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("upstream request failed: %w", err)
	}
	if err := c.checkStatus(resp); err != nil {
		resp.Body.Close()
		return err
	}
	if call == nil {
		// An accepted notification or response has no body (202); one
		// that came with one anyway is not read.
		resp.Body.Close()
		return nil
	}
	switch mediaType(resp.Header.Get("Content-Type")) {
	case "application/json":
		data, err := c.rt.checkedJSON(hreq, resp.Body)
		resp.Body.Close()
		if err != nil {
			if ctx.Err() != nil {
				return nil // sent: the call is answered by whoever ended it
			}
			return fmt.Errorf("read the upstream's answer: %w", err)
		}
		c.deliver(ctx, decodeChecked(data))
		return nil
	case "text/event-stream":
		return c.readCallStream(ctx, hreq, resp, call)
	default:
		resp.Body.Close()
		return fmt.Errorf("upstream answered with Content-Type %q, neither application/json nor text/event-stream; check the route points at a streamable HTTP MCP server",
			clipHeader(resp.Header.Get("Content-Type")))
	}
}

var (
	contentTypeJSON = []string{"application/json"}
	acceptBoth      = []string{"application/json, text/event-stream"}
	acceptSSE       = []string{"text/event-stream"}
)

// setHeaders sets the session, protocol version and routing headers of a
// POST carrying msg. The version is the one the message names in
// params._meta (2026-07-28), else the one initialize negotiated; from
// 2026-07-28 on, Mcp-Method and Mcp-Name (and the Mcp-Param-* headers of a
// tools/call) repeat the body, read from it in one pass by the strict
// decoder's rules, so they cannot disagree with what the upstream reads.
func (c *streamableConn) setHeaders(h http.Header, msg jsonrpc.Message) {
	c.mu.Lock()
	sid := c.sessionID
	c.mu.Unlock()
	if sid != "" {
		h[HeaderSessionID] = []string{sid}
	}
	req, _ := msg.(*jsonrpc.Request)
	var f requestFields
	if req != nil {
		f = readRequestFields(req.Method, req.Params)
	}
	version := f.version
	if version == "" {
		if v := c.rt.version.Load(); v != nil {
			version = *v
		}
	}
	if version != "" {
		h[HeaderProtocolVersion] = []string{version}
	}
	if req == nil || version < "2026-07-28" {
		return
	}
	h[HeaderMethod] = []string{req.Method}
	if f.hasName {
		h[HeaderName] = []string{headerValue(f.name)}
	}
	if req.Method == "tools/call" && f.hasName && c.u.ParamHeaders != nil {
		c.u.ParamHeaders.setFor(h, f.name, f.args)
	}
}

// metaProtocolVersion is the params._meta member in which a 2026-07-28
// request names its protocol version.
const metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"

// requestFields are the parts of a request's params its headers repeat.
type requestFields struct {
	version string          // params._meta[metaProtocolVersion]
	name    string          // params.name, or params.uri of resources/read
	hasName bool            // name was there, a string
	args    json.RawMessage // params.arguments of tools/call
}

// readRequestFields reads what setHeaders needs from params in one pass.
// Members that are ambiguous (repeated, differently cased) or not strings
// yield nothing: the upstream then refuses the request, the safe outcome.
func readRequestFields(method string, params json.RawMessage) requestFields {
	var f requestFields
	if len(params) == 0 {
		return f
	}
	const where = "params"
	nameKey := ""
	switch method {
	case "tools/call", "prompts/get":
		nameKey = "name"
	case "resources/read":
		nameKey = "uri"
	}
	keys := []string{"_meta", "arguments"}
	if nameKey != "" {
		keys = append(keys, nameKey)
	}
	vals, err := jsonrpcx.Members(params, where, keys...)
	if err != nil {
		return f
	}
	if vals[0] != nil {
		if mv, err := jsonrpcx.Members(vals[0], "params._meta", metaProtocolVersion); err == nil {
			f.version, _, _ = jsonrpcx.String(mv[0], metaProtocolVersion, "params._meta")
		}
	}
	if method == "tools/call" {
		f.args = vals[1]
	}
	if nameKey != "" {
		if s, ok, err := jsonrpcx.String(vals[2], nameKey, where); err == nil && ok {
			f.name, f.hasName = s, true
		}
	}
	return f
}

// headerValue is a routing header's value for s: s itself when it is
// printable ASCII, else Base64-wrapped as the specification gives it.
func headerValue(s string) string {
	if needsBase64(s) {
		return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
	}
	return s
}

// checkStatus turns an upstream's refusal of a request into the error the
// request fails with. A 404 for a known session means the upstream has
// ended it: the connection fails (and sends no DELETE). Other refusals fail
// the one request: with the JSON-RPC error injectingTransport made of the
// upstream's answer (redacted) where it did, else with the status.
func (c *streamableConn) checkStatus(resp *http.Response) error {
	if sid := resp.Header.Get(HeaderSessionID); sid != "" {
		c.mu.Lock()
		had := c.sessionID
		if had == "" {
			c.sessionID = sid
		}
		c.mu.Unlock()
		if had != "" && had != sid {
			return fmt.Errorf("upstream answered with session id %q for session %q; the gateway keeps the first", clipHeader(sid), clipHeader(had))
		}
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	c.mu.Lock()
	sid := c.sessionID
	if resp.StatusCode == http.StatusNotFound && sid != "" {
		c.gone = true
	}
	c.mu.Unlock()
	if resp.StatusCode == http.StatusNotFound && sid != "" {
		err := fmt.Errorf("upstream ended the session (HTTP 404 for session %q); open a new session", clipHeader(sid))
		c.fail(err)
		return err
	}
	// Only the bodies injectingTransport rewrote are redacted: no other
	// upstream text reaches the caller.
	if !transientStatus(resp.StatusCode) && explainedStatus(resp.StatusCode) && mediaType(resp.Header.Get("Content-Type")) == "application/json" {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if werr, ok := decodeErrorBody(data); ok {
			return werr
		}
	}
	return fmt.Errorf("upstream answered HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
}

// transientStatus reports a status that says to retry later, whatever
// body came with it.
func transientStatus(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout, http.StatusTooManyRequests:
		return true
	}
	return false
}

// sseReaderPool holds the read buffers of response streams: a call's
// stream lives for one call, and the next call takes its buffer.
var sseReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, sseReadBuf) }}

// pooledFilter returns the filter that bounds and checks an event stream
// the own client reads, with a pooled read buffer; release gives the buffer
// back once the stream is no longer read.
func (t *injectingTransport) pooledFilter(req *http.Request, body io.ReadCloser) (f *sseFilter, release func()) {
	br := sseReaderPool.Get().(*bufio.Reader)
	br.Reset(body)
	f = &sseFilter{t: t, req: req, src: body, r: &sseReader{r: br, max: int(min(t.max, int64(maxInt))), keepEmpty: true}}
	return f, func() {
		br.Reset(nil)
		sseReaderPool.Put(br)
	}
}

// resumeRetries bounds the attempts, without an event arriving, to resume
// a call's stream that ended before its answer.
const resumeRetries = 2

// readCallStream reads the event stream answering call, handing its
// messages to Read, until the call's response has passed; the rest of the
// stream is read for drainGrace at most, so the connection is reused. A
// stream that ends early is resumed with Last-Event-ID when the upstream
// gave its events ids; otherwise the call fails. The call was sent: when
// its context or the connection ends first, it returns nil, and the call
// is answered by what ended it (the caller gave up, or the session ended
// and fails its pending calls with the reason).
func (c *streamableConn) readCallStream(ctx context.Context, hreq *http.Request, resp *http.Response, call *jsonrpc.Request) error {
	lastID, retry := "", time.Duration(0)
	for attempt := 0; ; {
		answered, progressed, err := c.readStream(ctx, hreq, resp, call.ID, &lastID, &retry)
		if answered || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if lastID == "" {
			c.deliver(ctx, upstreamItem{msg: &jsonrpc.Response{ID: call.ID, Error: &jsonrpc.Error{Code: CodeUpstreamError,
				Message: "upstream ended the response stream without answering the call; the call may be retried"}}})
			return nil
		}
		if progressed {
			attempt = 0
		} else if attempt++; attempt > resumeRetries {
			return fmt.Errorf("upstream's response stream kept ending without the answer (%d attempts to resume it)", resumeRetries)
		}
		delay := retry
		if delay <= 0 {
			delay = time.Duration(attempt+1) * 500 * time.Millisecond
		}
		t := time.NewTimer(min(delay, 30*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.ctx.Done():
			t.Stop()
			return nil
		}
		if resp, err = c.get(ctx, lastID); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("resume the upstream's response stream: %w", err)
		}
		if err := c.checkStatus(resp); err != nil {
			resp.Body.Close()
			return err
		}
		if mediaType(resp.Header.Get("Content-Type")) != "text/event-stream" {
			resp.Body.Close()
			return errors.New("upstream answered the request to resume a response stream with something other than an event stream")
		}
	}
}

// readStream reads one event stream of a call (id) until its response has
// passed, then the rest of it briefly; it reports whether the response
// came, whether any event did, and a read error that ends the call.
func (c *streamableConn) readStream(ctx context.Context, hreq *http.Request, resp *http.Response, id jsonrpc.ID, lastID *string, retry *time.Duration) (answered, progressed bool, err error) {
	f, release := c.rt.pooledFilter(hreq, resp.Body)
	var held *heldAnswer
	defer func() {
		if held != nil {
			held.finish()
		}
		resp.Body.Close()
		release()
	}()
	for {
		ev, err := f.nextEvent()
		if held != nil {
			// The stream went on after the answer, or ended: either way
			// the answer goes now, and what follows it is bounded.
			held.releaseNow()
		}
		if err != nil {
			// The end of the stream, or a read cut short: after the answer
			// either is fine; before it, readCallStream resumes or fails.
			return answered, progressed, nil
		}
		if ev.ID != "" {
			*lastID = ev.ID
			progressed = true
		}
		if ev.Retry != "" {
			if n, err := strconv.ParseInt(ev.Retry, 10, 64); err == nil && n >= 0 {
				*retry = time.Duration(n) * time.Millisecond
			}
		}
		if len(ev.Data) == 0 || (ev.Name != "" && ev.Name != "message") {
			continue
		}
		progressed = true
		it := decodeChecked(ev.Data)
		var me *MessageError
		r, isResp := it.msg.(*jsonrpc.Response)
		if !answered && ((isResp && r.ID == id) || (errors.As(it.err, &me) && me.Response && me.ID == id)) {
			answered = true
			held = holdAnswer(c, ctx, it, resp.Body)
			continue
		}
		if !c.deliver(ctx, it) {
			return answered, progressed, nil
		}
	}
}

// answerHold is how long the answer to a call waits for the end of its
// stream, which a server sends right after it. Reading the end first puts
// the connection back into the pool before the caller, answered, sends
// its next call; otherwise that call often finds no idle connection and
// dials one.
const answerHold = 10 * time.Millisecond

// heldAnswer is a call's answer waiting (answerHold at most) for the end
// of its stream.
type heldAnswer struct {
	c    *streamableConn
	ctx  context.Context
	it   upstreamItem
	body io.Closer
	hold *time.Timer
	once sync.Once

	mu    sync.Mutex
	drain *time.Timer // cuts the stream off drainGrace after the answer went; guarded by mu
	done  bool        // the stream is no longer read; guarded by mu
}

func holdAnswer(c *streamableConn, ctx context.Context, it upstreamItem, body io.Closer) *heldAnswer {
	h := &heldAnswer{c: c, ctx: ctx, it: it, body: body}
	h.hold = time.AfterFunc(answerHold, h.release)
	return h
}

// release hands the answer on, once, and bounds the rest of the stream.
// The hold timer calls it; the stream's reader calls it through
// releaseNow, which owns hold.
func (h *heldAnswer) release() {
	h.once.Do(func() {
		h.c.deliver(h.ctx, h.it)
		h.mu.Lock()
		if !h.done {
			h.drain = time.AfterFunc(drainGrace, func() { h.body.Close() })
		}
		h.mu.Unlock()
	})
}

// releaseNow is release without waiting for the hold timer.
func (h *heldAnswer) releaseNow() {
	h.hold.Stop()
	h.release()
}

// finish is called once the stream is no longer read.
func (h *heldAnswer) finish() {
	h.releaseNow()
	h.mu.Lock()
	h.done = true
	if h.drain != nil {
		h.drain.Stop()
	}
	h.mu.Unlock()
}

// get opens an event stream with GET: the standalone one (lastID empty) or
// the resumption of a call's stream.
func (c *streamableConn) get(ctx context.Context, lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.u.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header["Accept"] = acceptSSE
	c.mu.Lock()
	sid := c.sessionID
	c.mu.Unlock()
	if sid != "" {
		req.Header[HeaderSessionID] = []string{sid}
	}
	if lastID != "" {
		req.Header["Last-Event-Id"] = []string{lastID}
	}
	return c.client.Do(req)
}

// writeInitialized forwards notifications/initialized once the standalone
// GET stream is open, or has definitively failed. From initialized on, a
// server may send requests that belong to no client request (roots/list on
// initialized, sampling from a background task), and a streamable server
// sends those on the GET stream only: a server that finds no stream drops
// them or parks them where no fresh GET looks (the TypeScript SDK's event
// store), and the call that waits on them hangs. So the stream is opened
// first, as the go-sdk client does for its own sessions (sessionUpdated
// connects the GET before Connect sends initialized); the proxy writes a
// session's notifications in order, so the client's next message waits
// behind this one too.
//
// A server that refuses the GET before initialized (the spec allows the
// GET from the initialize response on, when the session id is known, but
// a server may want initialized first) gets it again after.
func (c *streamableConn) writeInitialized(ctx context.Context, msg jsonrpc.Message) error {
	status := c.awaitStandalone(ctx, c.startStandalone())
	if err := c.post(ctx, msg); err != nil {
		return err
	}
	if status >= 400 && status < 500 && status != http.StatusMethodNotAllowed {
		c.mu.Lock()
		c.getStart = false
		c.mu.Unlock()
		c.awaitStandalone(ctx, c.startStandalone())
	}
	return nil
}

// standaloneWait bounds how long forwarding initialized waits for the
// upstream to answer the standalone GET: longer than any healthy answer,
// short enough that a server sitting on the GET delays the session only
// once, by this much.
const standaloneWait = 10 * time.Second

// awaitStandalone waits until the standalone GET started with answered is
// answered, and returns the answer's HTTP status: 200 when the stream is
// open, 0 when no answer came (nil answered, retries ran out, or the wait
// was cut short).
func (c *streamableConn) awaitStandalone(ctx context.Context, answered <-chan int) int {
	if answered == nil {
		return 0
	}
	t := time.NewTimer(standaloneWait)
	defer t.Stop()
	select {
	case status := <-answered:
		return status
	case <-t.C:
		c.u.Logger.Warn("upstream did not answer the event stream request in time; forwarding initialized without it, so requests the server sends before it opens may be lost",
			slog.String("upstream", c.u.URL), slog.Duration("waited", standaloneWait))
	case <-ctx.Done():
	case <-c.ctx.Done():
	}
	return 0
}

// maxInFlightToolLists bounds the tools/list calls a connection watches
// for the tool schemas of their responses.
const maxInFlightToolLists = 64

// startStandalone opens the GET stream for server-initiated messages, once,
// for protocol versions that have it (before 2026-07-28). The channel it
// returns receives the HTTP status of the first definitive answer (see
// standaloneLoop); nil means no stream is opened.
func (c *streamableConn) startStandalone() <-chan int {
	v := c.rt.version.Load()
	if v == nil || *v >= "2026-07-28" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.getStart || c.closed {
		return nil
	}
	c.getStart = true
	answered := make(chan int, 1)
	// Added under mu, which Close takes before it waits: an Add racing
	// the Wait would let the loop outlive Close.
	c.wg.Add(1)
	go c.standaloneLoop(answered)
	return answered
}

// standaloneLoop runs the GET stream, reconnecting while that makes sense.
// It sends on answered, once, the status of the first answer that settles
// whether the stream is open: 200, or a refusal that is not retried (405,
// other 4xx); 0 when the attempts ran out without one.
func (c *streamableConn) standaloneLoop(answered chan<- int) {
	defer c.wg.Done()
	sent := false
	answer := func(status int) {
		if !sent {
			sent = true
			answered <- status
		}
	}
	defer answer(0)
	ctx := c.ctx
	lastID := ""
	for attempt := 0; attempt < 5; {
		got, retry := c.standaloneOnce(ctx, &lastID, answer)
		if !retry || ctx.Err() != nil {
			return
		}
		if got {
			attempt = 0
		} else {
			attempt++
		}
		t := time.NewTimer(time.Duration(attempt+1) * 500 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	c.u.Logger.Warn("upstream event stream kept failing; server-initiated notifications are no longer received", slog.String("upstream", c.u.URL))
}

// standaloneOnce runs one GET stream. It reports whether any event arrived
// and whether reconnecting makes sense; it passes to answer the status of an
// answer that settles whether the stream is open.
func (c *streamableConn) standaloneOnce(ctx context.Context, lastID *string, answer func(status int)) (got, retry bool) {
	// The stream is held for the session's life: on a connection of its
	// own (see roundTripOwnConn).
	resp, err := c.get(withConnUse(ctx, useOwnConn), *lastID)
	if err != nil {
		return false, true
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// 405 (no stream offered) and other 4xx: the server does not want one.
		if resp.StatusCode < 500 {
			answer(resp.StatusCode)
		}
		return false, resp.StatusCode >= 500
	}
	if mediaType(resp.Header.Get("Content-Type")) != "text/event-stream" {
		c.u.Logger.Warn("upstream answered the event stream request with something else; server-initiated notifications are not received",
			slog.String("upstream", c.u.URL), slog.String("content_type", clipHeader(resp.Header.Get("Content-Type"))))
		answer(resp.StatusCode)
		return false, false
	}
	// A server registers the stream before it sends the headers (the go-sdk
	// and TypeScript servers both do), so from here on what it sends for
	// the session has somewhere to go.
	answer(http.StatusOK)
	// The stream is idle most of its life: its read buffer is not pooled
	// (it would be held all along anyway) but small.
	f := newSSEFilterSize(c.rt, resp.Request, resp.Body, idleStreamBuf)
	for {
		ev, err := f.nextEvent()
		if err != nil {
			// The stream ended (cleanly or not): reconnect and resume.
			return got, true
		}
		if ev.ID != "" {
			*lastID = ev.ID
		}
		if len(ev.Data) == 0 || (ev.Name != "" && ev.Name != "message") {
			continue
		}
		got = true
		if !c.deliver(ctx, decodeChecked(ev.Data)) {
			return got, false
		}
	}
}

// closeDeleteTimeout bounds the DELETE that ends the upstream session: a
// peer that never answers must not hold Close.
const closeDeleteTimeout = 5 * time.Second

func (c *streamableConn) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		sid, gone := c.sessionID, c.gone
		c.mu.Unlock()
		if sid != "" && !gone {
			err = c.deleteSession(sid)
		}
		c.cancel()
		c.wg.Wait()
	})
	return err
}

// deleteSession tells the upstream the session is over (best effort).
func (c *streamableConn) deleteSession(sid string) error {
	ctx, cancel := context.WithTimeout(c.ctx, closeDeleteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.u.URL, nil)
	if err != nil {
		return err
	}
	req.Header[HeaderSessionID] = []string{sid}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("end the upstream session: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return nil
}

func (c *streamableConn) SessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}
