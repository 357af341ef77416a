package jsonrpcx

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestDecodePlain(t *testing.T) {
	tests := []struct {
		name  string
		data  string
		plain bool // read in place rather than by the SDK's decoder
	}{
		{"call", `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo"}}`, true},
		{"string id", `{"jsonrpc":"2.0","id":"a-1","method":"ping"}`, true},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, true},
		{"response", ` { "jsonrpc" : "2.0" , "id" : -7 , "result" : { "tools" : [ ] } } `, true},
		{"unknown member", `{"jsonrpc":"2.0","id":1,"method":"ping","extra":{"x":1}}`, true},
		{"error response", `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`, false},
		{"float id", `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`, false},
		{"16-digit id", `{"jsonrpc":"2.0","id":1234567890123456,"method":"ping"}`, false},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, false},
		{"escaped method", `{"jsonrpc":"2.0","id":1,"method":"p\u0069ng"}`, false},
		{"non-ASCII id", `{"jsonrpc":"2.0","id":"é","method":"ping"}`, false},
		{"empty method", `{"jsonrpc":"2.0","id":1,"method":""}`, false},
		{"null params", `{"jsonrpc":"2.0","id":1,"method":"ping","params":null}`, false},
		{"method and result", `{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}`, false},
		{"no result", `{"jsonrpc":"2.0","id":1}`, false},
		{"duplicate id", `{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}`, false},
		{"case variant", `{"jsonrpc":"2.0","id":1,"method":"ping","Params":{}}`, false},
		{"escaped key", `{"jsonrpc":"2.0","id":1,"method":"ping","p\u0061rams":{}}`, false},
		{"non-ASCII key", `{"jsonrpc":"2.0","id":1,"method":"ping","ſ":{}}`, false},
		{"version", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, false},
		{"deep", `{"jsonrpc":"2.0","id":1,"method":"ping","params":` + deep(1001) + `}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, ok := decodePlain([]byte(tt.data))
			if ok != tt.plain {
				t.Fatalf("decodePlain(%s) = %v, want %v", tt.data, ok, tt.plain)
			}
			if ok {
				checkSameAsSDK(t, []byte(tt.data), msg)
			}
		})
	}
}

// deep is a JSON array nested n levels.
func deep(n int) string {
	return string(bytes.Repeat([]byte{'['}, n)) + string(bytes.Repeat([]byte{']'}, n))
}

// checkSameAsSDK fails unless msg is what the SDK's decoder reads from data
// and what the strict decoder accepts.
func checkSameAsSDK(t *testing.T, data []byte, msg jsonrpc.Message) {
	t.Helper()
	want, err := jsonrpc.DecodeMessage(data)
	if err != nil {
		t.Fatalf("%q: read in place, but the SDK refuses it: %v", data, err)
	}
	switch w := want.(type) {
	case *jsonrpc.Request:
		g, ok := msg.(*jsonrpc.Request)
		if !ok || g.ID != w.ID || g.Method != w.Method || !bytes.Equal(g.Params, w.Params) || (g.Params == nil) != (w.Params == nil) {
			t.Fatalf("%q: read in place as %#v, the SDK reads %#v", data, msg, want)
		}
	case *jsonrpc.Response:
		g, ok := msg.(*jsonrpc.Response)
		if !ok || g.ID != w.ID || !bytes.Equal(g.Result, w.Result) || (g.Result == nil) != (w.Result == nil) || g.Error != nil || w.Error != nil {
			t.Fatalf("%q: read in place as %#v, the SDK reads %#v", data, msg, want)
		}
	}
	if _, err := strictSlow(data); err != nil {
		t.Fatalf("%q: read in place, but the strict checks refuse it: %v", data, err)
	}
}

// strictSlow is DecodeMessage without the in-place path.
func strictSlow(data []byte) (jsonrpc.Message, error) {
	if !json.Valid(data) {
		return nil, ErrSyntax
	}
	if _, err := jsonrpc.DecodeMessage(data); err != nil {
		return nil, err
	}
	vals, err := members(data, envelopeWhere, envelopeKeys)
	if err != nil {
		return nil, err
	}
	if _, _, err = String(vals[2], "method", envelopeWhere); err != nil {
		return nil, err
	}
	_, _, err = String(vals[1], "id", envelopeWhere)
	return nil, err
}

// FuzzDecodePlain checks that whatever decodePlain reads in place is
// exactly what the SDK's decoder reads, and that the strict checks accept
// it: the in-place path is only ever a shortcut to the same message.
func FuzzDecodePlain(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`{"jsonrpc":"2.0","id":"r","result":{"content":[{"type":"text","text":"hi"}]}}`,
		`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}`,
		`{"jsonrpc":"2.0","id":-0,"method":"x","params":[1,"\u00e9",{"a":null}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		if msg, ok := decodePlain(data); ok {
			checkSameAsSDK(t, data, msg)
		}
	})
}
