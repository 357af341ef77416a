package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

type stringer struct{ s string }

func (s *stringer) String() string { return s.s }

// TestHclogAdapter: raft's values come out as text, its info lines and
// routine warnings at debug, and real warnings stay warnings.
func TestHclogAdapter(t *testing.T) {
	tests := []struct {
		name  string
		level hclog.Level
		msg   string
		args  []any
		want  string // the JSON line's level and fields, after the time
	}{
		{"fmt value", hclog.Info, "initial configuration", []any{"servers", hclog.Fmt("%+v", []struct{ ID string }{{"n1"}})},
			`"level":"DEBUG","msg":"initial configuration","component":"raft","servers":"[{ID:n1}]"}`},
		{"stringer", hclog.Info, "entering leader state", []any{"leader", &stringer{"Node at a [Leader]"}},
			`"level":"DEBUG","msg":"entering leader state","component":"raft","leader":"Node at a [Leader]"}`},
		{"struct", hclog.Warn, "peer lagging", []any{"peer", struct{ ID, Address string }{"n2", "a:1"}},
			`"level":"WARN","msg":"peer lagging","component":"raft","peer":"{ID:n2 Address:a:1}"}`},
		{"duration", hclog.Warn, "slow", []any{"took", 1500 * time.Millisecond},
			`"level":"WARN","msg":"slow","component":"raft","took":"1.5s"}`},
		{"routine warning", hclog.Warn, "heartbeat timeout reached, starting election", nil,
			`"level":"DEBUG","msg":"heartbeat timeout reached, starting election","component":"raft"}`},
		{"closed at shutdown", hclog.Error, "failed to decode incoming command", []any{"error", fmt.Errorf("read: %w", net.ErrClosed)},
			`"level":"DEBUG","msg":"failed to decode incoming command","component":"raft","error":"read: use of closed network connection"}`},
		{"real error", hclog.Error, "failed to decode incoming command", []any{"error", errors.New("bad frame")},
			`"level":"ERROR","msg":"failed to decode incoming command","component":"raft","error":"bad frame"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := newHclog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
			h.Log(tc.level, tc.msg, tc.args...)
			line := strings.TrimSpace(buf.String())
			if _, rest, _ := strings.Cut(line, `Z",`); rest != tc.want {
				t.Fatalf("got  %s\nwant %s", line, tc.want)
			}
		})
	}
}
