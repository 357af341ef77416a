package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/.

// FuzzOpenFrame feeds arbitrary bytes to the gateway side of the framed
// handshake: every input is either refused with one well-formed reply line
// or yields a frame that survives a round trip through the client's
// encoding.
func FuzzOpenFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newMemStream(data)
		req, err := ReadOpen(context.Background(), s, time.Second)
		if err != nil {
			if !s.isClosed() {
				t.Fatal("refused stream left open")
			}
			if len(data) == 0 {
				if out := s.written(); out != "" {
					t.Fatalf("answered %q to an empty stream", out)
				}
				return
			}
			r := s.reply(t)
			if r.OK || r.Code == 0 || r.Error == "" {
				t.Fatalf("refusal %+v lacks a code or message", r)
			}
			return
		}
		enc, err := json.Marshal(req.Frame)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseOpenFrame(enc)
		if err != nil {
			t.Fatalf("re-encoded frame %s refused: %v", enc, err)
		}
		if diff := cmp.Diff(req.Frame, again); diff != "" {
			t.Fatalf("frame changed in a round trip (-first +second):\n%s", diff)
		}
		if req.Frame.Target != "" && req.Frame.Route != "" {
			t.Fatal("accepted a frame with both target and route")
		}
		conn, err := req.Accept(LineOptions{MaxMessageBytes: 1024})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if out := s.written(); out != `{"ok":true}`+"\n" {
			t.Fatalf("accept wrote %q", out)
		}
		// Whatever followed the frame must be readable as session lines.
		drain(t, conn)
	})
}

// FuzzLineConn feeds arbitrary bytes to a LineConn: it must never fail on
// one bad line, and every message it yields must survive a write and read
// back unchanged, as exactly one line.
func FuzzLineConn(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewLineConn(newMemStream(data), LineOptions{MaxMessageBytes: 256})
		defer c.Close()
		if got, lines := drain(t, c), bytes.Count(data, []byte{'\n'})+1; got > lines {
			t.Fatalf("read %d messages and errors from %d lines", got, lines)
		}
	})
}

// drain reads c to its end, checking each message and error, and returns
// how many it read.
func drain(t *testing.T, c *LineConn) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for {
		msg, err := c.Read(ctx)
		if me, ok := AsMessageError(err); ok {
			if me.Code != jsonrpc.CodeParseError && me.Code != jsonrpc.CodeInvalidRequest {
				t.Fatalf("message error with code %d: %s", me.Code, me.Message)
			}
			n++
			continue
		}
		if err != nil {
			if !errors.Is(err, mcp.ErrConnectionClosed) {
				t.Fatalf("stream ended with %v, want mcp.ErrConnectionClosed", err)
			}
			return n
		}
		n++
		checkRoundTrip(t, msg)
	}
}

// checkRoundTrip writes msg through a LineConn and reads it back.
func checkRoundTrip(t *testing.T, msg jsonrpc.Message) {
	t.Helper()
	want, err := encodeMessage(msg)
	if err != nil {
		return // the SDK cannot encode it either; nothing was forwarded
	}
	out := newMemStream(nil)
	w := NewLineConn(out, LineOptions{})
	if err := w.Write(context.Background(), msg); err != nil {
		t.Fatalf("Write: %v", err)
	}
	w.Close()
	line := out.written()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("message written as %q, want exactly one line", line)
	}
	r := NewLineConn(newMemStream([]byte(line)), LineOptions{MaxMessageBytes: int64(len(line)) + 1})
	defer r.Close()
	back, err := r.Read(context.Background())
	if err != nil {
		t.Fatalf("reading back %q: %v", line, err)
	}
	got, err := encodeMessage(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("round trip changed the message:\n got %s\nwant %s", got, want)
	}
}
