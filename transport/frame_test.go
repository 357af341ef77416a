package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// memStream is a FramedStream that reads from fixed input and records what
// is written, for tests that need no peer.
type memStream struct {
	r io.Reader

	mu     sync.Mutex
	out    bytes.Buffer // guarded by mu
	closed bool         // guarded by mu
}

func newMemStream(in []byte) *memStream { return &memStream{r: bytes.NewReader(in)} }

func (m *memStream) Read(p []byte) (int, error) { return m.r.Read(p) }
func (m *memStream) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	return m.out.Write(p)
}
func (m *memStream) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
func (m *memStream) SetReadDeadline(time.Time) error  { return nil }
func (m *memStream) SetWriteDeadline(time.Time) error { return nil }

func (m *memStream) written() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out.String()
}

func (m *memStream) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// reply decodes the single reply line a refused stream holds.
func (m *memStream) reply(t testing.TB) OpenReply {
	t.Helper()
	out := m.written()
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("stream holds %q, want one reply line", out)
	}
	var r OpenReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("reply %q: %v", out, err)
	}
	return r
}

func TestReadOpen(t *testing.T) {
	big := `{"target":"https://a.example/mcp","org":"o","account":"a","token":"` + strings.Repeat("x", MaxOpenFrameBytes) + `"}`
	tests := []struct {
		name     string
		in       string
		want     OpenFrame
		wantCode int64  // refusal code; 0 means accepted
		wantMsg  string // substring of the refusal
	}{
		{name: "target", in: `{"target":"https://a.example/mcp","org":"o","account":"a","token":"t"}` + "\n",
			want: OpenFrame{Target: "https://a.example/mcp", Org: "o", Account: "a", Token: "t"}},
		{name: "route", in: `{"route":"linear","org":"o","account":"a"}` + "\n",
			want: OpenFrame{Route: "linear", Org: "o", Account: "a"}},
		{name: "crlf and unknown fields", in: ` {"route":"r","org":"o","account":"a","future":1}` + "\r\n",
			want: OpenFrame{Route: "r", Org: "o", Account: "a"}},
		{name: "final line without newline", in: `{"route":"r","org":"o","account":"a"}`,
			want: OpenFrame{Route: "r", Org: "o", Account: "a"}},
		{name: "garbage", in: "hello\n", wantCode: jsonrpc.CodeParseError, wantMsg: "one JSON object"},
		{name: "truncated JSON", in: `{"target":` + "\n", wantCode: jsonrpc.CodeParseError, wantMsg: "malformed open frame"},
		{name: "array", in: "[1,2]\n", wantCode: jsonrpc.CodeParseError, wantMsg: "one JSON object"},
		{name: "empty line", in: "\n", wantCode: jsonrpc.CodeParseError, wantMsg: "one JSON object"},
		{name: "wrong field type", in: `{"org":5}` + "\n", wantCode: jsonrpc.CodeParseError, wantMsg: "malformed open frame"},
		{name: "target and route", in: `{"target":"https://a.example/mcp","route":"r","org":"o","account":"a"}` + "\n",
			wantCode: jsonrpc.CodeInvalidParams, wantMsg: "give one of them"},
		{name: "case-variant token", in: `{"route":"r","org":"o","account":"a","token":"t1","Token":"t2"}` + "\n",
			wantCode: jsonrpc.CodeInvalidRequest, wantMsg: `key "Token" in the open frame is a case variant of "token" and refused; send each key once, spelled exactly`},
		{name: "case variant alone", in: `{"Route":"r","org":"o","account":"a"}` + "\n",
			wantCode: jsonrpc.CodeInvalidRequest, wantMsg: `key "Route" in the open frame is a case variant of "route"`},
		{name: "duplicate org", in: `{"route":"r","org":"o1","org":"o2","account":"a"}` + "\n",
			wantCode: jsonrpc.CodeInvalidRequest, wantMsg: `duplicate key "org" in the open frame refused; send each key once, spelled exactly`},
		{name: "duplicate target", in: `{"target":"https://a.example/mcp","target":"https://b.example/mcp","org":"o","account":"a"}` + "\n",
			wantCode: jsonrpc.CodeInvalidRequest, wantMsg: `duplicate key "target" in the open frame refused`},
		{name: "escaped account key", in: `{"route":"r","org":"o","\u0061ccount":"a"}` + "\n",
			wantCode: jsonrpc.CodeInvalidRequest, wantMsg: `key "account" in the open frame is written with escape sequences`},
		{name: "invalid UTF-8 account", in: "{\"route\":\"r\",\"org\":\"o\",\"account\":\"a\xff\"}\n",
			wantCode: jsonrpc.CodeInvalidRequest, wantMsg: `"account" in the open frame is not valid UTF-8`},
		{name: "oversize without newline", in: big, wantCode: jsonrpc.CodeInvalidRequest, wantMsg: "larger than 65536 bytes"},
		{name: "oversize with newline", in: big + "\n", wantCode: jsonrpc.CodeInvalidRequest, wantMsg: "larger than 65536 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStream([]byte(tc.in))
			req, err := ReadOpen(context.Background(), s, time.Second)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("ReadOpen: %v", err)
				}
				if diff := cmp.Diff(tc.want, req.Frame); diff != "" {
					t.Fatalf("frame mismatch (-want +got):\n%s", diff)
				}
				if got := s.written(); got != "" {
					t.Fatalf("ReadOpen wrote %q before Accept", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadOpen accepted %q", tc.in)
			}
			r := s.reply(t)
			if r.OK || r.Code != tc.wantCode || !strings.Contains(r.Error, tc.wantMsg) {
				t.Fatalf("reply = %+v, want code %d and an error containing %q", r, tc.wantCode, tc.wantMsg)
			}
			if !s.isClosed() {
				t.Fatal("refused stream was not closed")
			}
		})
	}
}

func TestReadOpenEOF(t *testing.T) {
	s := newMemStream(nil)
	if _, err := ReadOpen(context.Background(), s, time.Second); err == nil {
		t.Fatal("ReadOpen of an empty stream succeeded")
	}
	if got := s.written(); got != "" {
		t.Fatalf("wrote %q to a stream the peer closed", got)
	}
	if !s.isClosed() {
		t.Fatal("stream not closed")
	}
}

// pipe returns two ends of an in-memory connection with deadlines.
func pipe(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// readReply reads one reply line from c within a deadline.
func readReply(t *testing.T, c net.Conn) OpenReply {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read reply: %v (got %q)", err, line)
	}
	var r OpenReply
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return r
}

func TestReadOpenDeadline(t *testing.T) {
	server, client := pipe(t)
	errc := make(chan error, 1)
	go func() {
		_, err := ReadOpen(context.Background(), server, 50*time.Millisecond)
		errc <- err
	}()
	// Half a frame, then silence: the slow-loris case.
	if _, err := client.Write([]byte(`{"target":`)); err != nil {
		t.Fatal(err)
	}
	r := readReply(t, client)
	if r.OK || r.Code != jsonrpc.CodeInvalidRequest || !strings.Contains(r.Error, "no complete open frame within 50ms") {
		t.Fatalf("reply = %+v, want a deadline refusal", r)
	}
	if err := <-errc; err == nil {
		t.Fatal("ReadOpen succeeded past its deadline")
	}
}

func TestReadOpenCancelled(t *testing.T) {
	server, client := pipe(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := ReadOpen(ctx, server, time.Minute)
		errc <- err
	}()
	cancel()
	r := readReply(t, client)
	if r.OK || !strings.Contains(r.Error, "shutting down") {
		t.Fatalf("reply = %+v, want a shutdown refusal", r)
	}
	if err := <-errc; err == nil {
		t.Fatal("ReadOpen succeeded after cancellation")
	}
}

func TestOpenFramed(t *testing.T) {
	frame := OpenFrame{Target: "https://a.example/mcp", Org: "o", Account: "a", Token: "secret"}
	t.Run("accepted", func(t *testing.T) {
		server, client := pipe(t)
		type result struct {
			conn *LineConn
			req  *OpenRequest
			err  error
		}
		done := make(chan result, 1)
		go func() {
			req, err := ReadOpen(context.Background(), server, time.Second)
			if err != nil {
				done <- result{err: err}
				return
			}
			conn, err := req.Accept(LineOptions{})
			done <- result{conn: conn, req: req, err: err}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cc, err := OpenFramed(ctx, client, frame, LineOptions{})
		if err != nil {
			t.Fatalf("OpenFramed: %v", err)
		}
		defer cc.Close()
		res := <-done
		if res.err != nil {
			t.Fatalf("server: %v", res.err)
		}
		defer res.conn.Close()
		if diff := cmp.Diff(frame, res.req.Frame); diff != "" {
			t.Fatalf("frame mismatch (-want +got):\n%s", diff)
		}

		// Messages flow both ways.
		id, _ := jsonrpc.MakeID(float64(1))
		go cc.Write(ctx, &jsonrpc.Request{ID: id, Method: "tools/list"})
		msg, err := res.conn.Read(ctx)
		if err != nil {
			t.Fatalf("server Read: %v", err)
		}
		if req, ok := msg.(*jsonrpc.Request); !ok || req.Method != "tools/list" {
			t.Fatalf("server read %#v, want the tools/list request", msg)
		}
		go res.conn.Write(ctx, &jsonrpc.Response{ID: id, Result: json.RawMessage(`{"tools":[]}`)})
		msg, err = cc.Read(ctx)
		if err != nil {
			t.Fatalf("client Read: %v", err)
		}
		if resp, ok := msg.(*jsonrpc.Response); !ok || string(resp.Result) != `{"tools":[]}` {
			t.Fatalf("client read %#v, want the response", msg)
		}
	})
	t.Run("refused", func(t *testing.T) {
		server, client := pipe(t)
		go func() {
			req, err := ReadOpen(context.Background(), server, time.Second)
			if err == nil {
				req.Refuse(&HTTPError{Code: -32085, Message: `no route for target "https://a.example/mcp"`})
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := OpenFramed(ctx, client, frame, LineOptions{})
		var re *RefusalError
		if !errors.As(err, &re) {
			t.Fatalf("OpenFramed error = %v, want a *RefusalError", err)
		}
		if re.Code != -32085 || !strings.Contains(re.Error(), `no route for target "https://a.example/mcp"`) {
			t.Fatalf("refusal = %+v", re)
		}
	})
	t.Run("internal errors keep their text inside", func(t *testing.T) {
		s := newMemStream([]byte(`{"route":"r","org":"o","account":"a"}` + "\n"))
		req, err := ReadOpen(context.Background(), s, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		req.Refuse(errors.New("bolt: database at /secret/path is corrupt"))
		if r := s.reply(t); r.Code != jsonrpc.CodeInternalError || strings.Contains(r.Error, "secret") {
			t.Fatalf("reply = %+v, want an internal error without details", r)
		}
	})
	t.Run("gateway hangs up", func(t *testing.T) {
		server, client := pipe(t)
		go func() {
			ReadOpen(context.Background(), server, time.Second)
			server.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// ReadOpen accepts the frame but nobody answers; closing the
		// server end must not leave the client waiting.
		if _, err := OpenFramed(ctx, client, frame, LineOptions{}); err == nil {
			t.Fatal("OpenFramed succeeded without a reply")
		}
	})
	t.Run("context ends the wait", func(t *testing.T) {
		server, client := pipe(t)
		go io.Copy(io.Discard, server) // reads the frame, never answers
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := OpenFramed(ctx, client, frame, LineOptions{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("OpenFramed error = %v, want the context's deadline", err)
		}
	})
}

func TestLineConn(t *testing.T) {
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		``,
		`   `,
		`{"jsonrpc":"2.0","id":2,"method":"` + strings.Repeat("x", 2000) + `"}`,
		`{{{ not json`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\r",
		`{"jsonrpc":"2.0","id":3,"result":{}}`,
	}, "\n") + "\n"
	c := NewLineConn(newMemStream([]byte(in)), LineOptions{MaxMessageBytes: 1024})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	var got []string
	for {
		msg, err := c.Read(ctx)
		if me, ok := AsMessageError(err); ok {
			got = append(got, "error "+jsonrpcCodeName(me.Code))
			continue
		}
		if err != nil {
			if !errors.Is(err, mcp.ErrConnectionClosed) {
				t.Fatalf("Read error %v, want mcp.ErrConnectionClosed at the end", err)
			}
			break
		}
		switch m := msg.(type) {
		case *jsonrpc.Request:
			got = append(got, "request "+m.Method)
		case *jsonrpc.Response:
			got = append(got, "response")
		}
	}
	want := []string{"request ping", "error invalid-request", "error parse", "request notifications/initialized", "response"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("messages mismatch (-want +got):\n%s", diff)
	}
}

func jsonrpcCodeName(code int64) string {
	switch code {
	case jsonrpc.CodeParseError:
		return "parse"
	case jsonrpc.CodeInvalidRequest:
		return "invalid-request"
	}
	return "other"
}

func TestLineConnWrite(t *testing.T) {
	s := newMemStream(nil)
	c := NewLineConn(s, LineOptions{})
	ctx := context.Background()
	id, _ := jsonrpc.MakeID(float64(7))
	if err := c.Write(ctx, &jsonrpc.Response{ID: id, Result: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// A parse error has no id to answer with: it must be "id":null.
	if err := c.Write(ctx, &jsonrpc.Response{Error: &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "bad"}}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	lines := strings.Split(strings.TrimSuffix(s.written(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("wrote %q, want two lines", s.written())
	}
	if got, want := lines[0], `{"jsonrpc":"2.0","id":7,"result":{}}`; got != want {
		t.Fatalf("line 1 = %s, want %s", got, want)
	}
	if got, want := lines[1], `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}`; got != want {
		t.Fatalf("line 2 = %s, want %s", got, want)
	}
	if err := c.Write(ctx, &jsonrpc.Response{ID: id}); !errors.Is(err, mcp.ErrConnectionClosed) {
		t.Fatalf("Write after Close = %v, want mcp.ErrConnectionClosed", err)
	}
}

func TestLineConnUnblocks(t *testing.T) {
	t.Run("Close unblocks Read", func(t *testing.T) {
		server, _ := pipe(t)
		c := NewLineConn(server, LineOptions{})
		errc := make(chan error, 1)
		go func() { _, err := c.Read(context.Background()); errc <- err }()
		c.Close()
		if err := <-errc; !errors.Is(err, mcp.ErrConnectionClosed) {
			t.Fatalf("Read = %v, want mcp.ErrConnectionClosed", err)
		}
	})
	t.Run("context ends Read", func(t *testing.T) {
		server, _ := pipe(t)
		c := NewLineConn(server, LineOptions{})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := c.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Read = %v, want the context's deadline", err)
		}
	})
	t.Run("context ends a blocked Write", func(t *testing.T) {
		server, _ := pipe(t) // nobody reads the other end
		c := NewLineConn(server, LineOptions{})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		id, _ := jsonrpc.MakeID(float64(1))
		if err := c.Write(ctx, &jsonrpc.Request{ID: id, Method: "ping"}); !errors.Is(err, mcp.ErrConnectionClosed) {
			t.Fatalf("Write = %v, want mcp.ErrConnectionClosed", err)
		}
	})
}

// TestLineConnReadsInline: Reads whose context cannot end read the stream
// on the caller's goroutine (a framed session holds no goroutine for it);
// the first Read whose context can end starts the reader it needs, and
// what was read inline before is not lost.
func TestLineConnReadsInline(t *testing.T) {
	server, client := pipe(t)
	c := NewLineConn(server, LineOptions{})
	defer c.Close()
	go client.Write([]byte("{\"jsonrpc\":\"2.0\",\"method\":\"a\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"b\"}\n"))
	msg, err := c.Read(context.WithoutCancel(context.Background()))
	if err != nil || msg.(*jsonrpc.Request).Method != "a" {
		t.Fatalf("inline Read = %v, %v; want notification a", msg, err)
	}
	if n := goroutinesIn("(*LineConn).readLoop"); n != 0 {
		t.Fatalf("%d read loops after an inline Read, want 0", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msg, err = c.Read(ctx)
	if err != nil || msg.(*jsonrpc.Request).Method != "b" {
		t.Fatalf("Read = %v, %v; want notification b", msg, err)
	}
	if n := goroutinesIn("(*LineConn).readLoop"); n != 1 {
		t.Fatalf("%d read loops after a Read whose context can end, want 1", n)
	}
}
