package transport

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// drainGrace bounds how long the rest of a POST's response stream is read
// after its call was answered and its context ended.
const drainGrace = 2 * time.Second

// answerGuard keeps the end of a call from costing the upstream connection
// it was made on. The gateway ends a call's context as soon as the call is
// answered, and a one-request session closes its upstream connection at
// once; the go-sdk reads the rest of the response stream (the end of the
// chunked body, usually a few bytes behind the answer) only after it has
// handed the answer on. A request context that ends before that read
// tears the TCP connection down, and the next call dials a new one. So
// the request runs on a context of its own: the caller's ending cancels it
// at once until the response has been passed on, and after that only if
// the stream has not ended within drainGrace.
type answerGuard struct {
	cancel   context.CancelFunc
	stop     func() bool
	answered atomic.Bool

	mu     sync.Mutex
	closed bool        // done was called; guarded by mu
	timer  *time.Timer // the deferred cancel; guarded by mu
}

// guardRequest returns the context to send a request with, and its guard.
func guardRequest(parent context.Context) (context.Context, *answerGuard) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	g := &answerGuard{cancel: cancel}
	g.stop = context.AfterFunc(parent, g.parentDone)
	return ctx, g
}

func (g *answerGuard) parentDone() {
	if !g.answered.Load() {
		g.cancel()
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.timer = time.AfterFunc(drainGrace, g.cancel)
	}
}

// markAnswered is called before the answer to the request is passed on.
func (g *answerGuard) markAnswered() {
	if g != nil {
		g.answered.Store(true)
	}
}

// done releases the guard once the response body is closed (or there is
// none).
func (g *answerGuard) done() {
	g.stop()
	g.mu.Lock()
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
	}
	g.mu.Unlock()
	g.cancel()
}

// guardedBody releases its guard when closed.
type guardedBody struct {
	io.ReadCloser
	g *answerGuard
}

func (b *guardedBody) Close() error {
	err := b.ReadCloser.Close()
	b.g.done()
	return err
}

// release is done for a request that got no response; nil-safe.
func (g *answerGuard) release() {
	if g != nil {
		g.done()
	}
}

// wrap ties the guard to resp's body and tells the body's filter where to
// report the answer; nil-safe.
func (g *answerGuard) wrap(resp *http.Response) *http.Response {
	if g == nil {
		return resp
	}
	switch b := resp.Body.(type) {
	case *sseFilter:
		b.guard = g
	case *jsonBody:
		b.guard = g
	case nil:
		g.done()
		return resp
	}
	resp.Body = &guardedBody{ReadCloser: resp.Body, g: g}
	return resp
}
