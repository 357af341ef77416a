package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// TestAuditNeverBlocksProxy: with the audit writer stalled and its queue
// full, tool calls go through at full speed and the lost records are
// counted; once the writer resumes, the log still verifies.
func TestAuditNeverBlocksProxy(t *testing.T) {
	reg := prometheus.NewRegistry()
	tg := newTestGateway(t, func(o *Options) { o.AuditQueueLen = 16; o.Registerer = reg })
	n := tg.Gateway
	up := upstreamtest.New()
	route := tg.addRoute(t, storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway(tg.wsURL()), client.WithToken(tg.issueToken(t, "svc", "acme")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })

	stalled, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unstall) // before the gateway closes: Close flushes the queue
	var stallOnce sync.Once
	hook := func() {
		stallOnce.Do(func() { close(stalled) })
		<-release
	}
	n.audit.writeHook.Store(&hook)
	n.audit.record(storage.AuditRecord{Kind: storage.AuditToolCall, Outcome: storage.AuditOK})
	<-stalled
	filled := make(chan struct{})
	go func() {
		defer close(filled)
		for len(n.audit.queue) < cap(n.audit.queue) {
			n.audit.record(storage.AuditRecord{Kind: storage.AuditToolCall, Outcome: storage.AuditOK})
		}
	}()
	select {
	case <-filled:
	case <-ctx.Done():
		t.Fatal("filling the audit queue blocked")
	}
	before := counterValue(n.audit.droppedFull)
	for range 3 {
		if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil {
			t.Fatal(err) // a call the full queue held up would run out of ctx
		}
	}
	if got := counterValue(n.audit.droppedFull) - before; got < 3 {
		t.Fatalf("dropped counter rose by %v during 3 calls, want >= 3", got)
	}
	if got := gatheredValue(t, reg, "mcpgw_audit_dropped_total", "reason", "queue_full"); got < 3 {
		t.Fatalf("mcpgw_audit_dropped_total{reason=queue_full} = %v on the registerer, want >= 3", got)
	}

	unstall()
	if err := n.Close(); err != nil { // writes what is queued
		t.Fatal(err)
	}
	l := tg.audit
	// The stalled record, the queue it filled, and the session's open and
	// (if it found room) close.
	if checked, err := l.Verify(); err != nil || checked < 1+cap(n.audit.queue) {
		t.Fatalf("Verify() = %d, %v; want at least %d, nil", checked, err, 1+cap(n.audit.queue))
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// gatheredValue returns the value of the sample of metric name whose label
// has value, as reg gathers it.
func gatheredValue(t testing.TB, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// countingHandler counts log records at Warn and above.
type countingHandler struct {
	slog.Handler
	warns atomic.Int32
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}

// TestAuditorDropsAndWarnsOnce: a full queue drops without blocking and
// warns once per interval, however many records it drops.
func TestAuditorDropsAndWarnsOnce(t *testing.T) {
	h := &countingHandler{Handler: slog.DiscardHandler}
	a := newAuditor(slog.New(h), prometheus.NewRegistry(), 1)
	for range 100 {
		a.record(storage.AuditRecord{Kind: storage.AuditToolCall})
	}
	if got := counterValue(a.droppedFull); got != 99 {
		t.Fatalf("dropped %v records, want 99", got)
	}
	if got := h.warns.Load(); got != 1 {
		t.Fatalf("%d warnings, want 1", got)
	}
}

// TestAuditorCloseFlushes: close writes every queued record and stops the
// writer goroutine.
func TestAuditorCloseFlushes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path := filepath.Join(t.TempDir(), storage.AuditFile)
	a := newAuditor(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 4096)
	l, err := storage.OpenAudit(path, storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a.start(l, "node-a")
	for i := range 3000 {
		a.record(storage.AuditRecord{Kind: storage.AuditToolCall, Tool: fmt.Sprint("tool-", i), Outcome: storage.AuditOK})
	}
	a.close()
	if n, err := l.Verify(); n != 3000 || err != nil {
		t.Fatalf("Verify() = %d, %v; want 3000, nil", n, err)
	}
	recs, err := l.Query(storage.AuditQuery{Limit: 1})
	if err != nil || len(recs) != 1 || recs[0].Node != "node-a" {
		t.Fatalf("Query = %+v, %v; want records of node-a", recs, err)
	}
}

// TestAuditorSyncAlways: with AuditSyncAlways, record returns only once its
// record is in the log, for recorders racing each other (who share
// commits); and once the writer has stopped, record returns at once.
func TestAuditorSyncAlways(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path := filepath.Join(t.TempDir(), storage.AuditFile)
	a := newAuditor(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 4096)
	// A flush interval no test waits out: only the waiting recorders
	// make the writer commit.
	a.configure(AuditSyncAlways, time.Hour)
	l, err := storage.OpenAudit(path, storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a.start(l, "node-a")
	const recorders, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, recorders*each)
	for g := range recorders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				tool := fmt.Sprintf("tool-%d-%d", g, i)
				a.record(storage.AuditRecord{Kind: storage.AuditToolCall, Tool: tool, Outcome: storage.AuditOK})
				if recs, err := l.Query(storage.AuditQuery{Tool: tool}); err != nil || len(recs) != 1 {
					errs <- fmt.Errorf("record(%s) returned with %d such records in the log (%v), want 1", tool, len(recs), err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var m dto.Metric
	a.writeSeconds.Write(&m)
	t.Logf("%d records in %d commits", recorders*each, m.GetHistogram().GetSampleCount())

	a.close()
	done := make(chan struct{})
	go func() {
		a.record(storage.AuditRecord{Kind: storage.AuditToolCall})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("record after close blocked")
	}
}

// TestAuditorFullBatchCommitsAtOnce: with a flush interval no test waits
// out, every full batch (auditBatchMax records) is committed as soon as it
// is queued, including one that fills up while another is being
// committed; what does not fill a batch waits for the interval, or close.
func TestAuditorFullBatchCommitsAtOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l, err := storage.OpenAudit(filepath.Join(t.TempDir(), storage.AuditFile), storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := newAuditor(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 4*auditBatchMax)
	a.configure(AuditSyncBatch, time.Hour)
	// The first commit waits until the second batch is queued behind it.
	queued, proceed := make(chan struct{}), make(chan struct{})
	var first sync.Once
	hook := func() { first.Do(func() { close(queued); <-proceed }) }
	a.writeHook.Store(&hook)
	a.start(l, "node-a")
	defer a.close() // before the log closes, on a failure
	const rest = 10
	for i := range 3*auditBatchMax + rest {
		if i == auditBatchMax+1 {
			<-queued // the first batch is being committed
		}
		a.record(storage.AuditRecord{Kind: storage.AuditToolCall, Tool: fmt.Sprint("tool-", i), Outcome: storage.AuditOK})
	}
	close(proceed)
	// The commit is counted once it returned: poll that, then the log.
	waitCommits(t, a, 3)
	if seq, _, err := l.AuditHead(); seq != 3*auditBatchMax || err != nil {
		t.Fatalf("AuditHead() = %d, %v after 3 commits of %d queued with an hour's flush interval, want the %d of three full batches", seq, err, 3*auditBatchMax+rest, 3*auditBatchMax)
	}
	a.close()
	if n, err := l.Verify(); n != 3*auditBatchMax+rest || err != nil {
		t.Fatalf("Verify() = %d, %v; want %d, nil", n, err, 3*auditBatchMax+rest)
	}
}

// TestAuditorLingerSharesCommit: records queued within one flush interval
// of the first share its commit.
func TestAuditorLingerSharesCommit(t *testing.T) {
	l, err := storage.OpenAudit(filepath.Join(t.TempDir(), storage.AuditFile), storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := newAuditor(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 4096)
	// Long enough that a loaded machine queues 100 records within it.
	a.configure(AuditSyncBatch, 2*time.Second)
	a.start(l, "node-a")
	defer a.close()
	start := time.Now()
	for i := range 100 {
		a.record(storage.AuditRecord{Kind: storage.AuditToolCall, Tool: fmt.Sprint("tool-", i), Outcome: storage.AuditOK})
	}
	if time.Since(start) > time.Second {
		t.Skip("the machine is too loaded to queue 100 records within the flush interval")
	}
	waitCommits(t, a, 1)
	if seq, _, err := l.AuditHead(); seq != 100 || err != nil {
		t.Fatalf("AuditHead() = %d, %v after the first commit, want all 100 records queued within the flush interval", seq, err)
	}
}

// waitCommits waits (20s at most) until a's writer has committed n
// batches, and fails if it committed more.
func waitCommits(t *testing.T, a *auditor, n float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for histogramCount(a.writeSeconds) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%v commits after 20s, want %v", histogramCount(a.writeSeconds), n)
		}
		time.Sleep(10 * time.Millisecond) // polling the writer, not synchronising
	}
	if got := histogramCount(a.writeSeconds); got != n {
		t.Fatalf("%v commits, want %v", got, n)
	}
}
