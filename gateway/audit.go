package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// Audit writer tuning.
const (
	// auditBatchMax bounds a batch: the writer commits once it holds
	// auditBatchMax records, or the flush interval after the first one
	// came.
	auditBatchMax = 512
	// auditWarnEvery spaces out the warnings about dropped records.
	auditWarnEvery = 10 * time.Second
	// auditPruneEvery is how often retention runs on a node with no
	// traffic (writes prune as they go).
	auditPruneEvery = time.Minute
	// auditMaxText caps caller-supplied text kept in a record.
	auditMaxText = 256
)

// DefaultAuditFlushInterval is how long, with AuditSyncBatch, the writer
// gathers records before a commit, and so about what a crash can lose.
//
// A commit costs two fdatasyncs and a few page writes whatever it carries:
// at 1,500 calls/s, 5ms (about 10 records a commit) makes the writer cost
// ~60us of CPU per record, 50ms (~78 a commit) ~12us (BenchmarkAuditWriter).
// 50ms is still well inside what other audit trails accept: auditd's
// default flushes every 50 records, etcd commits its bbolt backend every
// 100ms, and Vault's file audit device never syncs. Who needs no loss at
// all uses AuditSyncAlways.
const DefaultAuditFlushInterval = 50 * time.Millisecond

// AuditSync is when an audit record must be on disk (committed and
// synced), which bounds what a crash of the node can lose.
type AuditSync string

const (
	// AuditSyncBatch commits records in batches, within the flush
	// interval of their being queued, and never makes the proxy wait for
	// the disk: a crash loses the records of about the last flush
	// interval and a commit.
	AuditSyncBatch AuditSync = "batch"
	// AuditSyncAlways has the proxy wait for each record to be on disk
	// before it sends what the record accounts for (a tool call's
	// response, a refusal): a crash loses no record of anything a caller
	// was told. Records waiting at the same time share one commit.
	AuditSyncAlways AuditSync = "always"
)

// auditor writes the gateway's audit records to its audit log. With
// AuditSyncBatch it never makes the proxy wait for the disk: records go
// into a bounded queue that one writer goroutine drains in batches; when
// the queue is full, records are dropped and counted
// (mcpgw_audit_dropped_total), never waited for. With AuditSyncAlways,
// record returns once its record is committed.
type auditor struct {
	logger *slog.Logger
	queue  chan *storage.AuditRecord
	// syncq carries the records whose recorder waits for them to be on
	// disk (AuditSyncAlways). Unbuffered: the writer takes every record
	// waiting when it starts a commit, so they share it.
	syncq chan auditWait
	// full tells the writer that the queue holds a full batch
	// (auditBatchMax records) while it lingers. Buffered by one: recorders
	// never wait on it.
	full chan struct{}
	// Set by configure, before start.
	always     bool
	flushEvery time.Duration

	records      prometheus.Counter
	droppedFull  prometheus.Counter
	droppedWrite prometheus.Counter
	writeSeconds prometheus.Histogram

	// Set by start, before the writer starts.
	log  *storage.AuditLog
	node string
	stop chan struct{}
	done chan struct{}

	lastWarn         atomic.Int64  // Unix nanoseconds of the last drop warning
	droppedSinceWarn atomic.Uint64 // records dropped since that warning

	// writeHook, when set, runs before each batch is written: tests stall
	// the writer with it.
	writeHook atomic.Pointer[func()]
}

// auditWait is a record and where its recorder waits for the outcome of
// its commit.
type auditWait struct {
	r    *storage.AuditRecord
	done chan error
}

func newAuditor(logger *slog.Logger, reg prometheus.Registerer, queueLen int) *auditor {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mcpgw_audit_dropped_total", Help: "Audit records lost: the queue to the disk was full, or the write failed.",
	}, []string{"reason"})
	a := &auditor{
		logger:     logger,
		queue:      make(chan *storage.AuditRecord, queueLen),
		syncq:      make(chan auditWait),
		full:       make(chan struct{}, 1),
		flushEvery: DefaultAuditFlushInterval,
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcpgw_audit_records_total", Help: "Audit records written to the audit log.",
		}),
		droppedFull:  dropped.WithLabelValues("queue_full"),
		droppedWrite: dropped.WithLabelValues("write_failed"),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcpgw_audit_write_seconds",
			Help:    "Time to write one batch of audit records, commit and sync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mcpgw_audit_queue_records", Help: "Audit records queued for the disk, not yet written.",
	}, func() float64 { return float64(len(a.queue)) })
	capacity := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mcpgw_audit_queue_capacity_records", Help: "Audit records the queue holds before it drops.",
	})
	capacity.Set(float64(queueLen))
	reg.MustRegister(a.records, dropped, a.writeSeconds, depth, capacity)
	return a
}

// configure sets the sync policy and, for AuditSyncBatch, the flush
// interval (0: DefaultAuditFlushInterval). It is called before start.
func (a *auditor) configure(sync AuditSync, flushEvery time.Duration) {
	a.always = sync == AuditSyncAlways
	if flushEvery > 0 {
		a.flushEvery = flushEvery
	}
}

// start starts the writer appending to l, stamping records with node.
func (a *auditor) start(l *storage.AuditLog, node string) {
	a.log, a.node = l, node
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go a.run()
}

// close writes what is queued and stops the writer; the log stays open. It
// is safe to call more than once; records queued after it are never
// written.
func (a *auditor) close() {
	if a.log == nil {
		return
	}
	close(a.stop)
	<-a.done
	a.log = nil
}

// record queues r for writing. With AuditSyncBatch it never blocks; with
// AuditSyncAlways it returns once r is on disk (or its write failed, which
// is counted and logged: the proxy goes on either way, since what r
// accounts for has happened).
func (a *auditor) record(r storage.AuditRecord) {
	if a.always && a.done != nil {
		a.recordSync(&r)
		return
	}
	select {
	case a.queue <- &r:
		if len(a.queue) >= auditBatchMax {
			select { // a full batch: the writer need not linger
			case a.full <- struct{}{}:
			default:
			}
		}
	default:
		a.dropped(1, a.droppedFull, nil)
	}
}

// recordSync hands r to the writer and waits for its commit. Once the
// writer has stopped (the gateway closed), r is not written, as with
// record.
func (a *auditor) recordSync(r *storage.AuditRecord) {
	done := make(chan error, 1)
	select {
	case a.syncq <- auditWait{r: r, done: done}:
	case <-a.done:
		return
	}
	// The writer took r: it answers done before it stops.
	<-done
}

// dropped counts lost records and warns, at most once per auditWarnEvery.
func (a *auditor) dropped(n int, c prometheus.Counter, err error) {
	c.Add(float64(n))
	a.droppedSinceWarn.Add(uint64(n))
	now := time.Now().UnixNano()
	last := a.lastWarn.Load()
	if now-last < int64(auditWarnEvery) || !a.lastWarn.CompareAndSwap(last, now) {
		return
	}
	attrs := []any{slog.Uint64("dropped", a.droppedSinceWarn.Swap(0))}
	if err != nil {
		a.logger.Error("audit records lost: writing the audit log failed", append(attrs, slog.Any("error", err))...)
		return
	}
	a.logger.Warn("audit records dropped: the audit log is not keeping up; check the disk of the data dir", attrs...)
}

// run is the writer. Once a record is queued it lingers without taking
// the ones that follow, so it wakes once per batch rather than once per
// record (at 1,500 calls/s the wake-ups cost as much CPU as the commits):
// it takes them all when the flush interval is up, or when a recorder
// says the queue holds a full batch.
func (a *auditor) run() {
	defer close(a.done)
	prune := time.NewTicker(auditPruneEvery)
	defer prune.Stop()
	linger := time.NewTimer(a.flushEvery)
	linger.Stop()
	batch := make([]storage.AuditRecord, 0, auditBatchMax)
	var waiters []chan error
	// flush commits what is in batch and queued, in batches of at most
	// auditBatchMax: every record queued by then is due (the first one has
	// waited the flush interval, or a batch is full), and so is a full
	// batch queued meanwhile.
	flush := func() {
		linger.Stop()
		for due := len(batch) + len(a.queue); due > 0 || len(a.queue) >= auditBatchMax; {
			batch = a.fill(batch)
			select {
			case <-a.full: // taken with this batch
			default:
			}
			if len(batch) == 0 {
				return
			}
			due -= len(batch)
			err := a.write(batch)
			batch = batch[:0]
			for _, w := range waiters {
				w <- err
			}
			waiters = waiters[:0]
		}
	}
	// lingering: records are queued, and linger runs for the oldest.
	lingering := false
	for {
		// Lingering, the writer waits for the timer or a full batch;
		// otherwise for the first record (a full batch signalled while a
		// commit ran is acted on once that record is taken).
		queue, full := a.queue, a.full
		if lingering {
			queue = nil
		} else {
			full = nil
		}
		select {
		case r := <-queue:
			batch = append(batch, *r)
			lingering = true
			linger.Reset(a.flushEvery)
		case <-full:
			flush()
			lingering = false
		case w := <-a.syncq:
			// Someone waits: commit now, with every record waiting too.
			batch, waiters = append(batch, *w.r), append(waiters, w.done)
			// Recorders the last commit released are on their way with
			// their next record: one pass of the scheduler lets them
			// join this commit (about 45 records a commit instead of 31
			// with 64 recorders, BenchmarkAuditWriter/always).
			runtime.Gosched()
			batch, waiters = a.fillSync(batch, waiters)
			flush()
			lingering = false
		case <-linger.C:
			flush()
			lingering = false
		case <-prune.C:
			if _, err := a.log.Prune(time.Now()); err != nil {
				a.logger.Error("audit log retention failed", slog.Any("error", err))
			}
		case <-a.stop:
			for {
				batch, waiters = a.fillSync(batch, waiters)
				if batch = a.fill(batch); len(batch) == 0 {
					return
				}
				flush()
			}
		}
	}
}

// fill adds what is already queued to batch, up to auditBatchMax.
func (a *auditor) fill(batch []storage.AuditRecord) []storage.AuditRecord {
	for len(batch) < auditBatchMax {
		select {
		case r := <-a.queue:
			batch = append(batch, *r)
		default:
			return batch
		}
	}
	return batch
}

// fillSync adds the records whose recorders wait to batch, up to
// auditBatchMax.
func (a *auditor) fillSync(batch []storage.AuditRecord, waiters []chan error) ([]storage.AuditRecord, []chan error) {
	for len(batch) < auditBatchMax {
		select {
		case w := <-a.syncq:
			batch, waiters = append(batch, *w.r), append(waiters, w.done)
		default:
			return batch, waiters
		}
	}
	return batch, waiters
}

// write appends batch to the log; a failure is counted and logged, and
// returned for the recorders waiting on it.
func (a *auditor) write(batch []storage.AuditRecord) error {
	if h := a.writeHook.Load(); h != nil {
		(*h)()
	}
	for i := range batch {
		batch[i].Node = a.node
	}
	start := time.Now()
	err := a.log.Append(batch)
	a.writeSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		a.dropped(len(batch), a.droppedWrite, err)
		return err
	}
	a.records.Add(float64(len(batch)))
	return nil
}

// argumentsSHA256 returns the hex SHA-256 of params.arguments of a
// tools/call as the upstream gets it: the upstream transports forward
// params as they came (transport.ForwardedForm), and tracing changes only
// params._meta. Empty when there are no arguments. params must be valid
// JSON: the call's name was read from them with jsonrpcx.Members, which
// checks.
func argumentsSHA256(params json.RawMessage) string {
	vals, err := jsonrpcx.ValidMembers(params, "params of tools/call", "arguments")
	if err != nil || len(vals[0]) == 0 {
		return ""
	}
	form, ok := transport.ForwardedForm(vals[0])
	if !ok {
		return ""
	}
	return hexSHA256(form)
}

// hexSHA256 is the hex SHA-256 of b.
func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// clip cuts caller-supplied text to auditMaxText bytes.
func clip(s string) string {
	if len(s) > auditMaxText {
		return s[:auditMaxText] + "…"
	}
	return s
}

// Short reason codes of refusals and errors, by the JSON-RPC code the
// caller got.
var auditReasons = map[int64]string{
	transport.CodeUnauthorized:     "unauthorized",
	transport.CodeForbidden:        "forbidden",
	transport.CodeRateLimited:      "rate_limited",
	transport.CodeUpstreamError:    "upstream_error",
	transport.CodeNoRoute:          "no_route",
	transport.CodeNoCredential:     "no_credential",
	transport.CodeConsentRequired:  "consent_required",
	transport.CodeOverloaded:       "overloaded",
	transport.CodeCredentialBroken: "credential_broken",
	jsonrpc.CodeInvalidParams:      "bad_request",
	jsonrpc.CodeInvalidRequest:     "bad_request",
	jsonrpc.CodeInternalError:      "internal_error",
}

func auditReason(code int64) string {
	if r, ok := auditReasons[code]; ok {
		return r
	}
	return "rpc_error"
}

// auditMessage returns the part of a refusal's message an audit record
// keeps: the gateway's own words, never text an upstream or a caller
// supplied (an upstream's error body, a target URL's query).
func auditMessage(code int64, msg string) string {
	switch code {
	case transport.CodeUpstreamError, transport.CodeNoRoute, jsonrpc.CodeInvalidParams, jsonrpc.CodeInvalidRequest:
		return ""
	}
	return clip(msg)
}

// auditRecord starts a record of this session.
func (s *session) auditRecord(kind storage.AuditKind, outcome string) storage.AuditRecord {
	r := storage.AuditRecord{
		Time: time.Now(), Kind: kind, SessionID: s.id, Remote: s.remote,
		Org: s.org, Account: s.account, Route: s.route.Name, Outcome: outcome,
	}
	if s.claims != nil {
		r.Service, r.TokenID = s.claims.Service, s.claims.ID
	}
	if s.creds != nil {
		r.CredentialKeyID = s.creds.keyID()
	}
	return r
}

// auditOpen records the session's start.
func (s *session) auditOpen() {
	s.g.audit.record(s.auditRecord(storage.AuditSessionOpen, storage.AuditOK))
}

// auditClose records the session's end and how long it lasted.
func (s *session) auditClose(lasted time.Duration) {
	r := s.auditRecord(storage.AuditSessionClose, storage.AuditOK)
	r.LatencyMicros = lasted.Microseconds()
	if end := s.ended.Load(); end != nil {
		r.Reason = end.reason // ended by the gateway: token revoked or expired
	}
	s.g.audit.record(r)
}

// auditToolCall records a tools/call answered (outcome ok or error) or
// refused by the gateway. Of an error only the code is kept: its message
// may carry what the upstream said.
func (s *session) auditToolCall(pc pendingCall, outcome string, err error) {
	r := s.auditRecord(storage.AuditToolCall, outcome)
	r.Tool = clip(pc.tool)
	r.LatencyMicros = time.Since(pc.start).Microseconds()
	r.ArgumentsSHA256, r.ResultSHA256 = pc.argsSHA256, pc.resultSHA256
	if err == nil && outcome == storage.AuditError {
		r.Reason = "tool_error" // the tool ran and reported a failure (isError)
	}
	if err != nil {
		var werr *jsonrpc.Error
		msg := ""
		if errors.As(err, &werr) {
			r.Code, msg = werr.Code, werr.Message
		}
		switch {
		case outcome == storage.AuditRefused:
			r.Reason, r.Error = auditReason(r.Code), auditMessage(r.Code, msg)
		case r.Code == transport.CodeUpstreamError:
			r.Reason = "upstream_error" // the gateway could not get an answer
		default:
			r.Reason = "rpc_error" // the upstream answered with an error
		}
	}
	s.g.audit.record(r)
}

// reestablished logs, audits and counts an upstream connection
// re-established on a rotated credential, or closed because the credential
// was removed; err says why re-establishing failed. Only the credential's
// key id is recorded, never the credential.
func (s *session) reestablished(reason string, err error) {
	outcome := storage.AuditOK
	if err != nil {
		outcome = storage.AuditError
	}
	s.g.metrics.reestablished.WithLabelValues(s.route.Name, reason, outcome).Inc()
	r := s.auditRecord(storage.AuditUpstreamReestablished, outcome)
	r.Reason = reason
	switch {
	case err != nil:
		var werr *jsonrpc.Error
		if errors.As(asRPCError(err), &werr) {
			r.Code, r.Error = werr.Code, clip(werr.Message)
		}
		s.logger.Warn("upstream connection could not be re-established on the rotated credential", slog.String("reason", reason), slog.Any("error", err))
	case reason == "credential_removed":
		s.logger.Info("upstream connection closed: its credential was removed", slog.String("reason", reason))
	default:
		s.logger.Info("upstream connection re-established on the rotated credential", slog.String("reason", reason), slog.String("credential_key_id", r.CredentialKeyID))
	}
	s.g.audit.record(r)
}

// auditCancelled records a tools/call the caller cancelled before it was
// answered.
func (s *session) auditCancelled(pc pendingCall) {
	r := s.auditRecord(storage.AuditToolCall, storage.AuditError)
	r.Tool = clip(pc.tool)
	r.LatencyMicros = time.Since(pc.start).Microseconds()
	r.ArgumentsSHA256 = pc.argsSHA256
	r.Reason = "cancelled"
	s.g.audit.record(r)
}

// auditRefusal records a session refused before it opened, with what is
// known of the caller by then.
func (g *Gateway) auditRefusal(req sessionRequest, claims *policy.Claims, spec sessionSpec, err error) {
	if spec.org == "" && spec.account == "" {
		// Refused before the request was resolved: keep what it asked for.
		spec.org, spec.account = req.org, req.account
	}
	rec := storage.AuditRecord{
		Time: time.Now(), Kind: storage.AuditRefusal, Remote: req.remote,
		Org: clip(spec.org), Account: clip(spec.account), Route: spec.route.Name, Outcome: storage.AuditRefused,
	}
	if claims != nil {
		rec.Service, rec.TokenID = claims.Service, claims.ID
	}
	var ref *transport.Refusal
	switch {
	case errors.As(err, &ref):
		rec.Code, rec.Reason, rec.Error = ref.Code, auditReason(ref.Code), auditMessage(ref.Code, ref.Message)
		if ref.Code == transport.CodeNoRoute {
			rec.Error = "no route allows " + requestedTarget(req)
		}
	default:
		rec.Reason, rec.Error = "internal_error", clip(err.Error())
	}
	g.metrics.sessionRefusals.WithLabelValues(rec.Reason).Inc()
	g.audit.record(rec)
}

// requestedTarget describes what a request asked for without anything a
// URL may carry as a secret (user info, query, fragment).
func requestedTarget(req sessionRequest) string {
	if req.route != "" {
		return "route " + clip(req.route)
	}
	u, err := url.Parse(req.target)
	if err != nil {
		return "an unparseable target"
	}
	u.User, u.Opaque, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", "", false, "", ""
	return "target " + clip(u.String())
}

// RecordAudit queues a record the data path did not make itself (an
// upstream oauth refresh, a step-up) into this node's audit log, stamped
// and chained like the others. It never holds a secret: callers pass
// identities and outcomes only.
func (g *Gateway) RecordAudit(r storage.AuditRecord) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Error = clip(r.Error)
	g.audit.record(r)
}
