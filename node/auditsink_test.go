package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/mcpgw/mcpgw/gateway/auditsink"
	"github.com/mcpgw/mcpgw/internal/syslogtest"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// argsRecorder is a go-sdk MCP server whose "record" tool keeps the exact
// bytes of the arguments it received.
type argsRecorder struct {
	mu   sync.Mutex
	args [][]byte // guarded by mu
}

func (a *argsRecorder) handler() http.Handler {
	srv := mcp.NewServer(&mcp.Implementation{Name: "recorder", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "record", InputSchema: map[string]any{"type": "object"}}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		a.mu.Lock()
		a.args = append(a.args, bytes.Clone(req.Params.Arguments))
		n := len(a.args)
		a.mu.Unlock()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("recorded <%d> & kept", n)}}}, nil
	})
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
}

func (a *argsRecorder) received() [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]byte(nil), a.args...)
}

// recordCalls makes k calls of the record tool in one raw WebSocket
// session, its arguments written with spaces the gateway does not forward,
// and returns the result bytes the caller got.
func recordCalls(t *testing.T, n *Node, target string, k int) [][]byte {
	t.Helper()
	s := dialRaw(t, n, target, nil)
	s.initialize()
	var results [][]byte
	for i := range k {
		s.nextID++
		frame := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"record","arguments": { "text" : "call <%d> & more", "n" : %d } }}`, s.nextID, i, i)
		s.write(websocket.MessageText, []byte(frame))
		r := s.read()
		if r.Error != nil {
			t.Fatalf("call %d: %d %s", i, r.Error.Code, r.Error.Message)
		}
		results = append(results, bytes.Clone(r.Result))
	}
	s.c.Close(websocket.StatusNormalClosure, "")
	return results
}

// waitShipped waits until n's audit log holds calls tool call records and
// every session's close, and the receiver every record of the log; it
// returns the log's records.
func waitShipped(t *testing.T, n *Node, r *syslogtest.Receiver, calls int) []storage.AuditRecord {
	t.Helper()
	var recs []storage.AuditRecord
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if recs, err = n.audit.log.After(0, 10000); err != nil {
			t.Fatal(err)
		}
		got := shippedByID(t, r)
		missing := ""
		for _, rec := range recs {
			if _, ok := got[rec.Node+"/"+strconv.FormatUint(rec.Seq, 10)]; !ok {
				missing = fmt.Sprintf("seq %d", rec.Seq)
				break
			}
		}
		// The session close records come after the calls' answers.
		closes := 0
		for _, rec := range recs {
			if rec.Kind == storage.AuditSessionClose {
				closes++
			}
		}
		if missing == "" && countKind(recs, storage.AuditToolCall) == calls && closes == countKind(recs, storage.AuditSessionOpen) {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver never got %s of %d records (%d messages), or the log has not %d calls", missing, len(recs), len(r.Messages()), calls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countKind(recs []storage.AuditRecord, k storage.AuditKind) int {
	c := 0
	for _, r := range recs {
		if r.Kind == k {
			c++
		}
	}
	return c
}

// shippedByID indexes the messages received by record id, failing the
// test if two copies of one record differ in any byte.
func shippedByID(t *testing.T, r *syslogtest.Receiver) map[string]syslogtest.Message {
	t.Helper()
	if errs := r.Errors(); len(errs) > 0 {
		t.Fatalf("syslog receiver: %v", errs)
	}
	got := map[string]syslogtest.Message{}
	for _, m := range r.Messages() {
		id := m.Params["id"]
		if prev, ok := got[id]; ok && !bytes.Equal(prev.Frame, m.Frame) {
			t.Fatalf("record %s arrived twice with different content:\n%s\n%s", id, prev.Frame, m.Frame)
		}
		got[id] = m
	}
	return got
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestAuditSyslogAcrossRestarts: the audit records of a known sequence of
// calls reach a syslog receiver, every one at least once and copies
// identical, across a receiver outage (calls go on meanwhile) and a node
// restart on the same data dir, which resumes from the persisted cursor.
// With --audit-hash-payloads the tool call records carry the SHA-256 of
// the argument bytes the upstream received and of the result.
func TestAuditSyslogAcrossRestarts(t *testing.T) {
	rcv := syslogtest.Start(t, nil)
	up := &argsRecorder{}
	upURL := upstreamtest.StartHTTP(t, up.handler()) + "/mcp"
	n := startNode(t, func(c *Config) {
		c.AuditSyslog = "tcp://" + rcv.Addr()
		c.AuditHashPayloads = true
		c.auditSyslogTune = func(sc *auditsink.SyslogConfig) {
			sc.MinBackoff, sc.MaxBackoff, sc.ConfirmAfter = 20*time.Millisecond, 200*time.Millisecond, time.Second
		}
	})
	addRoute(t, n, storage.Route{Name: "rec", URL: upURL})
	var results [][]byte
	results = append(results, recordCalls(t, n, upURL, 3)...)
	waitFor(t, "the first records shipped", func() bool { return len(rcv.Messages()) >= 2 })
	rcv.Stop()
	// The receiver is down: calls are not held up by it.
	results = append(results, recordCalls(t, n, upURL, 3)...)
	rcv.Restart()
	results = append(results, recordCalls(t, n, upURL, 3)...)
	head := waitShipped(t, n, rcv, 9)
	if got := metricValue(t, n, "mcpgw_audit_sink_errors_total", "reason", "closed_by_receiver") +
		metricValue(t, n, "mcpgw_audit_sink_errors_total", "reason", "write"); got < 1 {
		t.Errorf("mcpgw_audit_sink_errors_total = %v after an outage, want ≥ 1", got)
	}
	// Records count as delivered once their connection stayed up a while.
	waitFor(t, "the cursor to reach the records shipped", func() bool {
		c, err := n.audit.sink.Cursor()
		return err == nil && c == head[len(head)-1].Seq
	})
	// Some more the sink sends and has not confirmed when the node stops.
	results = append(results, recordCalls(t, n, upURL, 1)...)

	id, raftAddr, tok := n.NodeID(), n.Raft().Addr(), testToken(n)
	n.Close()
	l, err := storage.OpenAudit(filepath.Join(n.cfg.DataDir, storage.AuditFile), storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cursor, err := l.SinkCursor(auditsink.SyslogCursor)
	l.Close()
	if err != nil || cursor == 0 {
		t.Fatalf("cursor after close: %d, %v; want it persisted", cursor, err)
	}
	before := len(rcv.Messages())
	n = restartNode(t, n, raftAddr)
	testTokens.Store(n, tok)
	results = append(results, recordCalls(t, n, upURL, 3)...)
	recs := waitShipped(t, n, rcv, 13)
	if got, want := rcv.Messages()[before].Params["seq"], strconv.FormatUint(cursor+1, 10); got != want {
		t.Fatalf("after the restart shipping began at seq %s, want %s (the cursor + 1)", got, want)
	}
	if got := metricValue(t, n, "mcpgw_audit_sink_records_total"); got < float64(len(recs))-float64(cursor) {
		t.Errorf("mcpgw_audit_sink_records_total = %v, want ≥ %d", got, len(recs)-int(cursor))
	}

	// Every record arrived, as stored, under its id.
	shipped := shippedByID(t, rcv)
	if got, want := len(shipped), len(recs); got != want {
		t.Errorf("%d distinct records shipped, want %d", got, want)
	}
	for _, rec := range recs {
		m := shipped[id+"/"+strconv.FormatUint(rec.Seq, 10)]
		stored, _ := json.Marshal(rec)
		if !bytes.Equal(m.Msg, stored) || m.Params["hash"] != rec.Hash || m.MsgID != string(rec.Kind) {
			t.Errorf("seq %d shipped as %s, want %s", rec.Seq, m.Msg, stored)
		}
	}

	// The hashes are of the bytes the upstream got and the caller got back.
	args := up.received()
	var calls []storage.AuditRecord
	for _, rec := range recs {
		if rec.Kind == storage.AuditToolCall {
			calls = append(calls, rec)
		}
	}
	if len(calls) != 13 || len(args) != 13 || len(results) != 13 {
		t.Fatalf("%d call records, %d calls upstream, %d results; want 13 each", len(calls), len(args), len(results))
	}
	for i, rec := range calls {
		if !bytes.HasPrefix(args[i], []byte(`{ "text" : "call <`)) {
			t.Fatalf("upstream got arguments %s, want them as the caller wrote them", args[i])
		}
		if got, want := rec.ArgumentsSHA256, hexSum(args[i]); got != want {
			t.Errorf("call %d: arguments_sha256 %s, want sha256(%s) = %s", i, got, args[i], want)
		}
		if got, want := rec.ResultSHA256, hexSum(results[i]); got != want {
			t.Errorf("call %d: result_sha256 %s, want sha256(%s) = %s", i, got, results[i], want)
		}
		if strings.Contains(string(shipped[id+"/"+strconv.FormatUint(rec.Seq, 10)].Frame), "call <") {
			t.Errorf("call %d: the shipped record holds the arguments' values", i)
		}
	}
}

// TestAuditNoPayloadHashByDefault: without --audit-hash-payloads a tool
// call's record has no hash fields.
func TestAuditNoPayloadHashByDefault(t *testing.T) {
	up := &argsRecorder{}
	upURL := upstreamtest.StartHTTP(t, up.handler()) + "/mcp"
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "rec", URL: upURL})
	recordCalls(t, n, upURL, 1)
	recs, body := auditRecords(t, n, "", func(r storage.AuditRecord) bool { return r.Kind == storage.AuditSessionClose })
	if countKind(recs, storage.AuditToolCall) != 1 {
		t.Fatalf("records %+v, want one tool call", recs)
	}
	if bytes.Contains(body, []byte("sha256")) {
		t.Fatalf("audit records carry a payload hash with the flag off: %s", body)
	}
}

// TestAuditOTLPShipsRecords: with AuditOTLPEndpoint every audit record of
// a session reaches an OTLP/HTTP collector as a log record carrying its
// id, under a resource naming the node.
func TestAuditOTLPShipsRecords(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{} // id → body
	instance := ""
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collogspb.ExportLogsServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rl := range req.ResourceLogs {
			for _, kv := range rl.Resource.GetAttributes() {
				if kv.Key == "service.instance.id" {
					instance = kv.Value.GetStringValue()
				}
			}
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					for _, kv := range lr.Attributes {
						if kv.Key == auditsink.AttrID {
							got[kv.Value.GetStringValue()] = lr.Body.GetStringValue()
						}
					}
				}
			}
		}
		out, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(col.Close)
	n, route := gatewayTo(t, func(c *Config) { c.AuditOTLPEndpoint = col.URL })
	s := dialRaw(t, n, route.URL, nil)
	s.initialize()
	s.echo("hi")
	s.c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "every record at the collector", func() bool {
		recs, err := n.audit.log.After(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if countKind(recs, storage.AuditSessionClose) != 1 {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rec := range recs {
			want, _ := json.Marshal(rec)
			if got[rec.Node+"/"+strconv.FormatUint(rec.Seq, 10)] != string(want) {
				return false
			}
		}
		return instance == n.NodeID()
	})
}

// TestAuditPayloadHashWithTracing: with tracing on the gateway rewrites
// params._meta of each call; the arguments hash is still of the bytes the
// upstream received.
func TestAuditPayloadHashWithTracing(t *testing.T) {
	up := &argsRecorder{}
	upURL := upstreamtest.StartHTTP(t, up.handler()) + "/mcp"
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewInMemoryExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	n := startNode(t, func(c *Config) { c.AuditHashPayloads, c.TracerProvider = true, tp })
	addRoute(t, n, storage.Route{Name: "rec", URL: upURL})
	results := recordCalls(t, n, upURL, 1)
	recs, _ := auditRecords(t, n, "kind=tool_call", func(r storage.AuditRecord) bool { return r.Kind == storage.AuditToolCall })
	args := up.received()
	if len(recs) != 1 || len(args) != 1 {
		t.Fatalf("%d call records, %d calls upstream; want 1 each", len(recs), len(args))
	}
	if got, want := recs[0].ArgumentsSHA256, hexSum(args[0]); got != want {
		t.Errorf("arguments_sha256 %s, want sha256(%s) = %s", got, args[0], want)
	}
	if got, want := recs[0].ResultSHA256, hexSum(results[0]); got != want {
		t.Errorf("result_sha256 %s, want sha256(%s) = %s", got, results[0], want)
	}
}

// TestAuditSinkConfigRefusals: sink settings that cannot work are refused
// at New, naming the flag to fix.
func TestAuditSinkConfigRefusals(t *testing.T) {
	tests := []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"udp syslog", func(c *Config) { c.AuditSyslog = "udp://siem:514" }, "--audit-syslog"},
		{"syslog without port", func(c *Config) { c.AuditSyslog = "tls://siem" }, "--audit-syslog"},
		{"CA without syslog", func(c *Config) { c.AuditSyslogCA = "ca.pem" }, "--audit-syslog tls://"},
		{"CA for plain tcp", func(c *Config) { c.AuditSyslog, c.AuditSyslogCA = "tcp://siem:514", "ca.pem" }, "tls://"},
		{"facility", func(c *Config) { c.AuditSyslog, c.AuditSyslogFacility = "tcp://siem:514", "kernel" }, "--audit-syslog-facility"},
		{"app name", func(c *Config) { c.AuditSyslog, c.AuditSyslogAppName = "tcp://siem:514", "" }, "--audit-syslog-app-name"},
		{"OTLP host:port", func(c *Config) { c.AuditOTLPEndpoint = "collector:4318" }, "--audit-otlp-endpoint"},
	}
	ok := DefaultConfig()
	ok.VaultKeys = testVaultKeys(t)
	ok.AuditSyslog, ok.AuditSyslogCA, ok.AuditOTLPEndpoint = "tls://siem.internal:6514", "ca.pem", "http://collector:4318"
	if _, err := New(ok); err != nil {
		t.Fatalf("New with both sinks: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.VaultKeys = testVaultKeys(t)
			tt.set(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
