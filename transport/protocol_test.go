package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRefusalRendering: one Refusal is rendered by streamable HTTP and
// WebSocket handshakes (WriteHTTPError) with the HTTP status of its code,
// and by an open frame's reply, with the same code and message.
func TestRefusalRendering(t *testing.T) {
	tests := []struct {
		name       string
		ref        *Refusal
		status     int
		retryAfter string
	}{
		{name: "unauthorized", ref: &Refusal{Code: CodeUnauthorized, Message: "no service token"}, status: http.StatusUnauthorized},
		{name: "forbidden", ref: &Refusal{Code: CodeForbidden, Message: "denied"}, status: http.StatusForbidden},
		{name: "no route", ref: &Refusal{Code: CodeNoRoute, Message: "no route"}, status: http.StatusNotFound},
		{name: "no credential", ref: &Refusal{Code: CodeNoCredential, Message: "no credential"}, status: http.StatusForbidden},
		{name: "upstream", ref: &Refusal{Code: CodeUpstreamError, Message: "unreachable"}, status: http.StatusBadGateway},
		{name: "credential broken", ref: &Refusal{Code: CodeCredentialBroken, Message: "cannot unseal"}, status: http.StatusBadGateway},
		{name: "overloaded", ref: &Refusal{Code: CodeOverloaded, Message: "full", RetryAfter: 1}, status: http.StatusServiceUnavailable, retryAfter: "1"},
		{name: "bad params", ref: &Refusal{Code: -32602, Message: "no org"}, status: http.StatusBadRequest},
		{name: "unknown code", ref: &Refusal{Code: -1, Message: "odd"}, status: http.StatusInternalServerError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteHTTPError(rec, tc.ref)
			if got, want := rec.Code, tc.status; got != want {
				t.Errorf("HTTP status = %d, want %d", got, want)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			var body struct {
				Error struct {
					Code    int64  `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if got, want := body.Error.Code, tc.ref.Code; got != want || body.Error.Message != tc.ref.Message {
				t.Errorf("HTTP body error = %d %q, want %d %q", got, body.Error.Message, want, tc.ref.Message)
			}

			if got := refuseOpen(t, tc.ref); !cmp.Equal(got, OpenReply{Code: tc.ref.Code, Error: tc.ref.Message}) {
				t.Errorf("open reply = %+v, want code %d, error %q", got, tc.ref.Code, tc.ref.Message)
			}
		})
	}
}

// refuseOpen sends an open frame over a pipe, refuses it with err on the
// other end, and returns the reply the opener read.
func refuseOpen(t *testing.T, err error) OpenReply {
	t.Helper()
	opener, server := net.Pipe()
	defer opener.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		opener.Write([]byte(`{"target":"https://a.example/mcp","org":"o","account":"a","token":"t"}` + "\n"))
	}()
	open, rerr := ReadOpen(ctx, server, 10*time.Second)
	if rerr != nil {
		t.Fatal(rerr)
	}
	go open.Refuse(err)
	opener.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, rerr := bufio.NewReader(opener).ReadBytes('\n')
	if rerr != nil {
		t.Fatal(rerr)
	}
	var reply OpenReply
	if err := json.Unmarshal(line, &reply); err != nil {
		t.Fatal(err)
	}
	return reply
}
