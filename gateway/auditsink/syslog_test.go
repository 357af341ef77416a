package auditsink

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/mcpgw/mcpgw/internal/certtest"
	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/internal/logtest"
	"github.com/mcpgw/mcpgw/internal/syslogtest"
	"github.com/mcpgw/mcpgw/internal/tcptest"
	"github.com/mcpgw/mcpgw/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openLog opens an audit log in a temp dir.
func openLog(t *testing.T) *storage.AuditLog {
	t.Helper()
	l, err := storage.OpenAudit(filepath.Join(t.TempDir(), storage.AuditFile), storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// appendRecords appends k tool call records of node n1.
func appendRecords(t *testing.T, l *storage.AuditLog, k int) {
	t.Helper()
	recs := make([]storage.AuditRecord, k)
	for i := range recs {
		recs[i] = storage.AuditRecord{Kind: storage.AuditToolCall, Node: "n1", Tool: "echo", Outcome: storage.AuditOK, Org: `a"c]m\e`}
	}
	if err := l.Append(recs); err != nil {
		t.Fatal(err)
	}
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// startSink starts a syslog sink on l to url.
func startSink(t *testing.T, l *storage.AuditLog, url string, mutate ...func(*SyslogConfig)) *Syslog {
	t.Helper()
	cfg := DefaultSyslogConfig()
	cfg.URL, cfg.Log, cfg.Hostname = url, l, "gw-host"
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	// Long enough that a receiver on a loaded machine has read what was
	// written before the tick confirms it (see ConfirmAfter).
	cfg.ConfirmAfter = time.Second
	cfg.Registerer = prometheus.NewRegistry()
	for _, f := range mutate {
		f(&cfg)
	}
	s, err := NewSyslog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitFor polls cond until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	clocktest.Poll(t, 20*time.Second, what, cond)
}

// delivered indexes received messages by record id, checking every copy
// of an id is the same bytes.
func delivered(t *testing.T, r *syslogtest.Receiver) map[string][]byte {
	t.Helper()
	if errs := r.Errors(); len(errs) > 0 {
		t.Fatalf("receiver: %v", errs)
	}
	got := map[string][]byte{}
	for _, m := range r.Messages() {
		id := m.Params["id"]
		if prev, ok := got[id]; ok && !bytes.Equal(prev, m.Frame) {
			t.Fatalf("record %s sent twice with different content:\n%s\n%s", id, prev, m.Frame)
		}
		got[id] = m.Frame
	}
	return got
}

// haveAll reports whether records n1/1…n1/n all arrived.
func haveAll(t *testing.T, r *syslogtest.Receiver, n int) bool {
	t.Helper()
	got := delivered(t, r)
	for seq := 1; seq <= n; seq++ {
		if _, ok := got["n1/"+strconv.Itoa(seq)]; !ok {
			return false
		}
	}
	return true
}

// TestSyslogMessage: each record is one RFC 5424 message whose header,
// structured data and MSG are what the receiver documentation promises,
// MSG being the record exactly as the log stores it.
func TestSyslogMessage(t *testing.T) {
	l := openLog(t)
	recs := []storage.AuditRecord{
		{Kind: storage.AuditToolCall, Node: "n1", Tool: "echo", Outcome: storage.AuditOK, Org: `a"c]m\e`},
		{Kind: storage.AuditRefusal, Node: "n1", Outcome: storage.AuditRefused, Reason: "no_route"},
	}
	if err := l.Append(recs); err != nil {
		t.Fatal(err)
	}
	r := syslogtest.Start(t, nil)
	startSink(t, l, "tcp://"+r.Addr(), func(c *SyslogConfig) { c.Facility = "audit" })
	waitFor(t, "two messages", func() bool { return len(r.Messages()) == 2 })
	if errs := r.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	for i, m := range r.Messages() {
		rec := recs[i]
		wantPri := 13*8 + 6
		if rec.Outcome == storage.AuditRefused {
			wantPri = 13*8 + 4
		}
		if m.Pri != wantPri || m.Hostname != "gw-host" || m.AppName != "mcpgw" || m.ProcID != "-" || m.MsgID != string(rec.Kind) || m.SDID != SDID {
			t.Errorf("message %d header: pri %d host %q app %q procid %q msgid %q sdid %q", i, m.Pri, m.Hostname, m.AppName, m.ProcID, m.MsgID, m.SDID)
		}
		if got, want := m.Timestamp, rec.Time.UTC().Format(timeFormat); got != want {
			t.Errorf("message %d timestamp %q, want %q", i, got, want)
		}
		seq := strconv.FormatUint(rec.Seq, 10)
		want := map[string]string{"id": "n1/" + seq, "node": "n1", "seq": seq, "kind": string(rec.Kind), "hash": rec.Hash}
		for k, v := range want {
			if m.Params[k] != v {
				t.Errorf("message %d param %s = %q, want %q", i, k, m.Params[k], v)
			}
		}
		var got storage.AuditRecord
		if err := json.Unmarshal(m.Msg, &got); err != nil {
			t.Fatalf("MSG %s: %v", m.Msg, err)
		}
		if h, err := storage.AuditHash(got); err != nil || h != rec.Hash || got.Org != rec.Org {
			t.Errorf("MSG %s: hash %s (%v), want %s: not the stored record", m.Msg, h, err, rec.Hash)
		}
	}
}

// TestSyslogAcrossReceiverRestart: a receiver that goes down mid-stream
// and comes back on the same address gets every record at least once,
// each copy of a record the same bytes, over TCP and TLS, and the cursor
// moves on.
func TestSyslogAcrossReceiverRestart(t *testing.T) {
	cert, _ := certtest.Loopback(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tls    *tls.Config
		scheme string
		ca     string
	}{
		{"tcp", nil, "tcp", ""},
		{"tls", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, "tls", caFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openLog(t)
			appendRecords(t, l, 300)
			r := syslogtest.Start(t, tc.tls)
			s := startSink(t, l, tc.scheme+"://"+r.Addr(), func(c *SyslogConfig) { c.CAFile = tc.ca; c.Batch = 16 })
			waitFor(t, "the first records", func() bool { return len(r.Messages()) >= 20 })
			r.Stop()
			appendRecords(t, l, 200) // written while the receiver is down
			waitFor(t, "the sink to notice the outage", func() bool {
				return value(t, s.connected) == 0
			})
			r.Restart()
			appendRecords(t, l, 100)
			waitFor(t, "every record", func() bool { return haveAll(t, r, 600) })
			if n := len(delivered(t, r)); n != 600 {
				t.Fatalf("%d distinct ids, want 600", n)
			}
			t.Logf("%d messages for 600 records", len(r.Messages()))
			waitFor(t, "the cursor to reach the end", func() bool {
				c, err := s.Cursor()
				return err == nil && c == 600
			})
			if got := value(t, s.errs.WithLabelValues(errClosed)) + value(t, s.errs.WithLabelValues(errWrite)); got < 1 {
				t.Errorf("errors counted for the outage: %v, want at least 1", got)
			}
			if got := value(t, s.shipped); got < 600 {
				t.Errorf("records shipped %v, want at least 600", got)
			}
			waitFor(t, "lag 0", func() bool { return value(t, s.lag) == 0 })
		})
	}
}

// TestSyslogResumesFromCursor: a sink started again on the same log (a
// node restart) resends from the persisted cursor on, not from the start
// and not past anything unconfirmed.
func TestSyslogResumesFromCursor(t *testing.T) {
	l := openLog(t)
	appendRecords(t, l, 50)
	r := syslogtest.Start(t, nil)
	s := startSink(t, l, "tcp://"+r.Addr())
	waitFor(t, "the cursor to reach 50", func() bool {
		c, err := s.Cursor()
		return err == nil && c == 50
	})
	appendRecords(t, l, 30)
	waitFor(t, "80 records", func() bool { return haveAll(t, r, 80) })
	s.Close()
	cursor, err := l.SinkCursor(SyslogCursor)
	if err != nil {
		t.Fatal(err)
	}
	if cursor < 50 || cursor > 80 {
		t.Fatalf("cursor after close %d, want 50…80", cursor)
	}
	before := len(r.Messages())
	appendRecords(t, l, 20)

	startSink(t, l, "tcp://"+r.Addr())
	waitFor(t, "100 records", func() bool { return haveAll(t, r, 100) })
	after := r.Messages()[before:]
	if got, want := after[0].Params["seq"], strconv.FormatUint(cursor+1, 10); got != want {
		t.Fatalf("restarted sink began at seq %s, want %s (the cursor + 1)", got, want)
	}
	delivered(t, r) // duplicates identical
}

// TestSyslogRefusals: errors an operator must act on name the receiver
// and what to do; bad settings are refused before anything starts.
func TestSyslogRefusals(t *testing.T) {
	cert, _ := certtest.Loopback(t)
	r := syslogtest.Start(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	plain := syslogtest.Start(t, nil)
	for _, tc := range []struct {
		name, url, serverName, want string
		reason                      string
	}{
		{"unknown CA", "tls://" + r.Addr(), "", "--audit-syslog-ca", errTLS},
		{"plain receiver", "tls://" + plain.Addr(), "", "tcp:// for a plain receiver", errTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logtest.Buffer
			s := startSink(t, openLog(t), tc.url, func(c *SyslogConfig) {
				c.ServerName = tc.serverName
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			waitFor(t, "the refusal logged", func() bool { return strings.Contains(logs.String(), tc.want) })
			if !strings.Contains(logs.String(), tc.url) {
				t.Errorf("log does not name the receiver %s:\n%s", tc.url, logs.String())
			}
			if got := value(t, s.errs.WithLabelValues(tc.reason)); got < 1 {
				t.Errorf("errors{reason=%s} = %v, want ≥ 1", tc.reason, got)
			}
		})
	}

	l := openLog(t)
	for _, tc := range []struct {
		name string
		cfg  func(*SyslogConfig)
		want string
	}{
		{"udp", func(c *SyslogConfig) { c.URL = "udp://127.0.0.1:514" }, "tcp://host:port"},
		{"no port", func(c *SyslogConfig) { c.URL = "tcp://siem" }, "tcp://host:port"},
		{"CA on tcp", func(c *SyslogConfig) { c.CAFile = "ca.pem" }, "tls://"},
		{"facility", func(c *SyslogConfig) { c.Facility = "local9" }, "--audit-syslog-facility"},
		{"app name", func(c *SyslogConfig) { c.AppName = "mc pgw" }, "--audit-syslog-app-name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultSyslogConfig()
			cfg.URL, cfg.Log = "tcp://127.0.0.1:514", l
			tc.cfg(&cfg)
			if _, err := NewSyslog(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewSyslog: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	cfg := DefaultSyslogConfig()
	cfg.URL, cfg.Log, cfg.CAFile = "tls://127.0.0.1:6514", l, filepath.Join(t.TempDir(), "none.pem")
	s, err := NewSyslog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "--audit-syslog-ca") {
		t.Fatalf("Start with a missing CA file: %v, want an error naming --audit-syslog-ca", err)
	}
}

// BenchmarkSyslogMessage measures encoding one record.
func BenchmarkSyslogMessage(b *testing.B) {
	s := &Syslog{cfg: SyslogConfig{Hostname: "gw-host", AppName: "mcpgw"}, pri: [3]int{134, 133, 132}}
	rec := storage.AuditRecord{Seq: 12345, Time: time.Now(), Node: "n1", Kind: storage.AuditToolCall, Tool: "echo", Outcome: "ok",
		Hash: fmt.Sprintf("%064x", 1)}
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		buf, _ = s.appendMessage(buf[:0], &rec)
	}
}

// TestSyslogCloseUnblocksWrite: a receiver that accepts and never reads
// does not hold up Close (a node's shutdown) for the write timeout.
func TestSyslogCloseUnblocksWrite(t *testing.T) {
	addr, accepted := tcptest.Silent(t)
	l := openLog(t)
	recs := make([]storage.AuditRecord, 5000)
	for i := range recs {
		recs[i] = storage.AuditRecord{Kind: storage.AuditToolCall, Node: "n1", Tool: strings.Repeat("t", 4<<10), Outcome: storage.AuditOK}
	}
	if err := l.Append(recs); err != nil {
		t.Fatal(err)
	}
	s := startSink(t, l, "tcp://"+addr, func(c *SyslogConfig) { c.WriteTimeout = time.Minute })
	c := <-accepted
	defer c.Close()
	// 20 MiB do not fit the socket buffers: after a few batches (1 MiB
	// each) a write blocks for good, which shows as the count of records
	// written no longer moving.
	last, since := -1.0, time.Now()
	waitFor(t, "a write blocked on the receiver", func() bool {
		if v := value(t, s.shipped); v != last {
			last, since = v, time.Now()
		}
		return last > 0 && time.Since(since) > 500*time.Millisecond
	})
	start := time.Now()
	s.Close()
	t.Logf("Close took %v", time.Since(start))
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v with a write blocked on the receiver, want well under the 1m write timeout", d)
	}
}
