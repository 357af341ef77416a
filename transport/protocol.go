package transport

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The gateway's wire vocabulary: every JSON-RPC error code it answers with
// and the refusals it sends before a session starts, on every transport.
// Callers branch on the codes; client re-exports the ones it documents.

// JSON-RPC error codes of the gateway, in the implementation-defined server
// error range, clear of the codes the MCP SDKs use (-32000..-32005,
// -32020..-32042).
const (
	CodeUnauthorized     = -32081 // missing, bad or revoked service token
	CodeForbidden        = -32082 // a policy rule denies the call
	CodeRateLimited      = -32083 // a rate limit refused the call; data.retryAfterMs says when to retry
	CodeUpstreamError    = -32084 // the upstream could not be reached or failed a request without a JSON-RPC error of its own
	CodeNoRoute          = -32085 // no route allows the target
	CodeNoCredential     = -32086 // the account has no credential for the route
	CodeOverloaded       = -32087 // a node-wide cap (sessions, in-flight calls, connections) is reached
	CodeCredentialBroken = -32088 // the stored credential cannot be unsealed
	CodeNodeLost         = -32089 // the node went away (or shut down) before answering; the call may be retried
	// CodeConsentRequired: the account has not connected the OAuth-protected
	// route yet (or its consent lapsed); data carries the authorization URL
	// to send the user to, as ConsentData.
	CodeConsentRequired = -32090
)

// ConsentData is the data of a CodeConsentRequired error: where the user
// consents, and why consent is needed. The URL is single use and expires.
type ConsentData struct {
	AuthorizationURL string `json:"authorizationUrl"`
	Reason           string `json:"reason"`
}

// CodeHeaderMismatch is the JSON-RPC error code of a routing header that
// disagrees with the body, as the MCP specification and the go-sdk define
// it.
const CodeHeaderMismatch = -32020

// CodeSDKRejected is the code of the go-sdk's "rejected by transport"
// sentinel, which wraps transport failures (connection refused): it is not
// an answer from the upstream.
const CodeSDKRejected = -32005

// httpStatusOf is the HTTP status of a refusal with each code, where HTTP
// carries it (WebSocket handshake, streamable HTTP).
var httpStatusOf = map[int64]int{
	CodeUnauthorized:           http.StatusUnauthorized,
	CodeForbidden:              http.StatusForbidden,
	CodeRateLimited:            http.StatusTooManyRequests,
	CodeUpstreamError:          http.StatusBadGateway,
	CodeNoRoute:                http.StatusNotFound,
	CodeNoCredential:           http.StatusForbidden,
	CodeOverloaded:             http.StatusServiceUnavailable,
	CodeCredentialBroken:       http.StatusBadGateway,
	CodeNodeLost:               http.StatusServiceUnavailable,
	CodeConsentRequired:        http.StatusForbidden,
	CodeHeaderMismatch:         http.StatusBadRequest,
	jsonrpc.CodeParseError:     http.StatusBadRequest,
	jsonrpc.CodeInvalidRequest: http.StatusBadRequest,
	jsonrpc.CodeInvalidParams:  http.StatusBadRequest,
}

// HTTPStatus returns the HTTP status a refusal with code is sent with:
// 500 for a code the table does not know.
func HTTPStatus(code int64) int {
	if s, ok := httpStatusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Refusal is the gateway refusing a session before it starts, or a request
// on it, whatever the transport: WebSocket and streamable HTTP send it as
// an HTTP error (status from HTTPStatus) with a JSON-RPC error body, an
// open frame as its reply. Message says what was wrong and what to do.
type Refusal struct {
	Code    int64
	Message string
	// RetryAfter, when positive, is how many seconds to wait before
	// retrying (HTTP's Retry-After).
	RetryAfter int
	// Data, when set, is the JSON-RPC error's data (ConsentData for
	// CodeConsentRequired).
	Data json.RawMessage
}

func (e *Refusal) Error() string { return e.Message }

// RefusalError is a Refusal as a client receives it, before a session
// started: an HTTP error with the code and message of its JSON-RPC error
// body, or a refused open frame.
type RefusalError struct {
	Status  int // HTTP status; 0 for a refused open frame
	Code    int64
	Message string
	Data    json.RawMessage // the JSON-RPC error's data, when it had some
}

// Refused reports whether the refusal is about the request itself (bad
// token, no route, forbidden), so another node would refuse it too, rather
// than about the node (overloaded, shutting down).
func (e *RefusalError) Refused() bool {
	if e.Status == 0 { // a refused open frame carries only the JSON-RPC code
		return e.Code != CodeOverloaded && e.Code != CodeUpstreamError
	}
	return e.Status >= 400 && e.Status < 500
}

func (e *RefusalError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("refused with code %d: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("refused with HTTP %d: %s", e.Status, e.Message)
}
