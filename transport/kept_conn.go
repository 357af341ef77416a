package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// keptConns are the connections the gateway keeps to plain-HTTP upstreams
// for the POSTs of its own streamable HTTP client. A POST is written and
// its answer read on the goroutine that sends it: net/http's transport
// hands each request to the connection's write loop, the answer back from
// its read loop, and wakes the read loop again at the body's end, and
// those hand-offs were the largest part of the gateway's CPU per call.
// What is on the wire is what net/http writes and reads
// (http.Request.Write, http.ReadResponse). Over TLS requests keep going
// through net/http's transport.
type keptConns struct {
	mu   sync.Mutex
	idle map[string][]*keptConn // by host:port, most recently used last; guarded by mu
}

// Bounds of the connections kept idle.
const (
	keptIdlePerHost = 64               // as MaxIdleConnsPerHost
	keptIdleTimeout = 90 * time.Second // as net/http's IdleConnTimeout
	keptReadBuf     = 4 << 10
	keptWriteBuf    = 1 << 10
)

// keptConn is one connection with its buffers.
type keptConn struct {
	conn net.Conn
	lim  *headerLimit // between conn and br
	br   *bufio.Reader
	bw   *bufio.Writer // nil: requests are written through a buffer of their own
	addr string
	// expire closes the connection once it has been idle keptIdleTimeout.
	expire *time.Timer
}

// roundTrip sends req on an idle kept connection, or a new one. A write
// that fails on a kept connection is sent again once on a new one: the
// server closed the connection before the request reached it. Once the
// request is written, a failure is the call's, as with net/http (a POST
// is not replayed).
func (k *keptConns) roundTrip(dial func(ctx context.Context, network, addr string) (net.Conn, error), req *http.Request) (*http.Response, error) {
	addr := hostPort(req.URL)
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		kc, reused := k.get(addr)
		if kc == nil {
			var err error
			if kc, err = dialConn(ctx, dial, addr, keptReadBuf, keptWriteBuf); err != nil {
				return nil, err
			}
		}
		if attempt > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				kc.conn.Close()
				return nil, err
			}
			req.Body = body
		}
		resp, written, err := k.send(kc, req)
		if err != nil && reused && !written && attempt == 0 && (req.Body == nil || req.GetBody != nil) {
			continue
		}
		return resp, err
	}
}

// hostPort is the address a plain-HTTP request's URL names.
func hostPort(u *url.URL) string {
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return u.Host
}

// dialConn opens a connection to addr, read through a buffer of readBuf
// bytes, and written through one of writeBuf bytes kept with it (0: each
// request through a buffer of its own, dropped once written).
func dialConn(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string, readBuf, writeBuf int) (*keptConn, error) {
	if dial == nil {
		dial = (&net.Dialer{Timeout: DialTimeout}).DialContext
	}
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	lim := &headerLimit{r: c, left: -1}
	kc := &keptConn{conn: c, lim: lim, br: bufio.NewReaderSize(lim, readBuf), addr: addr}
	if writeBuf > 0 {
		kc.bw = bufio.NewWriterSize(c, writeBuf)
	}
	return kc, nil
}

// send writes req on kc and reads the answer's headers; written reports
// whether the whole request was written. A nil k never keeps kc: it is
// closed with the answer's body.
func (k *keptConns) send(kc *keptConn, req *http.Request) (resp *http.Response, written bool, err error) {
	ctx := req.Context()
	// The end of the call's context closes the connection, which ends a
	// write or read in progress; the connection is then not kept.
	stop := context.AfterFunc(ctx, func() { kc.conn.Close() })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		kc.conn.Close()
		return nil, written, ctxErr(ctx, err)
	}
	if kc.bw == nil {
		err = req.Write(kc.conn)
	} else if err = req.Write(kc.bw); err == nil {
		err = kc.bw.Flush()
	}
	if err != nil {
		return fail(err)
	}
	written = true
	for {
		resp, err = readResponse(kc.br, kc.lim, req)
		if err != nil {
			return fail(err)
		}
		// Informational answers (103 Early Hints) precede the answer.
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	body := &keptBody{ReadCloser: resp.Body, k: k, kc: kc, stop: stop, reuse: k != nil && !resp.Close && !req.Close}
	if resp.Body == http.NoBody || resp.ContentLength == 0 {
		body.finish(true)
		resp.Body = http.NoBody
		return resp, true, nil
	}
	resp.Body = body
	return resp, true, nil
}

// get returns an idle kept connection to addr that is still open, closing
// those the server closed meanwhile.
func (k *keptConns) get(addr string) (*keptConn, bool) {
	for {
		k.mu.Lock()
		list := k.idle[addr]
		if len(list) == 0 {
			k.mu.Unlock()
			return nil, false
		}
		kc := list[len(list)-1]
		k.idle[addr] = list[:len(list)-1]
		k.mu.Unlock()
		kc.expire.Stop()
		if kc.br.Buffered() == 0 && connOpen(kc.conn) {
			return kc, true
		}
		kc.conn.Close()
	}
}

// put keeps kc for the next request to its host, or closes it.
func (k *keptConns) put(kc *keptConn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.idle == nil {
		k.idle = make(map[string][]*keptConn)
	}
	if len(k.idle[kc.addr]) >= keptIdlePerHost {
		kc.conn.Close()
		return
	}
	k.idle[kc.addr] = append(k.idle[kc.addr], kc)
	if kc.expire == nil {
		kc.expire = time.AfterFunc(keptIdleTimeout, func() { k.drop(kc) })
	} else {
		kc.expire.Reset(keptIdleTimeout)
	}
}

// drop closes kc if it is still idle.
func (k *keptConns) drop(kc *keptConn) {
	k.mu.Lock()
	list := k.idle[kc.addr]
	for i, c := range list {
		if c == kc {
			k.idle[kc.addr] = append(list[:i:i], list[i+1:]...)
			k.mu.Unlock()
			kc.conn.Close()
			return
		}
	}
	k.mu.Unlock()
}

// closeIdle closes every idle kept connection.
func (k *keptConns) closeIdle() {
	k.mu.Lock()
	idle := k.idle
	k.idle = nil
	k.mu.Unlock()
	for _, list := range idle {
		for _, kc := range list {
			kc.expire.Stop()
			kc.conn.Close()
		}
	}
}

// keptBody is an answer's body on a kept connection: read to its end, it
// gives the connection back; closed before, it closes it. With k nil (a
// connection of its own) it is closed either way.
type keptBody struct {
	io.ReadCloser
	k     *keptConns
	kc    *keptConn
	stop  func() bool
	reuse bool // the answer and the request allow the connection to be kept

	once sync.Once
}

func (b *keptBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *keptBody) Close() error {
	b.finish(false)
	return nil
}

// finish gives the connection back when the body was read to its end and
// the call's context did not close it, and closes it otherwise.
func (b *keptBody) finish(atEOF bool) {
	b.once.Do(func() {
		if atEOF && b.reuse && b.stop() {
			b.k.put(b.kc)
			return
		}
		b.stop()
		b.kc.conn.Close()
	})
}

// maxUpstreamHeaderBytes bounds the headers of an upstream's answer.
const maxUpstreamHeaderBytes = 1 << 20

var errHeadersTooLarge = errors.New("upstream's answer has headers over 1 MiB")

// headerLimit bounds what is read from a connection while an answer's
// headers are parsed: left bytes more, or no bound when negative.
type headerLimit struct {
	r    io.Reader
	left int64
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.left == 0 {
		return 0, errHeadersTooLarge
	}
	if l.left > 0 && int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	if l.left > 0 {
		l.left -= int64(n)
	}
	return n, err
}

// readResponse reads the answer to req from br, which reads through lim:
// its headers may take maxUpstreamHeaderBytes (and what br buffers past
// them), its body is not bounded here.
func readResponse(br *bufio.Reader, lim *headerLimit, req *http.Request) (*http.Response, error) {
	lim.left = maxUpstreamHeaderBytes + int64(br.Size())
	defer func() { lim.left = -1 }()
	return http.ReadResponse(br, req)
}
