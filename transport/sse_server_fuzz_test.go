package transport

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// FuzzSSEPost posts arbitrary bodies to a legacy HTTP+SSE session: each is
// either accepted (202) as one message that survives re-encoding, or
// refused with a 4xx whose body is a JSON-RPC error with a code and a
// message. Seeds in testdata/fuzz/FuzzSSEPost.
func FuzzSSEPost(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	f.Add([]byte(`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := NewSSEServer(nil, &SSEServerOptions{MaxMessageBytes: 1 << 12})
		sess := &sseSession{id: "s", authorize: func(*http.Request) error { return nil }, incoming: make(chan jsonrpc.Message, 1), done: make(chan struct{})}
		s.sessions[sess.id] = sess
		req := httptest.NewRequest(http.MethodPost, "/v1/sse?sessionid=s", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code == http.StatusAccepted {
			msg := <-sess.incoming
			if _, err := jsonrpc.EncodeMessage(msg); err != nil {
				t.Fatalf("accepted %q, which does not re-encode: %v", body, err)
			}
			return
		}
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("HTTP %d for %q, want 202 or a 4xx", rec.Code, body)
		}
		var e struct {
			Error *jsonrpc.Error `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Code == 0 || e.Error.Message == "" {
			t.Fatalf("refusal body %q is not a JSON-RPC error with a code and message", rec.Body.Bytes())
		}
		select {
		case msg := <-sess.incoming:
			t.Fatalf("refused %q but delivered %v", body, msg)
		default:
		}
	})
}
