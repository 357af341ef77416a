package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// This file implements the framed wire format of QUIC streams and Unix
// socket connections; doc.go describes it.

// MaxOpenFrameBytes caps an open frame or its reply, newline excluded.
const MaxOpenFrameBytes = 64 << 10

// DefaultOpenTimeout bounds reading an open frame unless configured.
const DefaultOpenTimeout = 10 * time.Second

// OpenFrame is the first line of a framed stream: what the session is for
// and who asks. Exactly one of Target and Route names the upstream.
type OpenFrame struct {
	Target  string `json:"target,omitempty"`
	Route   string `json:"route,omitempty"`
	Org     string `json:"org"`
	Account string `json:"account"`
	Token   string `json:"token,omitempty"`
}

// openFrameKeys are the members of an open frame, as OpenFrame spells them.
var openFrameKeys = []string{"target", "route", "org", "account", "token"}

// OpenReply answers an open frame: {"ok":true}, or a refusal with a
// JSON-RPC error code and a message that says what to do.
type OpenReply struct {
	OK    bool   `json:"ok"`
	Code  int64  `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
	// Data is the refusal's JSON-RPC error data, when it has some.
	Data json.RawMessage `json:"data,omitempty"`
}

// FramedStream is a byte stream that carries one session in the framed wire
// format: a QUIC stream or a Unix socket connection. Close must end both
// directions, so that a blocked Read returns.
type FramedStream interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// ParseOpenFrame decodes one open frame line (without its newline). Its
// errors are *MessageError, ready to refuse the frame with.
func ParseOpenFrame(line []byte) (OpenFrame, error) {
	var f OpenFrame
	if trimmed := bytes.TrimLeft(line, " \t\r"); len(trimmed) == 0 || trimmed[0] != '{' {
		return f, &MessageError{Code: jsonrpc.CodeParseError,
			Message: `open frame must be one JSON object ended by a newline, e.g. {"target":"https://mcp.example.com/mcp","org":"o","account":"a","token":"…"}`}
	}
	if err := json.Unmarshal(line, &f); err != nil {
		return OpenFrame{}, &MessageError{Code: jsonrpc.CodeParseError,
			Message: fmt.Sprintf("malformed open frame: %v; send one JSON object with target (or route), org, account and token, then a newline", err)}
	}
	// encoding/json has read the frame leniently (keys in any case, the
	// last of duplicates); the gateway decides on it only if every reader
	// would have read the same.
	const where = "the open frame"
	vals, err := jsonrpcx.Members(line, where, openFrameKeys...)
	if err != nil {
		return OpenFrame{}, &MessageError{Code: jsonrpcx.CodeInvalidRequest, Message: err.Error()}
	}
	for i, raw := range vals {
		if _, _, err := jsonrpcx.String(raw, openFrameKeys[i], where); err != nil {
			return OpenFrame{}, &MessageError{Code: jsonrpcx.CodeInvalidRequest, Message: err.Error()}
		}
	}
	if f.Target != "" && f.Route != "" {
		return OpenFrame{}, &MessageError{Code: jsonrpc.CodeInvalidParams, Message: "open frame names both a target and a route; give one of them"}
	}
	return f, nil
}

// OpenRequest is a framed stream whose open frame has been read and not yet
// answered. Exactly one of Accept and Refuse must be called.
type OpenRequest struct {
	Frame OpenFrame
	s     FramedStream
	br    *bufio.Reader
}

// ReadOpen reads the open frame of s, waiting at most timeout (default
// DefaultOpenTimeout) or until ctx ends. A frame that is too large, late or
// malformed is refused on the stream, s is closed, and the error says what
// was wrong.
func ReadOpen(ctx context.Context, s FramedStream, timeout time.Duration) (*OpenRequest, error) {
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	br := bufio.NewReaderSize(s, lineBufSize)
	stop := watchContext(rctx, s.SetReadDeadline)
	line, err := readLine(br, MaxOpenFrameBytes, false)
	stop()
	s.SetReadDeadline(time.Time{})

	var refusal *MessageError
	switch {
	case err == nil:
		f, perr := ParseOpenFrame(line)
		if perr == nil {
			return &OpenRequest{Frame: f, s: s, br: br}, nil
		}
		refusal = perr.(*MessageError)
	case errors.Is(err, errLineTooLong):
		refusal = &MessageError{Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("open frame larger than %d bytes refused; send a small JSON object ended by a newline", MaxOpenFrameBytes)}
	case ctx.Err() != nil:
		refusal = &MessageError{Code: jsonrpc.CodeInternalError, Message: "gateway node is shutting down; retry on another node"}
	case errors.Is(err, os.ErrDeadlineExceeded):
		refusal = &MessageError{Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("no complete open frame within %v; send the open frame and its newline right after opening the stream", timeout)}
	default:
		s.Close()
		return nil, fmt.Errorf("read open frame: %w", err)
	}
	writeReply(s, OpenReply{Code: refusal.Code, Error: refusal.Message})
	s.Close()
	return nil, refusal
}

// Accept answers {"ok":true} and returns the session's connection.
func (o *OpenRequest) Accept(opts LineOptions) (*LineConn, error) {
	if err := writeReply(o.s, OpenReply{OK: true}); err != nil {
		o.s.Close()
		return nil, fmt.Errorf("answer open frame: %w", err)
	}
	return newLineConn(o.s, o.br, opts), nil
}

// Refuse answers the open frame with err and closes the stream. A
// *Refusal, *HTTPError or *MessageError lends its code and message; any
// other error is reported as an internal error without its text, so
// internal details never leak to callers.
func (o *OpenRequest) Refuse(err error) {
	reply := OpenReply{Code: jsonrpc.CodeInternalError, Error: "internal error; see the gateway log"}
	var ref *Refusal
	var he *HTTPError
	var me *MessageError
	switch {
	case errors.As(err, &ref):
		reply.Code, reply.Error, reply.Data = ref.Code, ref.Message, ref.Data
	case errors.As(err, &he):
		reply.Code, reply.Error = he.Code, he.Message
	case errors.As(err, &me):
		reply.Code, reply.Error = me.Code, me.Message
	}
	writeReply(o.s, reply)
	o.s.Close()
}

// replyTimeout bounds writing an open reply to a peer that does not read.
const replyTimeout = 5 * time.Second

func writeReply(s FramedStream, reply OpenReply) error {
	data, err := json.Marshal(reply)
	if err != nil {
		return err
	}
	s.SetWriteDeadline(time.Now().Add(replyTimeout))
	defer s.SetWriteDeadline(time.Time{})
	_, err = s.Write(append(data, '\n'))
	return err
}

// OpenFramed starts a session on s from the client side: it sends the open
// frame, waits for the reply (bounded by ctx) and returns the session's
// connection. A refusal is a *RefusalError with the gateway's code and
// message; s is closed on any error.
func OpenFramed(ctx context.Context, s FramedStream, f OpenFrame, opts LineOptions) (*LineConn, error) {
	data, err := json.Marshal(f)
	if err != nil {
		s.Close()
		return nil, err
	}
	if len(data) > MaxOpenFrameBytes {
		s.Close()
		return nil, fmt.Errorf("open frame is %d bytes, over the %d byte limit; shorten the token or target", len(data), MaxOpenFrameBytes)
	}
	stopW := watchContext(ctx, s.SetWriteDeadline)
	_, err = s.Write(append(data, '\n'))
	stopW()
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	s.SetWriteDeadline(time.Time{})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("send open frame: %w", err)
	}

	br := bufio.NewReaderSize(s, lineBufSize)
	stopR := watchContext(ctx, s.SetReadDeadline)
	line, err := readLine(br, MaxOpenFrameBytes, false)
	stopR()
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	s.SetReadDeadline(time.Time{})
	if err != nil {
		s.Close()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("gateway closed the stream without answering the open frame")
		}
		return nil, fmt.Errorf("read open reply: %w", err)
	}
	var reply OpenReply
	if err := json.Unmarshal(line, &reply); err != nil {
		s.Close()
		return nil, fmt.Errorf("malformed open reply from the gateway: %v", err)
	}
	if !reply.OK {
		s.Close()
		return nil, &RefusalError{Code: reply.Code, Message: reply.Error, Data: reply.Data}
	}
	return newLineConn(s, br, opts), nil
}

// aLongTimeAgo is a deadline that has passed: setting it unblocks I/O.
var aLongTimeAgo = time.Unix(1, 0)

// watchContext makes blocked I/O return when ctx ends: it clears the
// deadline through set (a SetReadDeadline or SetWriteDeadline) and expires
// it as soon as ctx is done, so the I/O error always follows ctx.Err(). The
// returned stop reports whether ctx ended while watched; once it returns,
// set is no longer called.
func watchContext(ctx context.Context, set func(time.Time) error) (stop func() bool) {
	set(time.Time{})
	if ctx.Done() == nil {
		return func() bool { return false }
	}
	fired := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		set(aLongTimeAgo)
		close(fired)
	})
	return func() bool {
		if stopAfter() {
			return false
		}
		<-fired
		return true
	}
}

// lineBufSize is the read buffer of a framed stream; longer lines are
// assembled from several reads. It is held for the whole life of a
// session, idle or not, so it is sized for the messages most calls carry
// rather than for the largest.
const lineBufSize = 4 << 10

// errLineTooLong reports a line over the cap.
var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its "\n" (or "\r\n"). A final line
// without a newline is returned before io.EOF. A line longer than max
// bytes yields errLineTooLong; with drain, the rest of that line is
// consumed first so the next call starts at the next line, otherwise
// reading stops where the cap was crossed.
func readLine(br *bufio.Reader, max int, drain bool) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		complete := err == nil
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		if len(line)+len(chunk) > max {
			// Keep the start of the line: it usually names the message's id,
			// so the refusal can answer that call alone.
			keep := 0
			if len(line) < peekHeadBytes {
				keep = min(len(chunk), peekHeadBytes-len(line))
			}
			head := append(line, chunk[:keep]...)
			if drain && !complete {
				if err := discardLine(br); err != nil && !errors.Is(err, io.EOF) {
					return nil, err
				}
			}
			return bytes.Clone(head), errLineTooLong
		}
		switch {
		case complete:
			if line == nil {
				line = bytes.Clone(chunk)
			} else {
				line = append(line, chunk...)
			}
			return bytes.TrimSuffix(line, []byte{'\r'}), nil
		case errors.Is(err, bufio.ErrBufferFull):
			line = append(line, chunk...)
		case errors.Is(err, io.EOF) && len(line)+len(chunk) > 0:
			return bytes.TrimSuffix(append(line, chunk...), []byte{'\r'}), nil
		default:
			return nil, err
		}
	}
}

// peekHeadBytes is how much of an oversized line readLine keeps.
const peekHeadBytes = 4 << 10

// discardLine consumes input through the next newline.
func discardLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}
