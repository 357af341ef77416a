package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestAppendMessage(t *testing.T) {
	sid, _ := jsonrpc.MakeID("a")
	nid, _ := jsonrpc.MakeID(float64(7))
	tests := []struct {
		name  string
		msg   jsonrpc.Message
		want  string
		plain bool // written directly, not by the SDK's encoder
	}{
		{"call", &jsonrpc.Request{ID: nid, Method: "tools/call", Params: json.RawMessage(`{"name": "echo"}`)},
			`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name": "echo"}}`, true},
		{"notification", &jsonrpc.Request{Method: "notifications/initialized"},
			`{"jsonrpc":"2.0","method":"notifications/initialized"}`, true},
		{"result", &jsonrpc.Response{ID: sid, Result: json.RawMessage(`{"content":[]}`)},
			`{"jsonrpc":"2.0","id":"a","result":{"content":[]}}`, true},
		{"line breaks compacted", &jsonrpc.Response{ID: sid, Result: json.RawMessage("{\n\"a\": 1\r\n}")},
			`{"jsonrpc":"2.0","id":"a","result":{"a":1}}`, true},
		{"error", &jsonrpc.Response{ID: sid, Error: &jsonrpc.Error{Code: -32601, Message: "no"}},
			`{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"no"}}`, false},
		{"escaped method", &jsonrpc.Request{ID: nid, Method: "a\"b"},
			`{"jsonrpc":"2.0","id":7,"method":"a\"b"}`, false},
		{"HTML in id", &jsonrpc.Request{ID: mustMakeID("<x>"), Method: "ping"},
			`{"jsonrpc":"2.0","id":"<x>","method":"ping"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, plain := appendPlain(nil, tt.msg)
			if plain != tt.plain {
				t.Fatalf("appendPlain reported %v, want %v", plain, tt.plain)
			}
			got, err := appendMessage([]byte("prefix"), tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "prefix"+tt.want {
				t.Fatalf("appendMessage = %s, want prefix%s", got, tt.want)
			}
		})
	}
}

func mustMakeID(v any) jsonrpc.ID {
	id, err := jsonrpc.MakeID(v)
	if err != nil {
		panic(err)
	}
	return id
}

// FuzzAppendMessage checks that a message written directly reads, to the
// SDK's decoder, exactly as the SDK's own encoding of it does, on one line.
func FuzzAppendMessage(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`{"jsonrpc":"2.0","id":"r","result":{"content":[{"type":"text","text":"hi"}]}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":\"r\",\"result\":{\n\"a\" :\t[1,\r\n2]}}",
		`{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := decodeMessage(data)
		if err != nil {
			return
		}
		want, werr := encodeSlow(msg)
		got, gerr := appendMessage(nil, msg)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("%q: SDK encoder error %v, direct %v", data, werr, gerr)
		}
		if werr != nil {
			return
		}
		if bytes.ContainsAny(got, "\r\n") {
			t.Fatalf("%q: written with a line break: %q", data, got)
		}
		w, err := jsonrpc.DecodeMessage(want)
		if err != nil {
			t.Fatalf("%q: SDK encoding %q does not decode: %v", data, want, err)
		}
		g, err := jsonrpc.DecodeMessage(got)
		if err != nil {
			t.Fatalf("%q: direct encoding %q does not decode: %v", data, got, err)
		}
		if !sameMessage(g, w) {
			t.Fatalf("%q: written as %q, which reads differently from the SDK's %q", data, got, want)
		}
	})
}

// sameMessage compares two decoded messages, params and results by value.
func sameMessage(a, b jsonrpc.Message) bool {
	switch a := a.(type) {
	case *jsonrpc.Request:
		b, ok := b.(*jsonrpc.Request)
		return ok && a.ID == b.ID && a.Method == b.Method && sameJSON(a.Params, b.Params)
	case *jsonrpc.Response:
		b, ok := b.(*jsonrpc.Response)
		if !ok || a.ID != b.ID || !sameJSON(a.Result, b.Result) {
			return false
		}
		var ae, be *jsonrpc.Error
		errors.As(a.Error, &ae)
		errors.As(b.Error, &be)
		return reflect.DeepEqual(ae, be)
	}
	return false
}

func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// BenchmarkEncodeMessage compares the SDK's encoder with appendMessage on a
// typical tools/call result.
func BenchmarkEncodeMessage(b *testing.B) {
	msg := &jsonrpc.Response{ID: mustMakeID(float64(42)), Result: json.RawMessage(`{"content":[{"type":"text","text":"hello"}],"structuredContent":{"text":"hello"}}`)}
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeSlow(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1<<10)
		for b.Loop() {
			var err error
			if buf, err = appendMessage(buf[:0], msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
