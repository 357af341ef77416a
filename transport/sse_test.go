package transport

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		input  string
		want   []sseEvent
		errMsg string // the error after the events; "" means io.EOF
	}{
		{
			name:  "one event",
			max:   64,
			input: "event: message\nid: 1\ndata: {}\n\n",
			want:  []sseEvent{{ID: "1", Name: "message", Data: []byte("{}")}},
		},
		{
			name:  "multi-line data",
			max:   64,
			input: "data: a\ndata: b\n\n",
			want:  []sseEvent{{Data: []byte("a\nb")}},
		},
		{
			name:  "CRLF line ends",
			max:   64,
			input: "data: a\r\nid: 2\r\n\r\n",
			want:  []sseEvent{{ID: "2", Data: []byte("a")}},
		},
		{
			name:  "comments, keepalives and bare ids are skipped",
			max:   64,
			input: ": keepalive\n\nid: 3\n\ndata:x\n\n",
			want:  []sseEvent{{Data: []byte("x")}},
		},
		{
			name:  "last event without a blank line",
			max:   64,
			input: "data: tail",
			want:  []sseEvent{{Data: []byte("tail")}},
		},
		{
			name:  "data exactly at the cap",
			max:   8,
			input: "data: 12345678\n\n",
			want:  []sseEvent{{Data: []byte("12345678")}},
		},
		{
			name:   "data over the cap",
			max:    8,
			input:  "data: 123456789\n\n",
			errMsg: "server-sent event larger than 8 bytes",
		},
		{
			name:   "lines adding up over the cap",
			max:    8,
			input:  "data: 1234\ndata: 5678\n\n",
			errMsg: "server-sent event larger than 8 bytes",
		},
		{
			name:   "a line far over the cap",
			max:    8,
			input:  "event: " + strings.Repeat("x", 200) + "\n\n",
			errMsg: "server-sent event line longer than 8 bytes",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newSSEReader(strings.NewReader(tc.input), tc.max)
			var got []sseEvent
			var err error
			for {
				var ev sseEvent
				if ev, err = r.Next(); err != nil {
					break
				}
				got = append(got, ev)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if tc.errMsg == "" {
				if !errors.Is(err, io.EOF) {
					t.Errorf("final error %v, want io.EOF", err)
				}
			} else if err == nil || err.Error() != tc.errMsg {
				t.Errorf("final error %v, want %q", err, tc.errMsg)
			}
		})
	}
}

// FuzzSSEReader reads arbitrary bytes as an event stream with a small cap:
// Next must never panic and never return an event larger than the cap.
func FuzzSSEReader(f *testing.F) {
	const limit = 32
	f.Add([]byte("event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\"}\n\n"))
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n"))
	f.Add([]byte(": comment\n\ndata\n\ndata:\n\n"))
	f.Add([]byte("data: " + strings.Repeat("x", limit) + "\n\n"))
	f.Add([]byte("data: " + strings.Repeat("x", limit/2) + "\ndata: " + strings.Repeat("y", limit/2) + "\n\n"))
	f.Add([]byte(strings.Repeat("data: x\n", 40)))
	f.Add([]byte("id\x00: \xff\n\rdata: \r\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newSSEReader(strings.NewReader(string(data)), limit)
		for i := 0; ; i++ {
			if i > len(data) {
				t.Fatalf("Next returned more events (%d) than the input has bytes", i)
			}
			ev, err := r.Next()
			if err != nil {
				return
			}
			if len(ev.Data) > limit {
				t.Fatalf("event of %d bytes passed a %d-byte cap", len(ev.Data), limit)
			}
			if len(ev.ID) > limit+64 || len(ev.Name) > limit+64 {
				t.Fatalf("event id/name of %d/%d bytes passed the line cap", len(ev.ID), len(ev.Name))
			}
		}
	})
}
