package transport

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// Routing headers of the 2026-07-28 streamable HTTP transport. They repeat
// parts of the body so that intermediaries can route a POST without
// parsing it; the body stays what counts.
const (
	HeaderMethod      = "Mcp-Method"
	HeaderName        = "Mcp-Name"
	HeaderParamPrefix = "Mcp-Param-"
)

// checkBody refuses a POST the gateway could read differently from the
// upstream: routing headers that disagree with the body, or a call whose
// progress token is ambiguous (the token decides which stream its progress
// goes to).
func checkBody(h http.Header, msgs []jsonrpc.Message) error {
	for _, m := range msgs {
		if req, ok := m.(*jsonrpc.Request); ok && req.IsCall() {
			if _, err := progressToken(req.Method, req.Params); err != nil {
				return &HTTPError{Status: http.StatusBadRequest, Code: jsonrpcx.CodeInvalidRequest, Message: err.Error(), ID: req.ID}
			}
		}
	}
	return checkRoutingHeaders(h, msgs)
}

// checkRoutingHeaders checks the Mcp-Method, Mcp-Name and Mcp-Param-*
// headers of a POST against its body, as the go-sdk server does, but
// whatever the protocol version: a POST that carries them must agree with
// itself. The gateway never decides on these headers and never forwards
// them; its upstream client derives its own from the body it sends.
//
// Mcp-Param-* headers mirror tool arguments named by the tool's input
// schema (x-mcp-header), which the gateway does not hold, so they are
// checked for form only: one value each, valid Base64 when wrapped, and
// only on tools/call.
func checkRoutingHeaders(h http.Header, msgs []jsonrpc.Message) error {
	var params []string
	for k := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(k), HeaderParamPrefix) {
			params = append(params, http.CanonicalHeaderKey(k))
		}
	}
	methods, names := h.Values(HeaderMethod), h.Values(HeaderName)
	if len(methods) == 0 && len(names) == 0 && len(params) == 0 {
		return nil
	}
	const fix = "send the headers the body implies, or none"
	var id jsonrpc.ID
	mismatch := func(format string, args ...any) error {
		return &HTTPError{Status: http.StatusBadRequest, Code: CodeHeaderMismatch, Message: fmt.Sprintf(format, args...) + "; " + fix, ID: id}
	}
	if len(msgs) != 1 {
		return mismatch("Mcp-Method, Mcp-Name and Mcp-Param-* headers describe one message and this POST is a batch of %d", len(msgs))
	}
	req, ok := msgs[0].(*jsonrpc.Request)
	if !ok {
		return mismatch("Mcp-Method, Mcp-Name and Mcp-Param-* headers sent with a response, which has no method")
	}
	id = req.ID
	for _, k := range append([]string{HeaderMethod, HeaderName}, params...) {
		if len(h.Values(k)) > 1 {
			return mismatch("%s header sent %d times", k, len(h.Values(k)))
		}
	}
	if len(methods) == 1 && methods[0] != req.Method {
		return mismatch("Mcp-Method header %q does not match the body's method %q", clipHeader(methods[0]), req.Method)
	}
	if len(names) == 1 {
		key := ""
		switch req.Method {
		case "tools/call", "prompts/get":
			key = "name"
		case "resources/read":
			key = "uri"
		default:
			return mismatch("Mcp-Name header sent with method %q, which names nothing", req.Method)
		}
		where := "params of " + req.Method
		body, ok := "", false
		vals, err := jsonrpcx.Members(req.Params, where, key)
		if err == nil {
			body, ok, err = jsonrpcx.String(vals[0], key, where)
		}
		var jerr *jsonrpcx.Error
		if errors.As(err, &jerr) {
			return &HTTPError{Status: http.StatusBadRequest, Code: jsonrpcx.CodeInvalidRequest, Message: jerr.Error(), ID: id}
		}
		if !ok {
			return mismatch("Mcp-Name header %q but the body's params have no %s", clipHeader(names[0]), key)
		}
		if !headerMatches(names[0], body) {
			return mismatch("Mcp-Name header %q does not match the body's params.%s %q", clipHeader(names[0]), key, clipHeader(body))
		}
	}
	for _, k := range params {
		if req.Method != "tools/call" {
			return mismatch("%s header sent with method %q; only tools/call carries Mcp-Param-* headers", k, req.Method)
		}
		if _, ok := decodeHeaderValue(h.Get(k)); !ok {
			return mismatch("%s header holds invalid Base64 inside =?base64?…?=", k)
		}
	}
	return nil
}

// headerMatches reports whether a routing header value stands for the body
// value, either as is or Base64-wrapped (=?base64?…?=), the form the
// specification gives values that are not plain ASCII.
func headerMatches(header, body string) bool {
	if header == body {
		return true
	}
	decoded, ok := decodeHeaderValue(header)
	return ok && decoded == body
}

// decodeHeaderValue unwraps a =?base64?…?= header value; other values are
// returned as they are.
func decodeHeaderValue(v string) (string, bool) {
	inner, ok := strings.CutPrefix(v, "=?base64?")
	if !ok {
		return v, true
	}
	if inner, ok = strings.CutSuffix(inner, "?="); !ok {
		return v, true
	}
	b, err := base64.StdEncoding.DecodeString(inner)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// clipHeader bounds a value echoed in an error.
func clipHeader(s string) string {
	if len(s) <= 128 {
		return s
	}
	return s[:128] + "…"
}
