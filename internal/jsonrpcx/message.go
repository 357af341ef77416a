package jsonrpcx

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// envelopeKeys are the members of a JSON-RPC message.
var envelopeKeys = []string{"jsonrpc", "id", "method", "params", "result", "error"}

const envelopeWhere = "the JSON-RPC message"

// DecodeMessage decodes one JSON-RPC message as the go-sdk does
// (jsonrpc.DecodeMessage), after checking its envelope strictly: each of
// jsonrpc, id, method, params, result and error at most once, spelled
// exactly, and method and a string id valid UTF-8. The message is decoded by
// the SDK's own decoder so that what the gateway forwards is what the SDK
// would have read. A refusal is an *Error carrying the message's id when
// the id itself is unambiguous; bytes that are not one JSON value, or not
// a JSON-RPC message, are reported with the decoder's error.
//
// A message of the plain shape nearly every message has is read in place
// (see decodePlain), to the very result the SDK's decoder gives; its
// Params or Result alias data, which the caller must not reuse.
func DecodeMessage(data []byte) (jsonrpc.Message, error) {
	if json.Valid(data) {
		if msg, ok := decodePlain(data); ok {
			return msg, nil
		}
	}
	msg, err := jsonrpc.DecodeMessage(data)
	if err != nil {
		return nil, err
	}
	if !json.Valid(data) {
		// The SDK reads the first value and ignores what follows it.
		return nil, fmt.Errorf("%w: data after the JSON-RPC message", ErrSyntax)
	}
	vals, err := members(data, envelopeWhere, envelopeKeys)
	if err == nil {
		if _, _, err = String(vals[2], "method", envelopeWhere); err == nil {
			_, _, err = String(vals[1], "id", envelopeWhere)
		}
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Key != "id" {
			switch m := msg.(type) {
			case *jsonrpc.Request:
				e.ID = m.ID
			case *jsonrpc.Response:
				e.ID, e.Response = m.ID, true
			}
		}
		return nil, err
	}
	return msg, nil
}

// ToolCallName returns params.name of a tools/call request. It reports
// false when params is not an object or has no string name.
func ToolCallName(params json.RawMessage) (string, bool, error) {
	const where = "params of tools/call"
	vals, err := Members(params, where, "name")
	if err != nil {
		if errors.Is(err, ErrNotObject) || errors.Is(err, ErrSyntax) {
			return "", false, nil
		}
		return "", false, err
	}
	return String(vals[0], "name", where)
}

// CancelledRequestID returns params.requestId of notifications/cancelled,
// read as the go-sdk reads it (a number is truncated to an integer). It
// reports false when there is no usable request id.
func CancelledRequestID(params json.RawMessage) (jsonrpc.ID, bool, error) {
	const where = "params of notifications/cancelled"
	vals, err := Members(params, where, "requestId")
	if err != nil {
		if errors.Is(err, ErrNotObject) || errors.Is(err, ErrSyntax) {
			return jsonrpc.ID{}, false, nil
		}
		return jsonrpc.ID{}, false, err
	}
	if _, _, err := String(vals[0], "requestId", where); err != nil {
		return jsonrpc.ID{}, false, err
	}
	var v any
	if vals[0] == nil || json.Unmarshal(vals[0], &v) != nil {
		return jsonrpc.ID{}, false, nil
	}
	id, err := jsonrpc.MakeID(v)
	if err != nil || !id.IsValid() {
		return jsonrpc.ID{}, false, nil
	}
	return id, true, nil
}

// ProgressToken returns the progress token of a request's params
// (params._meta.progressToken) or, for notifications/progress, its
// params.progressToken, as its JSON encoding so that the string "1" and
// the number 1 stay different tokens. It returns "" when there is none or
// it is neither a string nor a number.
func ProgressToken(method string, params json.RawMessage) (string, error) {
	where := "params of " + method
	keys := []string{"_meta"}
	if method == "notifications/progress" {
		keys = append(keys, "progressToken")
	}
	vals, err := Members(params, where, keys...)
	if err != nil {
		if errors.Is(err, ErrNotObject) || errors.Is(err, ErrSyntax) {
			return "", nil
		}
		return "", err
	}
	raw := json.RawMessage(nil)
	if len(vals) > 1 {
		raw = vals[1]
	}
	if raw == nil && vals[0] != nil {
		metaWhere := "params._meta of " + method
		meta, err := members(vals[0], metaWhere, []string{"progressToken"})
		if err != nil && !errors.Is(err, ErrNotObject) {
			return "", err
		}
		if err == nil {
			raw = meta[0]
		}
		where = metaWhere
	}
	if raw == nil {
		return "", nil
	}
	if _, _, err := String(raw, "progressToken", where); err != nil {
		return "", err
	}
	var tok any
	if json.Unmarshal(raw, &tok) != nil {
		return "", nil
	}
	switch tok.(type) {
	case string, float64: // the only token types the protocol allows
	default:
		return "", nil
	}
	key, err := json.Marshal(tok)
	if err != nil {
		return "", nil
	}
	return string(key), nil
}

// ToolList is the tools of a tools/list result, read strictly.
type ToolList struct {
	Tools []json.RawMessage // each tool object, as sent
	Names []string          // Names[i] is the name of Tools[i]
	// The span of the tools array in result, for Keep; end is 0 when
	// result has no tools.
	result     json.RawMessage
	start, end int
}

// ListedTools reads the tools of a tools/list result and each one's name.
// A result or a tool object the client could read differently (a
// duplicate or case-variant "tools" or "name"), a tools member that is not
// an array, a tool that is not an object or a name that is not a string is
// an error: filtering such a list could show the client tools other than
// the ones the rules allowed.
func ListedTools(result json.RawMessage) (*ToolList, error) {
	const where = "the result of tools/list"
	vals, err := Members(result, where, "tools")
	if err != nil {
		return nil, err
	}
	tl := &ToolList{result: result}
	if vals[0] == nil {
		return tl, nil
	}
	tools, err := elements(vals[0])
	if err != nil {
		return nil, fmt.Errorf("tools in %s: %w", where, err)
	}
	tl.start = cap(result) - cap(vals[0])
	tl.end = tl.start + len(vals[0])
	tl.Tools = tools
	tl.Names = make([]string, len(tools))
	for i, t := range tools {
		tw := fmt.Sprintf("tool %d of %s", i, where)
		tv, err := members(t, tw, []string{"name"})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tw, err)
		}
		name, ok, err := String(tv[0], "name", tw)
		if err != nil {
			return nil, err
		}
		if !ok && tv[0] != nil {
			return nil, fmt.Errorf("%s: name is not a string", tw)
		}
		tl.Names[i] = name
	}
	return tl, nil
}

// Keep returns the result with only the tools for which keep[i] is set,
// every other byte unchanged.
func (tl *ToolList) Keep(keep []bool) json.RawMessage {
	if tl.end == 0 {
		return tl.result
	}
	out := make([]byte, 0, len(tl.result))
	out = append(out, tl.result[:tl.start]...)
	out = append(out, '[')
	first := true
	for i, t := range tl.Tools {
		if !keep[i] {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, t...)
	}
	out = append(out, ']')
	return append(out, tl.result[tl.end:]...)
}

// IsToolError reports whether a tools/call result says "isError": true.
func IsToolError(result json.RawMessage) (bool, error) {
	vals, err := Members(result, "the result of tools/call", "isError")
	if err != nil {
		if errors.Is(err, ErrNotObject) || errors.Is(err, ErrSyntax) {
			return false, nil
		}
		return false, err
	}
	return string(vals[0]) == "true", nil
}
