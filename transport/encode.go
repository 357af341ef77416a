package transport

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// appendMessage appends msg's wire form to dst. A request, or a response
// with a result, whose method and string id need no escaping is written
// directly, its params or result as they are (compacted only when they
// hold a line break, which would end a line of a framed stream); every
// other message is encoded by encodeMessage's rules. Both forms read the
// same to every JSON-RPC reader: the direct one differs from the SDK's
// encoder only in keeping the white space within params or result.
func appendMessage(dst []byte, msg jsonrpc.Message) ([]byte, error) {
	if out, ok := appendPlain(dst, msg); ok {
		return out, nil
	}
	data, err := encodeSlow(msg)
	if err != nil {
		return dst, err
	}
	return append(dst, data...), nil
}

// appendPlain writes msg directly when its shape allows; it reports false,
// with dst unchanged, otherwise.
func appendPlain(dst []byte, msg jsonrpc.Message) ([]byte, bool) {
	var (
		id     jsonrpc.ID
		method string
		raw    json.RawMessage
		member string
	)
	switch m := msg.(type) {
	case *jsonrpc.Request:
		if m.Method == "" || !plainText(m.Method) {
			return dst, false
		}
		id, method, raw, member = m.ID, m.Method, m.Params, `,"params":`
	case *jsonrpc.Response:
		if m.Error != nil || !m.ID.IsValid() {
			return dst, false
		}
		id, raw, member = m.ID, m.Result, `,"result":`
	default:
		return dst, false
	}
	start := len(dst)
	dst = append(dst, `{"jsonrpc":"2.0"`...)
	switch v := id.Raw().(type) {
	case nil:
	case int64:
		dst = strconv.AppendInt(append(dst, `,"id":`...), v, 10)
	case string:
		if !plainText(v) {
			return dst[:start], false
		}
		dst = append(append(append(dst, `,"id":"`...), v...), '"')
	default:
		return dst[:start], false
	}
	if method != "" {
		dst = append(append(append(dst, `,"method":"`...), method...), '"')
	}
	if len(raw) > 0 {
		dst = append(dst, member...)
		form, ok := ForwardedForm(raw)
		if !ok {
			return dst[:start], false // let the SDK's encoder report it
		}
		dst = append(dst, form...)
	}
	return append(dst, '}'), true
}

// ForwardedForm returns a JSON value as the gateway writes it upstream:
// as it came, or compacted when it spans lines (a line-delimited transport
// cannot carry a newline). ok is false when it must be compacted and is not
// valid JSON. What is hashed for the audit log uses it, so a hash is of the
// bytes the upstream received.
func ForwardedForm(raw []byte) (form []byte, ok bool) {
	if bytes.IndexByte(raw, '\n') < 0 && bytes.IndexByte(raw, '\r') < 0 {
		return raw, true
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// plainText reports whether s is printable ASCII that a JSON string holds
// without escapes (and that no JSON encoder escapes as HTML).
func plainText(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b < 0x20 || b > 0x7e, b == '"', b == '\\', b == '<', b == '>', b == '&':
			return false
		}
	}
	return true
}
