package auditsink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/mcpgw/mcpgw/storage"
)

// collector is an OTLP/HTTP logs receiver: it decodes each export and
// keeps every log record by its audit id; while down it answers 503 as an
// overloaded or restarting collector does.
type collector struct {
	t    *testing.T
	down atomic.Bool

	mu    sync.Mutex
	order []string          // ids in arrival order
	byID  map[string][]byte // id → the log record's encoding
	errs  []error
}

func startCollector(t *testing.T) (*collector, string) {
	c := &collector{t: t, byID: map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	if c.down.Load() {
		http.Error(w, "collector restarting", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(r.Body)
	var req collogspb.ExportLogsServiceRequest
	if err == nil && (r.URL.Path != "/v1/logs" || r.Header.Get("Content-Type") != "application/x-protobuf") {
		err = fmt.Errorf("export to %s as %s", r.URL.Path, r.Header.Get("Content-Type"))
	}
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rl := range req.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				id := ""
				for _, kv := range lr.Attributes {
					if kv.Key == AttrID {
						id = kv.Value.GetStringValue()
					}
				}
				enc, _ := proto.MarshalOptions{Deterministic: true}.Marshal(lr)
				if prev, ok := c.byID[id]; ok && !bytes.Equal(prev, enc) {
					c.errs = append(c.errs, fmt.Errorf("record %s sent twice with different content", id))
				}
				c.byID[id] = enc
				c.order = append(c.order, id)
			}
		}
	}
	out, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// haveAll reports whether records n1/1…n1/n all arrived.
func (c *collector) haveAll(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) > 0 {
		c.t.Fatalf("collector: %v", c.errs)
	}
	for seq := 1; seq <= n; seq++ {
		if _, ok := c.byID["n1/"+strconv.Itoa(seq)]; !ok {
			return false
		}
	}
	return true
}

func (c *collector) arrived() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

func startOTLP(t *testing.T, l *storage.AuditLog, endpoint string) *OTLP {
	t.Helper()
	cfg := DefaultOTLPConfig()
	cfg.Endpoint, cfg.Log, cfg.NodeID = endpoint, l, "n1"
	cfg.MinBackoff, cfg.MaxBackoff, cfg.SaveEvery, cfg.Batch = 20*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond, 32
	cfg.Registerer = prometheus.NewRegistry()
	s, err := NewOTLP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestOTLPAcrossOutageAndRestart: a collector that refuses exports for a
// while gets every record once it is back, a record sent again being the
// same log record; a sink started again on the log resumes after its
// cursor.
func TestOTLPAcrossOutageAndRestart(t *testing.T) {
	l := openLog(t)
	appendRecords(t, l, 100)
	c, url := startCollector(t)
	s := startOTLP(t, l, url)
	waitFor(t, "the first records", func() bool { return len(c.arrived()) >= 32 })
	c.down.Store(true)
	appendRecords(t, l, 100)
	waitFor(t, "an export refused", func() bool { return value(t, s.errs.WithLabelValues(errWrite)) >= 1 })
	if got := value(t, s.connected); got != 0 {
		t.Errorf("connected = %v while the collector refuses, want 0", got)
	}
	c.down.Store(false)
	appendRecords(t, l, 100)
	waitFor(t, "every record", func() bool { return c.haveAll(300) })
	waitFor(t, "the cursor at 300", func() bool { n, err := s.Cursor(); return err == nil && n == 300 })
	if got := value(t, s.lag); got != 0 {
		t.Errorf("lag = %v, want 0", got)
	}
	s.Close()

	// A log record is the stored record as its body, with its id.
	stored, err := l.After(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var lr logspb.LogRecord
	c.mu.Lock()
	err = proto.Unmarshal(c.byID["n1/1"], &lr)
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(stored[0])
	if got := lr.Body.GetStringValue(); got != string(want) || lr.EventName != "mcpgw.audit.tool_call" || lr.TimeUnixNano != uint64(stored[0].Time.UnixNano()) {
		t.Errorf("log record: body %s event %q time %d; want body %s", got, lr.EventName, lr.TimeUnixNano, want)
	}

	before := len(c.arrived())
	appendRecords(t, l, 20)
	startOTLP(t, l, url)
	waitFor(t, "320 records", func() bool { return c.haveAll(320) })
	if got := c.arrived()[before]; got != "n1/301" {
		t.Fatalf("the restarted sink began with %s, want n1/301 (after its cursor)", got)
	}
	if got := len(c.arrived()); got != 320 {
		t.Logf("%d exports of 320 records (records resent after the outage)", got)
	}
}

// TestOTLPRefusals: a bad endpoint is refused before anything starts.
func TestOTLPRefusals(t *testing.T) {
	l := openLog(t)
	for _, bad := range []string{"collector:4318", "grpc://collector:4317", "http://", "http://c:4318/?x=1"} {
		cfg := DefaultOTLPConfig()
		cfg.Endpoint, cfg.Log = bad, l
		if _, err := NewOTLP(cfg); err == nil {
			t.Errorf("NewOTLP(%q) accepted", bad)
		}
	}
}
