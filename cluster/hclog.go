package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends raft's hclog output to the node's slog logger, so raft
// lines come out in the same JSON stream with the same fields.
type hclogAdapter struct {
	base   *slog.Logger // without the fields below
	logger *slog.Logger // base with component name and implied args
	name   string
	args   []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclog(base *slog.Logger, name string, args ...any) *hclogAdapter {
	l := base.With(slog.String("component", name))
	if len(args) > 0 {
		l = l.With(args...)
	}
	return &hclogAdapter{base: base, logger: l, name: name, args: args}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	h.logger.Log(context.Background(), raftLevel(level, msg, args), msg, plainArgs(args)...)
}

// raftLevel moves raft's routine chatter out of an operator's way: its info
// lines (state changes, elections, replication) are debug here, the node
// logs its own summary; and so are the warnings and errors every healthy
// cluster produces (the first election of a new cluster, a joining node's
// empty log, connections cut at shutdown).
func raftLevel(l hclog.Level, msg string, args []any) slog.Level {
	switch {
	case l == hclog.Info:
		return slog.LevelDebug
	case l == hclog.Warn && routineRaftWarnings[msg]:
		return slog.LevelDebug
	case l >= hclog.Warn:
		for i := 1; i < len(args); i += 2 {
			if err, ok := args[i].(error); ok && errors.Is(err, net.ErrClosed) {
				return slog.LevelDebug
			}
		}
	}
	return slogLevel(l)
}

var routineRaftWarnings = map[string]bool{
	"heartbeat timeout reached, starting election": true,
	"failed to get previous log":                   true,
	"appendEntries rejected, sending older logs":   true,
}

// plainArgs renders raft's values as text where the slog handler would not:
// hclog.Fmt values (raft's "%+v" wrappers), Stringers such as *raft.Raft
// (otherwise an empty {} in JSON) and errors. Keys and plain values are kept.
func plainArgs(args []any) []any {
	out := make([]any, len(args))
	copy(out, args)
	for i := 1; i < len(out); i += 2 {
		switch v := out[i].(type) {
		case hclog.Format:
			if len(v) == 0 {
				out[i] = ""
			} else if f, ok := v[0].(string); ok {
				out[i] = fmt.Sprintf(f, v[1:]...)
			} else {
				out[i] = fmt.Sprint(v...)
			}
		case error:
			out[i] = v.Error()
		case fmt.Stringer:
			out[i] = v.String()
		case string, bool, int, int64, uint64, uint32, int32, float64, nil:
		default:
			out[i] = fmt.Sprintf("%+v", v)
		}
	}
	return out
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) enabled(l hclog.Level) bool {
	return h.logger.Enabled(context.Background(), slogLevel(l))
}

func (h *hclogAdapter) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogAdapter) IsError() bool { return h.enabled(hclog.Error) }

func (h *hclogAdapter) ImpliedArgs() []any { return h.args }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	return newHclog(h.base, h.name, append(append([]any{}, h.args...), args...)...)
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return newHclog(h.base, name, h.args...)
}

// SetLevel is ignored: the slog handler decides what is logged.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

func (h *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn} {
		if h.enabled(l) {
			return l
		}
	}
	return hclog.Error
}

func (h *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.logger.Handler(), slog.LevelInfo)
}

func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(nil).Writer()
}
