package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// request is one write sent to another node over the forwarding protocol:
// 4-byte big-endian length, then JSON; the answer is framed the same way.
type request struct {
	Kind    requestKind `json:"kind"`
	Command []byte      `json:"command,omitempty"` // an encoded Command, for apply
	ID      string      `json:"id,omitempty"`      // node id, for join and remove
	Addr    string      `json:"addr,omitempty"`    // raft address, for join
	// Timeout is what is left of the sender's deadline, so the receiver
	// gives up when the sender does.
	Timeout time.Duration `json:"timeout"`
	// Call and Payload are a call for a handler registered with
	// Raft.Handle on the leader.
	Call    string `json:"call,omitempty"`
	Payload []byte `json:"payload,omitempty"`
	// Forwarded marks a request a node already sent on towards its leader:
	// the receiver acts on it only if it is the leader, so a request never
	// travels in circles while leadership moves.
	Forwarded bool `json:"forwarded,omitempty"`
}

type requestKind string

const (
	kindApply  requestKind = "apply"
	kindJoin   requestKind = "join"
	kindRemove requestKind = "remove"
	// kindReadIndex asks the leader how far it has applied, for ReadIndex.
	kindReadIndex requestKind = "read-index"
	// kindCall runs a handler registered with Raft.Handle, for work only
	// the leader may do (see Raft.Call).
	kindCall requestKind = "call"
)

type response struct {
	// Index is the raft index of an applied write, or the leader's applied
	// index for a read barrier.
	Index uint64 `json:"index,omitempty"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"` // names the sentinel the error wraps
}

// maxFrame bounds one message. A command carries sealed credentials, and a
// vault rotation re-seals all of them in one batch.
const maxFrame = 64 << 20

// wireErrors are the sentinels that survive a hop to another node.
var wireErrors = []struct {
	code string
	err  error
}{
	{"already-claimed", ErrAlreadyClaimed},
	{"credential-changed", ErrCredentialChanged},
	{"invalid-command", ErrInvalidCommand},
	{"not-leader", ErrNotLeader},
	{"no-leader", ErrNoLeader},
	{"not-member", ErrNotMember},
	{"closed", ErrClosed},
	{"leadership-lost", errLeadershipLost},
	{"peer-unreachable", ErrPeerUnreachable},
}

func encodeError(err error) response {
	if err == nil {
		return response{}
	}
	resp := response{Error: err.Error()}
	for _, w := range wireErrors {
		if errors.Is(err, w.err) {
			resp.Code = w.code
			break
		}
	}
	return resp
}

func (r response) err() error {
	if r.Error == "" {
		return nil
	}
	e := &remoteError{msg: r.Error}
	for _, w := range wireErrors {
		if r.Code == w.code {
			e.sentinel = w.err
		}
	}
	return e
}

// remoteError is an error returned by another node: its text as it was,
// and the sentinel it wrapped there.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("message of %d bytes exceeds the %d byte limit", len(b), maxFrame)
	}
	buf := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	_, err = w.Write(append(buf, b...))
	return err
}

func readFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return fmt.Errorf("message of %d bytes exceeds the %d byte limit", n, maxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// forwarder sends requests to other nodes, keeping a few idle connections
// per address so a follower's writes do not each pay a TLS handshake.
type forwarder struct {
	mux     *mux
	maxIdle int

	mu   sync.Mutex            // guards idle
	idle map[string][]net.Conn // by address
}

// errUnreachable marks a failure to reach a node at all: nothing was sent,
// so trying again cannot apply a write twice.
var errUnreachable = errors.New("unreachable")

// call sends req to addr and returns the receiver's answer. Transport
// failures are returned as they are, wrapped in errUnreachable when the
// request surely never left.
func (f *forwarder) call(ctx context.Context, addr string, req request) (uint64, error) {
	if d, ok := ctx.Deadline(); ok {
		req.Timeout = time.Until(d)
	}
	for attempt := 0; ; attempt++ {
		c, reused := f.get(addr)
		if c == nil {
			var err error
			if c, err = f.mux.dialTLS(ctx, addr, alpnForward); err != nil {
				return 0, fmt.Errorf("%w: %w", errUnreachable, err)
			}
		}
		resp, n, reusable, err := roundTrip(ctx, c, req)
		if err == nil {
			if reusable {
				f.put(addr, c)
			} else {
				c.Close()
			}
			return resp.Index, resp.err()
		}
		c.Close()
		// An idle connection the other side has since closed fails before
		// a byte of answer arrives; the request never reached a handler.
		if reused && n == 0 && attempt == 0 && ctx.Err() == nil {
			continue
		}
		return 0, err
	}
}

// roundTrip writes req and reads the response on c, aborting the I/O when
// ctx ends. It reports how many bytes of response arrived and whether c can
// carry another request.
func roundTrip(ctx context.Context, c net.Conn, req request) (resp response, n int, reusable bool, err error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	cr := &countingReader{r: c}
	err = writeFrame(c, req)
	if err == nil {
		err = readFrame(cr, &resp)
	}
	// A false stop means the deadline above was, or is being, set.
	reusable = stop()
	if err != nil {
		return resp, cr.n, false, ctxErr(ctx, err)
	}
	return resp, cr.n, reusable, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

func (f *forwarder) get(addr string) (net.Conn, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	conns := f.idle[addr]
	if len(conns) == 0 {
		return nil, false
	}
	c := conns[len(conns)-1]
	f.idle[addr] = conns[:len(conns)-1]
	return c, true
}

func (f *forwarder) put(addr string, c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.idle == nil {
		f.idle = make(map[string][]net.Conn)
	}
	if len(f.idle[addr]) >= f.maxIdle {
		c.Close()
		return
	}
	f.idle[addr] = append(f.idle[addr], c)
}
