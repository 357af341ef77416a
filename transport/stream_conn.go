package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
)

// upstreamTransport is the HTTP transport upstream requests go through:
// net/http's, except for the event streams a session holds open for its
// whole life on a plain-HTTP upstream (see streamTransport).
type upstreamTransport struct {
	*http.Transport
	kept keptConns
}

func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		switch connUseOf(req.Context()) {
		case useOwnConn:
			return roundTripOwnConn(t.DialContext, req)
		case useKeptConn:
			return t.kept.roundTrip(t.DialContext, req)
		}
	}
	return t.Transport.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of both transports.
func (t *upstreamTransport) CloseIdleConnections() {
	t.Transport.CloseIdleConnections()
	t.kept.closeIdle()
}

// connUse says which connection a request of the gateway's own client
// goes on when its upstream is plain HTTP; requests without one go
// through net/http's transport.
type connUse int

const (
	// useOwnConn: an event stream held for the session's life, on a
	// connection of its own (roundTripOwnConn).
	useOwnConn connUse = iota + 1
	// useKeptConn: a POST, on a connection the gateway keeps (keptConns).
	useKeptConn
)

type connUseKey struct{}

// withConnUse marks ctx's request to go on a connection of use u.
func withConnUse(ctx context.Context, u connUse) context.Context {
	return context.WithValue(ctx, connUseKey{}, u)
}

func connUseOf(ctx context.Context) connUse {
	u, _ := ctx.Value(connUseKey{}).(connUse)
	return u
}

// streamReadBuf is the read buffer of a connection of its own: the
// stream's reader reads through a buffer of its own too, so this one only
// spares it a system call per event.
const streamReadBuf = 1 << 10

// roundTripOwnConn sends req on a new connection of its own and returns
// its answer, read from that connection alone; closing the body (or the
// end of req's context) closes the connection. net/http's transport would
// hold, for each such stream idle for hours, a goroutine reading the
// connection and one waiting to write to it, and a 4 KiB read buffer. The
// stream's own reader is the only goroutine here. Only plain HTTP: over
// TLS net/http multiplexes the streams over HTTP/2.
func roundTripOwnConn(dial func(ctx context.Context, network, addr string) (net.Conn, error), req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req.Body.Close()
		return nil, errors.New("a request on a connection of its own carries no body")
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	if dial == nil {
		dial = (&net.Dialer{Timeout: DialTimeout}).DialContext
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &ownConn{conn: conn}
	stop := context.AfterFunc(ctx, c.close)
	// Write goes through a buffer of its own, dropped once written.
	if err := req.Write(conn); err != nil {
		stop()
		c.close()
		return nil, ctxErr(ctx, err)
	}
	lim := &headerLimit{r: conn, left: -1}
	resp, err := readResponse(bufio.NewReaderSize(lim, streamReadBuf), lim, req)
	if err != nil {
		stop()
		c.close()
		return nil, ctxErr(ctx, err)
	}
	resp.Body = &ownConnBody{ReadCloser: resp.Body, conn: c, stop: stop}
	return resp, nil
}

// ctxErr is the context's error when it ended the request, else err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// ownConn is the connection of one stream.
type ownConn struct {
	conn net.Conn
	once sync.Once
}

func (c *ownConn) close() { c.once.Do(func() { c.conn.Close() }) }

// ownConnBody is an answer's body read from a connection of its own.
type ownConnBody struct {
	io.ReadCloser
	conn *ownConn
	stop func() bool // stops closing the connection when the request's context ends
}

// Close closes the connection first: the body's own Close reads what is
// left of it, which for an event stream is forever.
func (b *ownConnBody) Close() error {
	b.stop()
	b.conn.close()
	b.ReadCloser.Close()
	return nil
}
