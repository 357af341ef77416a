package jsonrpcx

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// maxPlainNesting bounds the brackets a message decoded by decodePlain may
// hold, so that it cannot nest deeper than the go-sdk's decoder accepts
// (1000 levels); a message with more is left to that decoder, which
// checks the exact depth.
const maxPlainNesting = 1000

// decodePlain decodes data, valid JSON, without the go-sdk's decoder when
// it is a message of the plain shape nearly every message has, for which
// the result is known to equal the SDK's: each envelope member at most
// once, spelled exactly, with no key that is escaped, non-ASCII or a case
// variant of a member; "jsonrpc":"2.0"; an id that is an integer of at
// most 15 digits or a string of printable ASCII without escapes; a
// non-empty method of printable ASCII without escapes; params or result
// not null; no error member. It reports false for anything else, which
// DecodeMessage then reads with the SDK's decoder and the strict checks.
//
// The SDK's decoder allocates some 30 KB and takes some 20 µs for one
// small message; this reads the members in place, and the message's
// Params or Result alias data.
func decodePlain(data []byte) (jsonrpc.Message, bool) {
	if bytes.Count(data, []byte{'{'})+bytes.Count(data, []byte{'['}) > maxPlainNesting {
		return nil, false
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	var version, id, method, params, result []byte
	i = skipSpace(data, i+1)
	if data[i] == '}' {
		return nil, false
	}
	for {
		kend := skipString(data, i)
		key := data[i+1 : kend-1]
		i = skipSpace(data, kend)
		i = skipSpace(data, i+1) // the colon
		vend := skipValue(data, i)
		val := data[i:vend]
		var slot *[]byte
		switch string(key) {
		case "jsonrpc":
			slot = &version
		case "id":
			slot = &id
		case "method":
			slot = &method
		case "params":
			slot = &params
		case "result":
			slot = &result
		default:
			if !plainOtherKey(key) {
				return nil, false
			}
		}
		if slot != nil {
			if *slot != nil {
				return nil, false // a duplicate: DecodeMessage refuses it
			}
			*slot = val
		}
		i = skipSpace(data, vend)
		if data[i] == '}' {
			break
		}
		i = skipSpace(data, i+1) // the comma
	}
	if string(version) != `"2.0"` || string(params) == "null" || string(result) == "null" {
		return nil, false
	}
	var rid jsonrpc.ID
	switch {
	case id == nil:
	case id[0] == '"':
		s, ok := plainString(id)
		if !ok {
			return nil, false
		}
		rid, _ = jsonrpc.MakeID(s)
	default:
		n, ok := plainInt(id)
		if !ok {
			return nil, false
		}
		rid, _ = jsonrpc.MakeID(float64(n)) // as the SDK reads a number
	}
	if method != nil {
		m, ok := plainString(method)
		if !ok || m == "" || result != nil {
			return nil, false
		}
		return &jsonrpc.Request{ID: rid, Method: m, Params: json.RawMessage(params)}, true
	}
	if !rid.IsValid() || result == nil || params != nil {
		return nil, false
	}
	return &jsonrpc.Response{ID: rid, Result: json.RawMessage(result)}, true
}

// plainOtherKey reports whether key, a raw key that is not an envelope
// member, is one both the SDK and the strict checks ignore: printable
// ASCII without escapes and not a case variant of a member ("error", which
// decodePlain leaves to the SDK, included).
func plainOtherKey(key []byte) bool {
	for _, b := range key {
		if b < 0x20 || b > 0x7e || b == '\\' {
			return false
		}
	}
	if len(key) < 2 || len(key) > 7 {
		return true // no member is this long
	}
	for _, k := range envelopeKeys {
		if bytes.EqualFold(key, []byte(k)) {
			return false
		}
	}
	return true
}

// plainString returns the JSON string raw when it is printable ASCII with
// no escape sequence, so that every reader decodes it to the same bytes.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	for _, b := range body {
		if b < 0x20 || b > 0x7e || b == '\\' || b == '"' {
			return "", false
		}
	}
	return string(body), true
}

// plainInt returns the JSON number raw when it is an integer of at most 15
// digits, which the SDK's float64 reading holds exactly.
func plainInt(raw []byte) (int64, bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 {
		return 0, false
	}
	for _, b := range digits {
		if b < '0' || b > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil
}
