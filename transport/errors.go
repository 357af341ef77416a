package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// MessageError reports that one incoming message was unusable (malformed
// JSON, over the size cap) while the connection itself is still fine. Read
// returns it so the caller can answer that message with a JSON-RPC error and
// read on.
type MessageError struct {
	Code    int64  // JSON-RPC error code to answer with
	Message string // what was wrong and what to do
	// ID is the id of the refused message when it could still be read (an
	// oversized or binary message), so that the error can fail the call
	// it belongs to instead of leaving its caller waiting. Response says
	// whether that message was a response: then the call to fail is the
	// peer's. For malformed messages ID is invalid (JSON-RPC's null id).
	ID       jsonrpc.ID
	Response bool
}

func (e *MessageError) Error() string { return e.Message }

// AsMessageError reports whether err is a per-message error.
func AsMessageError(err error) (*MessageError, bool) {
	var me *MessageError
	ok := errors.As(err, &me)
	return me, ok
}

// decodeMessage decodes one JSON-RPC message strictly (see jsonrpcx),
// turning a decode failure into a MessageError that names the problem.
func decodeMessage(data []byte) (jsonrpc.Message, error) {
	msg, err := jsonrpcx.DecodeMessage(data)
	var strict *jsonrpcx.Error
	if errors.As(err, &strict) {
		// The message is readable but ambiguous: answer the call it is,
		// when its id is not what is ambiguous.
		return nil, &MessageError{Code: jsonrpcx.CodeInvalidRequest, Message: strict.Error(), ID: strict.ID, Response: strict.Response}
	}
	if err != nil {
		return nil, &MessageError{
			Code:    jsonrpc.CodeParseError,
			Message: fmt.Sprintf("malformed JSON-RPC message: %v; send one JSON-RPC 2.0 object per message", err),
		}
	}
	if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "" {
		// The SDK decodes "method":"" but cannot encode it again: it would
		// reach the upstream as a message that is neither call nor response.
		return nil, &MessageError{Code: jsonrpc.CodeInvalidRequest, Message: "JSON-RPC request with an empty method; name the method to call"}
	}
	return msg, nil
}

// tooLarge is the MessageError for a message over the cap, of which head
// is the first part.
func tooLarge(limit int64, head []byte) *MessageError {
	me := &MessageError{
		Code:    jsonrpc.CodeInvalidRequest,
		Message: fmt.Sprintf("message larger than %d bytes refused; split it or ask the operator to raise the message size limit", limit),
	}
	me.ID, me.Response = peekID(head)
	return me
}

// peekID reads the id of a JSON-RPC message from its first bytes, which may
// be cut short, and whether the message is a response. It reads the
// top-level members in order and stops at the first it cannot skip, so it
// finds the id when the id and the method (or result, or error) precede
// the bulk of the message, as the SDKs write them. It returns an invalid
// id when it cannot tell both.
func peekID(head []byte) (id jsonrpc.ID, response bool) {
	dec := json.NewDecoder(bytes.NewReader(head))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return jsonrpc.ID{}, false
	}
	sawMethod, sawResult, sawID := false, false, false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok {
		case "method": // what makes a message a request, as for DecodeMessage
			sawMethod = true
		case "result", "error":
			sawResult = true
		case "id":
			var v any
			if sawID || dec.Decode(&v) != nil {
				// Two ids: which one the peer meant is anyone's guess.
				return jsonrpc.ID{}, false
			}
			sawID = true
			if id, err = jsonrpc.MakeID(v); err != nil {
				return jsonrpc.ID{}, false
			}
			continue
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			break
		}
	}
	if !id.IsValid() || (!sawMethod && !sawResult) {
		return jsonrpc.ID{}, false
	}
	return id, !sawMethod
}

// HTTPError is a refusal of an HTTP request whose status says what no
// JSON-RPC code does (wrong method, media type, path or session): an HTTP
// status plus a JSON-RPC error body that says what was wrong and what to
// do. The gateway's own refusals, the same on every transport, are
// *Refusal.
type HTTPError struct {
	Status  int
	Code    int64
	Message string
	// RetryAfter, when positive, is sent as a Retry-After header (seconds).
	RetryAfter int
	// ID, when valid, is the id of the request the refusal answers.
	ID jsonrpc.ID
	// Data, when set, is the JSON-RPC error's data.
	Data json.RawMessage
}

func (e *HTTPError) Error() string { return e.Message }

// WriteHTTPError writes err as an HTTP error response with a JSON-RPC error
// body: an *HTTPError as it is, a *Refusal with the status of its code.
// Other errors become 500s without their text, so internal details never
// leak to callers.
func WriteHTTPError(w http.ResponseWriter, err error) {
	var he *HTTPError
	var ref *Refusal
	if errors.As(err, &ref) {
		he = &HTTPError{Status: HTTPStatus(ref.Code), Code: ref.Code, Message: ref.Message, RetryAfter: ref.RetryAfter, Data: ref.Data}
	} else if !errors.As(err, &he) {
		he = &HTTPError{Status: http.StatusInternalServerError, Code: jsonrpc.CodeInternalError, Message: "internal error; see the gateway log"}
	}
	if he.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(he.RetryAfter))
	}
	body, _ := encodeMessage(&jsonrpc.Response{ID: he.ID, Error: &jsonrpc.Error{Code: he.Code, Message: he.Message, Data: he.Data}})
	// WebSocket clients refused before the upgrade often show only the
	// status line and headers, never the body: the reason goes in a header
	// too.
	w.Header().Set(ErrorHeader, headerSafe(he.Message))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.Status)
	w.Write(body)
}

// encodeMessage encodes msg for the wire. An error response with no id (the
// request could not be parsed) is written with "id": null as JSON-RPC 2.0
// requires; the SDK's encoder would leave the id out.
func encodeMessage(msg jsonrpc.Message) ([]byte, error) {
	return appendMessage(nil, msg)
}

// encodeSlow is encodeMessage by the SDK's encoder.
func encodeSlow(msg jsonrpc.Message) ([]byte, error) {
	if r, ok := msg.(*jsonrpc.Response); ok && !r.ID.IsValid() && r.Error != nil {
		var werr *jsonrpc.Error
		if !errors.As(r.Error, &werr) {
			werr = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: r.Error.Error()}
		}
		return json.Marshal(nullIDError{Version: "2.0", Error: werr})
	}
	return jsonrpc.EncodeMessage(msg)
}

type nullIDError struct {
	Version string         `json:"jsonrpc"`
	ID      *struct{}      `json:"id"` // always null
	Error   *jsonrpc.Error `json:"error"`
}

// decodeErrorBody reads the JSON-RPC error of an HTTP error body, whatever
// its id.
func decodeErrorBody(body []byte) (*jsonrpc.Error, bool) {
	var v struct {
		Error *jsonrpc.Error `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil || v.Error == nil || v.Error.Message == "" {
		return nil, false
	}
	return v.Error, true
}

// ErrorHeader carries the message of an HTTP error answer, for clients
// that do not read its body (WebSocket clients refused before the upgrade).
const ErrorHeader = "X-Mcpgw-Error"

// headerSafe makes msg a header value: printable ASCII, at most 512 bytes.
func headerSafe(msg string) string {
	b := make([]byte, 0, min(len(msg), 512))
	for i := 0; i < len(msg) && len(b) < 512; i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}
