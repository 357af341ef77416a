package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Subprotocol is the WebSocket subprotocol MCP sessions speak: one JSON-RPC
// message per text frame, as the TypeScript SDK's WebSocket transport does.
const Subprotocol = "mcp"

// DefaultMaxMessageBytes caps one JSON-RPC message unless configured.
const DefaultMaxMessageBytes = 4 << 20

// WebSocketOptions tune a WebSocket connection.
type WebSocketOptions struct {
	// MaxMessageBytes caps one incoming message. Default DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// PingInterval is how often a ping keeps an idle session alive through
	// proxies and detects dead peers. Default 30s; negative disables.
	PingInterval time.Duration
}

func (o WebSocketOptions) withDefaults() WebSocketOptions {
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.PingInterval == 0 {
		o.PingInterval = 30 * time.Second
	}
	return o
}

// AcceptWebSocket upgrades r to a WebSocket MCP connection. The caller must
// have authenticated r and checked its Origin already: the upgrade itself
// accepts any origin the caller let through.
func AcceptWebSocket(w http.ResponseWriter, r *http.Request, opts WebSocketOptions) (mcp.Connection, error) {
	c, err := websocket.Accept(smallBuffers{w}, r, &websocket.AcceptOptions{
		Subprotocols:       []string{Subprotocol},
		InsecureSkipVerify: true, // Origin is checked by the caller's allow-list
	})
	if err != nil {
		return nil, err
	}
	return newWSConn(c, opts), nil
}

// wsBufferSize is the size of an accepted WebSocket's read and write
// buffers, held for the session's whole life, idle nearly all of it.
// Messages larger than a buffer are read and written past it.
const wsBufferSize = 2 << 10

// smallBuffers is a ResponseWriter whose Hijack hands the connection on
// with buffers of wsBufferSize rather than the HTTP server's 4 KiB ones
// (the server's own connection state, freed once the handler returns,
// holds another 4 KiB besides).
type smallBuffers struct{ http.ResponseWriter }

func (s smallBuffers) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	r := brw.Reader
	if r.Buffered() == 0 {
		// A client that sent frames before the upgrade's answer keeps
		// the server's buffer, which holds them.
		r = bufio.NewReaderSize(conn, wsBufferSize)
	}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(conn, wsBufferSize)), nil
}

// DialWebSocket opens a WebSocket MCP connection to url with the given
// request headers.
func DialWebSocket(ctx context.Context, url string, header http.Header, client *http.Client, opts WebSocketOptions) (mcp.Connection, error) {
	return dialWebSocket(ctx, url, header, client, opts, decodeMessage)
}

// dialWebSocket is DialWebSocket decoding incoming messages with decode.
func dialWebSocket(ctx context.Context, url string, header http.Header, client *http.Client, opts WebSocketOptions, decode func([]byte) (jsonrpc.Message, error)) (mcp.Connection, error) {
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:   client,
		HTTPHeader:   header,
		Subprotocols: []string{Subprotocol},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, refusalFromResponse(resp, err)
		}
		return nil, fmt.Errorf("websocket dial %s: %w", url, err)
	}
	w := newWSConn(c, opts)
	w.decode = decode
	return w, nil
}

// wsConn is an mcp.Connection over one WebSocket.
type wsConn struct {
	c      *websocket.Conn
	opts   WebSocketOptions
	decode func([]byte) (jsonrpc.Message, error)

	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // a ping in progress

	// The keepalive ping runs from a timer rather than a goroutine of its
	// own, which an idle session would pay for with a stack.
	pingMu     sync.Mutex
	pingTimer  *time.Timer // guarded by pingMu
	pingClosed bool        // set by Close; guarded by pingMu

	closeOnce sync.Once
}

func newWSConn(c *websocket.Conn, opts WebSocketOptions) *wsConn {
	opts = opts.withDefaults()
	// The library's own limit would close the connection; we enforce the cap
	// per message in Read instead, so an oversized message costs only itself.
	c.SetReadLimit(-1)
	ctx, cancel := context.WithCancel(context.Background())
	w := &wsConn{c: c, opts: opts, decode: decodeMessage, ctx: ctx, cancel: cancel}
	if opts.PingInterval > 0 {
		w.pingMu.Lock()
		w.pingTimer = time.AfterFunc(opts.PingInterval, w.ping)
		w.pingMu.Unlock()
	}
	return w
}

// ping sends one keepalive ping, and arms the next when it is answered.
func (w *wsConn) ping() {
	w.pingMu.Lock()
	if w.pingClosed {
		w.pingMu.Unlock()
		return
	}
	w.wg.Add(1) // under pingMu: Close waits for it only after setting pingClosed
	w.pingMu.Unlock()
	defer w.wg.Done()
	ctx, cancel := context.WithTimeout(w.ctx, w.opts.PingInterval)
	err := w.c.Ping(ctx)
	cancel()
	if err != nil {
		w.c.Close(websocket.StatusGoingAway, "ping timeout")
		return
	}
	w.pingMu.Lock()
	if !w.pingClosed {
		w.pingTimer.Reset(w.opts.PingInterval)
	}
	w.pingMu.Unlock()
}

func (w *wsConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	typ, r, err := w.c.Reader(ctx)
	if err != nil {
		return nil, closedErr(err)
	}
	data, err := io.ReadAll(io.LimitReader(r, w.opts.MaxMessageBytes+1))
	if err != nil {
		return nil, closedErr(err)
	}
	if int64(len(data)) > w.opts.MaxMessageBytes {
		// Drain the rest of the frame so the next message starts cleanly.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, closedErr(err)
		}
		return nil, tooLarge(w.opts.MaxMessageBytes, data)
	}
	if typ != websocket.MessageText {
		me := &MessageError{Code: jsonrpc.CodeInvalidRequest, Message: "binary WebSocket frame refused; send each JSON-RPC message as one text frame"}
		me.ID, me.Response = peekID(data)
		return nil, me
	}
	return w.decode(data)
}

func (w *wsConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	bp := wsWriteBufs.Get().(*[]byte)
	defer putWriteBuf(bp)
	data, err := appendMessage((*bp)[:0], msg)
	*bp = data
	if err != nil {
		return err
	}
	// The library closes the connection when a write's context ends, as a
	// frame cut short would corrupt the stream. Callers cancel a write's
	// context when its call is answered or cancelled, which may happen
	// while the write finishes, so only a deadline (a peer that stopped
	// reading) may end the write.
	wctx := context.WithoutCancel(ctx)
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(wctx, d)
		defer cancel()
	}
	if err := w.c.Write(wctx, websocket.MessageText, data); err != nil {
		return closedErr(err)
	}
	return nil
}

// wsWriteBufs holds the buffers messages are encoded into for a write; the
// library copies a message into its own frame buffer, so one can be reused
// as soon as Write returns.
var wsWriteBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1<<10); return &b }}

// putWriteBuf returns a write buffer to the pool, unless one large message
// grew it: the pool must not pin such buffers.
func putWriteBuf(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		wsWriteBufs.Put(bp)
	}
}

// stopPing stops the keepalive; a ping in progress is waited for by wg.
func (w *wsConn) stopPing() {
	w.pingMu.Lock()
	w.pingClosed = true
	if w.pingTimer != nil {
		w.pingTimer.Stop()
	}
	w.pingMu.Unlock()
}

func (w *wsConn) Close() error {
	w.closeOnce.Do(func() {
		w.stopPing()
		w.cancel()
		w.c.Close(websocket.StatusNormalClosure, "session closed")
		w.wg.Wait()
	})
	return nil
}

func (w *wsConn) SessionID() string { return "" }

// closedErr maps the library's close errors to the sentinel the go-sdk uses,
// so callers can tell a peer hanging up from a failure.
func closedErr(err error) error {
	if websocket.CloseStatus(err) != -1 || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %w", mcp.ErrConnectionClosed, err)
	}
	return err
}

// CloseGoingAway closes the connection telling the peer this end is
// shutting down after answering everything it read: requests the peer sent
// that got no answer were never acted on and may be sent elsewhere.
func (w *wsConn) CloseGoingAway() error {
	w.closeOnce.Do(func() {
		w.stopPing()
		w.cancel()
		w.c.Close(websocket.StatusGoingAway, "gateway node shutting down; unanswered requests were not processed")
		w.wg.Wait()
	})
	return nil
}

// ClosePolicy closes the connection with status 1008 (policy violation)
// and reason, which says why the gateway ended the session and what to do.
// The reason is cut to the 123 bytes a close frame carries.
func (w *wsConn) ClosePolicy(reason string) error {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	w.closeOnce.Do(func() {
		w.stopPing()
		w.cancel()
		w.c.Close(websocket.StatusPolicyViolation, reason)
		w.wg.Wait()
	})
	return nil
}

// IsGoingAway reports whether err ended a connection whose peer said it was
// shutting down after answering everything it had read.
func IsGoingAway(err error) bool {
	return websocket.CloseStatus(err) == websocket.StatusGoingAway
}

// refusalFromResponse reads the error body of a refused handshake.
func refusalFromResponse(resp *http.Response, cause error) error {
	// Large enough for a refusal carrying an authorization URL.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	resp.Body.Close()
	if werr, ok := decodeErrorBody(body); ok {
		return &RefusalError{Status: resp.StatusCode, Code: werr.Code, Message: werr.Message, Data: werr.Data}
	}
	return &RefusalError{Status: resp.StatusCode, Message: fmt.Sprintf("%s (%v)", http.StatusText(resp.StatusCode), cause)}
}
