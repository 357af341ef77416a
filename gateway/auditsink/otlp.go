package auditsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgw/mcpgw/storage"
)

// OTLPCursor names the OTLP sink's cursor in the audit log.
const OTLPCursor = "otlp"

// OTLP log record attributes each audit record carries; the body is the
// record as JSON, exactly as the audit log stores it.
const (
	AttrID   = "mcpgw.audit.id"   // node/seq: the same for a record sent again
	AttrNode = "mcpgw.audit.node" // the node that wrote the record
	AttrSeq  = "mcpgw.audit.seq"  // its sequence number in that node's log
	AttrKind = "mcpgw.audit.kind" // session_open, session_close, tool_call, refusal
	AttrHash = "mcpgw.audit.hash" // its chain hash
)

// OTLPConfig configures an OTLP logs sink.
type OTLPConfig struct {
	// Endpoint is the collector's OTLP/HTTP URL, e.g.
	// http://collector:4318; the path /v1/logs is added when it has none.
	// Required.
	Endpoint string
	// NodeID is the service.instance.id of the logs' resource. Default
	// empty.
	NodeID string
	// Log is the audit log to ship. Required.
	Log Log
	// Logger receives the sink's operational logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the sink's metrics. Default: none.
	Registerer prometheus.Registerer
	// ExportTimeout bounds one export request. Default 10s.
	ExportTimeout time.Duration
	// SaveEvery is the longest the cursor waits in memory before it is
	// saved (and so what a crash of the node may send again). Default 1s.
	SaveEvery time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts after a
	// failed export, which doubles after each failure. Defaults 250ms and
	// 30s.
	MinBackoff, MaxBackoff time.Duration
	// Batch is the most records read from the log and exported at once.
	// Default 256.
	Batch int
}

// DefaultOTLPConfig returns the defaults; Endpoint and Log are left to set.
func DefaultOTLPConfig() OTLPConfig {
	return OTLPConfig{ExportTimeout: 10 * time.Second, SaveEvery: time.Second,
		MinBackoff: 250 * time.Millisecond, MaxBackoff: 30 * time.Second, Batch: 256}
}

// OTLPEndpointURL checks an endpoint and returns the URL logs are posted
// to.
func OTLPEndpointURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("--audit-otlp-endpoint %q: use the collector's OTLP/HTTP URL, e.g. http://collector:4318 (the path /v1/logs is added when none is given)", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/logs"
	}
	return u.String(), nil
}

// Validate reports the first invalid setting, naming the flag to fix. It
// does not look at Log, which NewOTLP requires.
func (c *OTLPConfig) Validate() error {
	if _, err := OTLPEndpointURL(c.Endpoint); err != nil {
		return err
	}
	if c.ExportTimeout <= 0 || c.SaveEvery <= 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff || c.Batch < 1 {
		return errors.New("audit OTLP sink: timeouts, backoffs and the batch size must be positive")
	}
	return nil
}

// OTLP ships the audit log to an OpenTelemetry collector as OTLP logs,
// one log record per audit record. The collector's answer acknowledges
// each export, so the cursor moves only past records the collector took.
type OTLP struct {
	cfg    OTLPConfig
	logger *slog.Logger
	sinkMetrics

	exp     sdklog.Exporter
	lp      *sdklog.LoggerProvider
	emitter otellog.Logger
	staged  *stage

	loop
}

// stage is the processor the sink's logger provider hands records to: it
// keeps them for the sink to export itself, synchronously, so an export's
// outcome is known before the cursor moves (the SDK's batch processor
// would hold them in memory and drop them on a crash).
type stage struct{ recs []sdklog.Record }

func (s *stage) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (s *stage) OnEmit(_ context.Context, r *sdklog.Record) error {
	s.recs = append(s.recs, r.Clone())
	return nil
}
func (s *stage) Shutdown(context.Context) error   { return nil }
func (s *stage) ForceFlush(context.Context) error { return nil }

// NewOTLP checks cfg and prepares a sink. The exporter it builds does no
// I/O until the first export.
func NewOTLP(cfg OTLPConfig) (*OTLP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		return nil, errors.New("audit OTLP sink: no audit log to ship")
	}
	endpoint, _ := OTLPEndpointURL(cfg.Endpoint)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Retries are the sink's own, from the audit log: the exporter's would
	// hold one batch in memory for up to a minute.
	exp, err := otlploghttp.New(context.Background(), otlploghttp.WithEndpointURL(endpoint),
		otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}), otlploghttp.WithTimeout(cfg.ExportTimeout))
	if err != nil {
		return nil, fmt.Errorf("--audit-otlp-endpoint %q: %w", cfg.Endpoint, err)
	}
	s := &OTLP{cfg: cfg, logger: logger.With(slog.String("audit_otlp", cfg.Endpoint)), exp: exp, staged: &stage{}}
	res := resource.NewSchemaless(attribute.String("service.name", "mcpgw"), attribute.String("service.instance.id", cfg.NodeID))
	s.lp = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(s.staged))
	s.emitter = s.lp.Logger("github.com/mcpgw/mcpgw/audit")
	if s.sinkMetrics, err = newSinkMetrics("otlp", cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// Start reads the cursor and starts shipping in the background. An
// unreachable collector is no error: the sink retries until Close, the
// records waiting in the audit log.
func (s *OTLP) Start() error {
	return s.start(s.cfg.Log, OTLPCursor, s.run)
}

// Close stops shipping and saves the cursor; an export in flight is
// abandoned (its records go again at the next start). It is safe to call
// more than once, and without Start.
func (s *OTLP) Close() error {
	s.stop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.exp.Shutdown(ctx)
		s.lp.Shutdown(ctx)
	})
	return nil
}

// Cursor returns the sequence number the sink resumes after.
func (s *OTLP) Cursor() (uint64, error) { return s.cfg.Log.SinkCursor(OTLPCursor) }

func (s *OTLP) run() {
	defer close(s.done)
	var (
		delivered = s.cursor
		saved     = s.cursor
		savedAt   = time.Now()
		retry     = newBackoff(s.cfg.MinBackoff, s.cfg.MaxBackoff)
		failed    bool
	)
	save := func() {
		if delivered == saved {
			return
		}
		if err := s.cfg.Log.SetSinkCursor(OTLPCursor, delivered); err != nil {
			s.logger.Error("audit OTLP: cursor not saved; records since the last saved one are sent again after a restart", slog.Any("error", err))
			return
		}
		saved, savedAt = delivered, time.Now()
	}
	defer save()
	saveTimer := time.NewTicker(s.cfg.SaveEvery)
	defer saveTimer.Stop()
	wait := func() bool {
		t := time.NewTimer(retry.next())
		defer t.Stop()
		select {
		case <-s.ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for s.ctx.Err() == nil {
		more := s.cfg.Log.Appended()
		recs, err := s.readBatch(s.cfg.Log, s.logger, "audit OTLP", "collector", delivered, s.cfg.Batch)
		if err != nil {
			if !wait() {
				return
			}
			continue
		}
		if len(recs) == 0 {
			s.setLag(s.cfg.Log, delivered)
			select {
			case <-s.ctx.Done():
				return
			case <-more:
			case <-saveTimer.C:
				save()
			}
			continue
		}
		if err := s.export(recs); err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.errs.WithLabelValues(errWrite).Inc()
			s.connected.Set(0)
			failed = true
			s.logger.Warn(fmt.Sprintf("audit OTLP: exporting to %s failed: %v; records wait in the audit log and are sent again: check the collector runs and --audit-otlp-endpoint names its OTLP/HTTP port", s.cfg.Endpoint, err),
				slog.Duration("retry_in", retry.cur), slog.Uint64("resend_from_seq", delivered+1))
			if !wait() {
				return
			}
			continue
		}
		if failed {
			s.logger.Info("audit OTLP: the collector takes records again", slog.Uint64("from_seq", delivered+1))
			failed = false
		}
		s.connected.Set(1)
		delivered = recs[len(recs)-1].Seq
		s.shipped.Add(float64(len(recs)))
		s.setLag(s.cfg.Log, delivered)
		retry.reset()
		if time.Since(savedAt) >= s.cfg.SaveEvery {
			save()
		}
	}
}

// export sends recs as one OTLP request and returns once the collector
// answered.
func (s *OTLP) export(recs []storage.AuditRecord) error {
	s.staged.recs = s.staged.recs[:0]
	for i := range recs {
		r := &recs[i]
		body, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode record seq %d: %w", r.Seq, err)
		}
		var lr otellog.Record
		// Both times are the record's, so a record sent twice is the same
		// log record twice.
		lr.SetTimestamp(r.Time)
		lr.SetObservedTimestamp(r.Time)
		sev, text := otellog.SeverityInfo, "INFO"
		switch r.Outcome {
		case storage.AuditError:
			sev, text = otellog.SeverityInfo2, "INFO"
		case storage.AuditRefused:
			sev, text = otellog.SeverityWarn, "WARN"
		}
		lr.SetSeverity(sev)
		lr.SetSeverityText(text)
		lr.SetEventName("mcpgw.audit." + string(r.Kind))
		lr.SetBody(attribute.StringValue(string(body)))
		seq := strconv.FormatUint(r.Seq, 10)
		lr.AddAttributes(
			attribute.String(AttrID, r.Node+"/"+seq),
			attribute.String(AttrNode, r.Node),
			attribute.Int64(AttrSeq, int64(r.Seq)),
			attribute.String(AttrKind, string(r.Kind)),
			attribute.String(AttrHash, r.Hash),
		)
		s.emitter.Emit(s.ctx, lr)
	}
	if len(s.staged.recs) != len(recs) {
		return fmt.Errorf("%d of %d records reached the exporter", len(s.staged.recs), len(recs))
	}
	return s.exp.Export(s.ctx, s.staged.recs)
}
