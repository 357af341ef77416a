package node

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// TestSessionInFlightCap: a session at its cap of calls awaiting answers
// gets an immediate transport.CodeOverloaded for further calls and keeps reading:
// pings are answered and a cancellation frees a slot.
func TestSessionInFlightCap(t *testing.T) {
	upURL := blockingUpstream(t)
	n := startNode(t, func(c *Config) { c.MaxCallsPerSession = 2 })
	addRoute(t, n, storage.Route{Name: "blk", URL: upURL})
	for _, kind := range lineTransports {
		t.Run(kind, func(t *testing.T) {
			ls := openLineSession(t, n, kind, testToken(n), "blk")
			block := map[string]any{"name": "block", "arguments": map[string]any{}}
			ls.start(10, "tools/call", block)
			ls.start(11, "tools/call", block)
			r := ls.call(12, "tools/call", map[string]any{"name": "echo", "arguments": map[string]any{"text": "x"}})
			if r.Error == nil || r.Error.Code != transport.CodeOverloaded {
				t.Fatalf("third call answered %+v, want code %d", r, transport.CodeOverloaded)
			}
			if got, want := r.Error.Message, "this session has 2 calls in flight; wait for answers or open another session"; got != want {
				t.Fatalf("message %q, want %q", got, want)
			}
			if r := ls.call(13, "ping", nil); r.Error != nil {
				t.Fatalf("ping at the cap: %+v", r.Error)
			}
			ls.write(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":10}}`)
			ls.echo(14, "a slot again")
			// The other block call still holds its slot.
			ls.start(15, "tools/call", block)
			if r := ls.call(16, "tools/call", block); r.Error == nil || r.Error.Code != transport.CodeOverloaded {
				t.Fatalf("call over the cap answered %+v, want code %d", r, transport.CodeOverloaded)
			}
		})
	}
}

// sseMessages reads every JSON-RPC message of an event stream until it
// ends.
func sseMessages(t *testing.T, resp *http.Response) []rpcReply {
	t.Helper()
	var out []rpcReply
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var r rpcReply
			if err := json.Unmarshal([]byte(data), &r); err != nil {
				t.Fatalf("event data %q: %v", data, err)
			}
			out = append(out, r)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("event stream failed before its end (the gateway did not finish the batch): %v", err)
	}
	return out
}

// TestStreamableBatchDuplicateID: a batch reusing an id answers every
// element, the repeat with -32600, and the stream ends.
func TestStreamableBatchDuplicateID(t *testing.T) {
	n, _ := gatewayTo(t)
	endpoint := streamableEndpoint(n, "up")
	id := openStreamableSession(t, endpoint)
	batch := `[{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"first"}}},` +
		`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"second"}}},` +
		`{"jsonrpc":"2.0","id":6,"method":"ping"}]`
	resp := streamableRequest(t, http.MethodPost, endpoint, "application/json", id, batch)
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("HTTP %d, want %d", got, want)
	}
	msgs := sseMessages(t, resp)
	sort.SliceStable(msgs, func(i, j int) bool { return string(msgs[i].ID) < string(msgs[j].ID) })
	if len(msgs) != 3 {
		t.Fatalf("got %d answers %+v, want 3", len(msgs), msgs)
	}
	var echoed, dup int
	for _, m := range msgs[:2] {
		if string(m.ID) != "5" {
			t.Fatalf("answer %+v, want id 5", m)
		}
		switch {
		case m.Error == nil && m.text(t) == "first":
			echoed++
		case m.Error != nil && m.Error.Code == -32600 && strings.Contains(m.Error.Message, "duplicate id 5 in batch"):
			dup++
		default:
			t.Fatalf("unexpected answer %+v", m)
		}
	}
	if echoed != 1 || dup != 1 {
		t.Fatalf("id 5 answered %d times with the echo and %d times as a duplicate, want once each", echoed, dup)
	}
	if string(msgs[2].ID) != "6" || msgs[2].Error != nil {
		t.Fatalf("ping answered %+v", msgs[2])
	}
}
