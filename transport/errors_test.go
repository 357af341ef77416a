package transport

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestEncodeMessage(t *testing.T) {
	id, _ := jsonrpc.MakeID("a")
	tests := []struct {
		name string
		msg  jsonrpc.Message
		want string
	}{
		{
			name: "error without id has null id",
			msg:  &jsonrpc.Response{Error: &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "bad"}},
			want: `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}`,
		},
		{
			name: "plain error without id becomes an internal error",
			msg:  &jsonrpc.Response{Error: errors.New("boom")},
			want: `{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"boom"}}`,
		},
		{
			name: "error with id keeps it",
			msg:  &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: -32084, Message: "down"}},
			want: `{"jsonrpc":"2.0","id":"a","error":{"code":-32084,"message":"down"}}`,
		},
		{
			name: "request",
			msg:  &jsonrpc.Request{ID: id, Method: "ping"},
			want: `{"jsonrpc":"2.0","id":"a","method":"ping"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeMessage(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("encodeMessage()=%s, want %s", got, tc.want)
			}
		})
	}
}

func TestWriteHTTPError(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		status     int
		code       int64
		message    string
		retryAfter string
	}{
		{
			name:    "refusal",
			err:     &HTTPError{Status: http.StatusNotFound, Code: -32085, Message: "no route for target"},
			status:  http.StatusNotFound,
			code:    -32085,
			message: "no route for target",
		},
		{
			name:       "retry after",
			err:        &HTTPError{Status: http.StatusTooManyRequests, Code: -32083, Message: "slow down", RetryAfter: 3},
			status:     http.StatusTooManyRequests,
			code:       -32083,
			message:    "slow down",
			retryAfter: "3",
		},
		{
			name:    "internal error hides its text",
			err:     errors.New("open /secret/path: permission denied"),
			status:  http.StatusInternalServerError,
			code:    jsonrpc.CodeInternalError,
			message: "internal error; see the gateway log",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteHTTPError(rec, tc.err)
			if got, want := rec.Code, tc.status; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if got, want := rec.Header().Get("Retry-After"), tc.retryAfter; got != want {
				t.Errorf("Retry-After=%q, want %q", got, want)
			}
			if got, want := rec.Header().Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type=%q, want %q", got, want)
			}
			var body struct {
				ID    *json.RawMessage `json:"id"`
				Error jsonrpc.Error    `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if got, want := body.Error.Code, tc.code; got != want {
				t.Errorf("code=%d, want %d", got, want)
			}
			if got, want := body.Error.Message, tc.message; got != want {
				t.Errorf("message=%q, want %q", got, want)
			}
			if !strings.Contains(rec.Body.String(), `"id":null`) {
				t.Errorf("body %s has no null id", rec.Body)
			}
		})
	}
}
