package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
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
// TLS net/http multiplexes the streams over HTTP/2. It is a kept
// connection's send (keptConns) on a connection that is never kept.
func roundTripOwnConn(dial func(ctx context.Context, network, addr string) (net.Conn, error), req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req.Body.Close()
		return nil, errors.New("a request on a connection of its own carries no body")
	}
	kc, err := dialConn(req.Context(), dial, hostPort(req.URL), streamReadBuf, 0)
	if err != nil {
		return nil, err
	}
	var never *keptConns
	resp, _, err := never.send(kc, req)
	return resp, err
}

// ctxErr is the context's error when it ended the request, else err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
