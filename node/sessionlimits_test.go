package node

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
)

// TestSessionInFlightCap: a session at its cap of calls awaiting answers
// gets an immediate CodeOverloaded for further calls and keeps reading:
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
			if r.Error == nil || r.Error.Code != CodeOverloaded {
				t.Fatalf("third call answered %+v, want code %d", r, CodeOverloaded)
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
			if r := ls.call(16, "tools/call", block); r.Error == nil || r.Error.Code != CodeOverloaded {
				t.Fatalf("call over the cap answered %+v, want code %d", r, CodeOverloaded)
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

// verifiedEntries counts the verified-token cache's entries.
func verifiedEntries(st *policyState) int {
	n := 0
	st.verified.Range(func(any, any) bool { n++; return true })
	return n
}

// TestVerifiedTokenCache: a cached token verifies through the leeway and
// stops at its end, like an uncached one; the count of cached tokens
// follows the entries, so a token re-verified many times never fills the
// cache.
func TestVerifiedTokenCache(t *testing.T) {
	n, clock, _ := startClockedNode(t)
	tok := issueToken(t, n, "svc", []string{"*"}, "1m").Token
	st, err := n.policy()
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string, wantErr bool, wantCached int) {
		t.Helper()
		_, err := n.verifyToken(tok)
		if (err != nil) != wantErr {
			t.Fatalf("%s: verifyToken err = %v, want error %v", when, err, wantErr)
		}
		if got := int(st.cached.Load()); got != wantCached || verifiedEntries(st) != wantCached {
			t.Fatalf("%s: cache counts %d, holds %d entries, want %d", when, got, verifiedEntries(st), wantCached)
		}
	}
	check("fresh", false, 1)
	clock.Advance(time.Minute + 10*time.Second) // past exp, inside the 30s leeway
	for range 100 {
		check("inside the leeway", false, 1)
	}
	clock.Advance(21 * time.Second) // past exp + leeway
	check("past the leeway", true, 0)
	if _, err := n.verifyToken(tok); err == nil || !errors.Is(err, policy.ErrTokenExpired) && !strings.Contains(err.Error(), "expired") {
		t.Fatalf("past the leeway: err = %v, want expired", err)
	}

	// A full count would stop caching: a new token must still be cached.
	other := issueToken(t, n, "svc", []string{"*"}, "1h").Token
	st, err = n.policy() // issuing wrote: a new view
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := n.verifyToken(other); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := st.verified.Load(sha256.Sum256([]byte(other))); !ok || st.cached.Load() != 1 {
		t.Fatalf("new token cached=%v, count %d, want cached with count 1", ok, st.cached.Load())
	}
}
