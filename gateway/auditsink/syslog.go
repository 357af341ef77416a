package auditsink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgw/mcpgw/storage"
)

// SyslogCursor names the syslog sink's cursor in the audit log.
const SyslogCursor = "syslog"

// Log is the audit log a sink ships and keeps its cursor in.
type Log interface {
	// After returns up to limit records after seq, in sequence order.
	After(seq uint64, limit int) ([]storage.AuditRecord, error)
	// Appended is closed by the next append.
	Appended() <-chan struct{}
	// AuditHead returns the last sequence number written.
	AuditHead() (uint64, string, error)
	SinkCursor(name string) (uint64, error)
	SetSinkCursor(name string, seq uint64) error
}

var _ Log = (*storage.AuditLog)(nil)

// SyslogConfig configures a syslog sink.
type SyslogConfig struct {
	// URL is the receiver: tcp://host:port (plain TCP, RFC 6587) or
	// tls://host:port (RFC 5425). Required.
	URL string
	// CAFile is a PEM file of the CAs that sign the receiver's
	// certificate, for tls://. Default: the system's roots.
	CAFile string
	// ServerName is the name the receiver's certificate must hold, for
	// tls://. Default: the URL's host.
	ServerName string
	// AppName is the APP-NAME of each message. Default "mcpgw".
	AppName string
	// Facility is the syslog facility of each message: a name such as
	// local0…local7, auth, authpriv, audit (13), daemon, user. Default
	// "local0".
	Facility string
	// Hostname is the HOSTNAME of each message. Default: os.Hostname at
	// Start.
	Hostname string
	// Log is the audit log to ship. Required.
	Log Log
	// Logger receives the sink's operational logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the sink's metrics. Default: none.
	Registerer prometheus.Registerer
	// DialTimeout bounds a connection attempt, TLS handshake included.
	// Default 10s.
	DialTimeout time.Duration
	// WriteTimeout bounds sending one batch; a receiver that takes longer
	// is treated as gone and reconnected. Default 10s.
	WriteTimeout time.Duration
	// ConfirmAfter is how long a connection must stay up after records
	// were written to it before they count as delivered and the cursor
	// moves past them. Syslog has no acknowledgements: a receiver that
	// goes away loses what it had not read yet, so whatever was written
	// in the last ConfirmAfter (or more) before a connection broke is sent
	// again. Default 2s.
	ConfirmAfter time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts, which doubles after each failure. Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Batch is the most records read from the log and sent at once, which
	// bounds the sink's memory. Default 256.
	Batch int
}

// DefaultSyslogConfig returns the defaults; URL and Log are left to set.
func DefaultSyslogConfig() SyslogConfig {
	return SyslogConfig{
		AppName:      "mcpgw",
		Facility:     "local0",
		DialTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		ConfirmAfter: 2 * time.Second,
		MinBackoff:   250 * time.Millisecond,
		MaxBackoff:   30 * time.Second,
		Batch:        256,
	}
}

// facilities maps facility names to their RFC 5424 numbers.
var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// ParseSyslogURL checks a receiver URL and returns whether it is TLS and
// its host:port.
func ParseSyslogURL(raw string) (useTLS bool, addr string, err error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "tcp" && u.Scheme != "tls") || u.Host == "" || u.Port() == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return false, "", fmt.Errorf("--audit-syslog %q: use tcp://host:port (plain, e.g. port 514) or tls://host:port (e.g. port 6514)", raw)
	}
	return u.Scheme == "tls", u.Host, nil
}

// Validate reports the first invalid setting, naming the flag to fix. It
// does not look at Log, which NewSyslog requires.
func (c *SyslogConfig) Validate() error {
	useTLS, _, err := ParseSyslogURL(c.URL)
	if err != nil {
		return err
	}
	if !useTLS && (c.CAFile != "" || c.ServerName != "") {
		return fmt.Errorf("--audit-syslog-ca and --audit-syslog-server-name apply to tls:// receivers; --audit-syslog %q is plain tcp://", c.URL)
	}
	if _, ok := facilities[c.Facility]; !ok {
		return fmt.Errorf("--audit-syslog-facility %q: use a syslog facility name such as local0…local7, auth, authpriv, audit or daemon", c.Facility)
	}
	if c.AppName == "" || len(c.AppName) > 48 || !printASCII(c.AppName) {
		return fmt.Errorf("--audit-syslog-app-name %q: use 1 to 48 printable ASCII characters without spaces", c.AppName)
	}
	if c.DialTimeout <= 0 || c.WriteTimeout <= 0 || c.ConfirmAfter <= 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff || c.Batch < 1 {
		return errors.New("audit syslog sink: timeouts, backoffs and the batch size must be positive")
	}
	return nil
}

// printASCII reports whether s is RFC 5424 PRINTUSASCII (no spaces).
func printASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

// Syslog ships the audit log to a syslog receiver over TCP or TLS, one
// RFC 5424 message per record, octet-counted (RFC 6587 §3.4.1, RFC 5425).
type Syslog struct {
	cfg    SyslogConfig
	logger *slog.Logger
	pri    [3]int // PRI by outcome: ok, error, refused
	useTLS bool
	addr   string

	sinkMetrics

	tlsConf *tls.Config // set by Start
	loop
}

// loop is a sink's shipping goroutine: started at the sink's cursor,
// stopped by cancelling ctx.
type loop struct {
	cursor uint64 // where the run loop starts
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	closeOnce sync.Once
}

// start reads the cursor called name in l and runs run on a goroutine of
// its own, which must close done when it returns.
func (lp *loop) start(l Log, name string, run func()) error {
	cursor, err := l.SinkCursor(name)
	if err != nil {
		return err
	}
	lp.cursor = cursor
	lp.ctx, lp.cancel = context.WithCancel(context.Background())
	lp.done = make(chan struct{})
	go run()
	return nil
}

// stop ends the run loop and waits for it, once; then, also once, it
// calls after (may be nil). Without start it only calls after.
func (lp *loop) stop(after func()) {
	lp.closeOnce.Do(func() {
		if lp.cancel != nil {
			lp.cancel()
			<-lp.done
		}
		if after != nil {
			after()
		}
	})
}

// Reasons of mcpgw_audit_sink_errors_total.
const (
	errConnect = "connect"
	errTLS     = "tls"
	errWrite   = "write"
	errClosed  = "closed_by_receiver"
	errLog     = "audit_log"
)

// NewSyslog checks cfg and prepares a sink; it does no I/O.
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		return nil, errors.New("audit syslog sink: no audit log to ship")
	}
	useTLS, addr, _ := ParseSyslogURL(cfg.URL)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := facilities[cfg.Facility] * 8
	s := &Syslog{
		cfg: cfg, logger: logger.With(slog.String("audit_syslog", cfg.URL)), useTLS: useTLS, addr: addr,
		pri: [3]int{f + 6, f + 5, f + 4}, // informational, notice, warning
	}
	var err error
	if s.sinkMetrics, err = newSinkMetrics("syslog", cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// sinkMetrics are a sink's instruments, labelled with its kind.
type sinkMetrics struct {
	shipped   prometheus.Counter
	errs      *prometheus.CounterVec // reason
	lag       prometheus.Gauge
	connected prometheus.Gauge
}

// newSinkMetrics makes the instruments of sink, every series present
// (zero) from the start, registered on reg when it is not nil.
func newSinkMetrics(sink string, reg prometheus.Registerer) (sinkMetrics, error) {
	labels := prometheus.Labels{"sink": sink}
	m := sinkMetrics{
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcpgw_audit_sink_records_total", ConstLabels: labels,
			Help: "Audit records sent to the sink (a record resent after an outage counts again).",
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpgw_audit_sink_errors_total", ConstLabels: labels,
			Help: "Failures shipping audit records, by reason (connect, tls, write, closed_by_receiver, audit_log).",
		}, []string{"reason"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpgw_audit_sink_lag_records", ConstLabels: labels,
			Help: "Audit records written to the log and not yet sent to the sink.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcpgw_audit_sink_connected", ConstLabels: labels,
			Help: "1 while the sink reaches its receiver (syslog: holds a connection; OTLP: the last export succeeded).",
		}),
	}
	for _, r := range []string{errConnect, errTLS, errWrite, errClosed, errLog} {
		m.errs.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.shipped, m.errs, m.lag, m.connected} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("audit %s sink metrics: %w", sink, err)
		}
	}
	return m, nil
}

// readBatch returns up to n records of log after seq after. A failed read
// is counted and logged; records retention pruned before they were shipped
// are warned about, naming the peer to check. prefix names the sink in the
// log lines ("audit syslog").
func (m *sinkMetrics) readBatch(log Log, logger *slog.Logger, prefix, peer string, after uint64, n int) ([]storage.AuditRecord, error) {
	recs, err := log.After(after, n)
	if err != nil {
		m.errs.WithLabelValues(errLog).Inc()
		logger.Error(prefix+": reading the audit log failed; run `mcpgw audit verify`", slog.Any("error", err))
		return nil, err
	}
	if len(recs) > 0 && recs[0].Seq > after+1 {
		logger.Warn(prefix+": records were pruned by retention before they were shipped; raise --audit-max-records or --audit-max-age, or check the "+peer,
			slog.Uint64("from_seq", after+1), slog.Uint64("to_seq", recs[0].Seq-1))
	}
	return recs, nil
}

// backoff is the wait between a sink's attempts after a failure: from min,
// doubling up to max, back to min after a success.
type backoff struct{ min, max, cur time.Duration }

func newBackoff(lo, hi time.Duration) backoff { return backoff{min: lo, max: hi, cur: lo} }

// next returns the wait now and doubles the one after.
func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

func (b *backoff) reset() { b.cur = b.min }

// setLag sets the lag gauge: the records of log after sent.
func (m *sinkMetrics) setLag(log Log, sent uint64) {
	if head, _, err := log.AuditHead(); err == nil && head >= sent {
		m.lag.Set(float64(head - sent))
	}
}

// Start reads the CA file and the cursor and starts shipping in the
// background. An unreachable receiver is no error: the sink retries until
// Close, the records waiting in the audit log.
func (s *Syslog) Start() error {
	if s.useTLS {
		s.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.cfg.ServerName}
		if s.tlsConf.ServerName == "" {
			host, _, _ := net.SplitHostPort(s.addr)
			s.tlsConf.ServerName = host
		}
		if s.cfg.CAFile != "" {
			pem, err := os.ReadFile(s.cfg.CAFile)
			if err != nil {
				return fmt.Errorf("--audit-syslog-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("--audit-syslog-ca %s holds no PEM certificate: give the CA certificate that signed the receiver's", s.cfg.CAFile)
			}
			s.tlsConf.RootCAs = pool
		}
	}
	if s.cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "-"
		}
		s.cfg.Hostname = h
	}
	s.cfg.Hostname = sanitizeHeader(s.cfg.Hostname, 255)
	return s.start(s.cfg.Log, SyslogCursor, s.run)
}

// Close stops shipping, records the cursor and closes the connection. It
// is safe to call more than once, and without Start.
func (s *Syslog) Close() error {
	s.stop(nil)
	return nil
}

// Cursor returns the sequence number the sink resumes after.
func (s *Syslog) Cursor() (uint64, error) { return s.cfg.Log.SinkCursor(SyslogCursor) }

// conn is one connection to the receiver and the goroutine that notices
// when the receiver closes it (receivers send nothing, so any end of the
// read side is the connection's end).
type conn struct {
	net.Conn
	gen  uint64
	dead chan struct{}
	wg   sync.WaitGroup
	// unhook stops the hook that closes the connection when the sink
	// closes, which ends a write blocked on a receiver that stopped
	// reading at once rather than after WriteTimeout.
	unhook func() bool
}

func (c *conn) watch() {
	defer c.wg.Done()
	defer close(c.dead)
	var buf [512]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

func (c *conn) close() {
	c.unhook()
	c.Conn.Close()
	c.wg.Wait()
}

// isDead reports whether the receiver has closed the connection.
func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// run ships until Close. sent is the last seq written on the current
// connection, confirmed the last one delivered (see ConfirmAfter).
func (s *Syslog) run() {
	defer close(s.done)
	var (
		c         *conn
		gen       uint64
		confirmed = s.cursor
		persisted = s.cursor
		sent      = s.cursor
		// mark is sent as of the previous tick, on connection mark.gen:
		// what a tick finding that connection still up confirms.
		mark   struct{ gen, sent uint64 }
		retry  = newBackoff(s.cfg.MinBackoff, s.cfg.MaxBackoff)
		buf    []byte
		failed bool // the last attempt failed: the next success is logged
	)
	tick := time.NewTicker(s.cfg.ConfirmAfter)
	defer tick.Stop()
	confirm := func() {
		if c != nil && !c.isDead() && mark.gen == c.gen && mark.sent > confirmed {
			confirmed = mark.sent
		}
		mark.sent = sent
		if c != nil {
			mark.gen = c.gen
		} else {
			mark.gen = 0
		}
		if confirmed != persisted {
			if err := s.cfg.Log.SetSinkCursor(SyslogCursor, confirmed); err != nil {
				s.logger.Error("audit syslog: cursor not saved; records since the last saved one are sent again after a restart", slog.Any("error", err))
				return
			}
			persisted = confirmed
		}
	}
	drop := func(reason string, err error) {
		s.errs.WithLabelValues(reason).Inc()
		s.connected.Set(0)
		if c != nil {
			c.close()
			c = nil
		}
		failed = true
		s.logger.Warn(err.Error(), slog.Duration("retry_in", retry.cur), slog.Uint64("resend_from_seq", confirmed+1))
	}
	wait := func() bool {
		t := time.NewTimer(retry.next())
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return false
			case <-tick.C:
				confirm()
			case <-t.C:
				return true
			}
		}
	}
	defer func() {
		confirm()
		if c != nil {
			c.close()
		}
		s.connected.Set(0)
	}()
	for s.ctx.Err() == nil {
		select {
		case <-tick.C:
			confirm()
		default:
		}
		if c != nil && c.isDead() {
			drop(errClosed, fmt.Errorf("audit syslog: the receiver at %s closed the connection; reconnecting, records are sent again from the last confirmed one", s.cfg.URL))
			if !wait() {
				return
			}
			continue
		}
		if c == nil {
			nc, reason, err := s.dial()
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				drop(reason, err)
				if !wait() {
					return
				}
				continue
			}
			gen++
			nc.gen = gen
			c, sent = nc, confirmed
			s.connected.Set(1)
			if failed {
				s.logger.Info("audit syslog: connected again; resending from the last confirmed record", slog.Uint64("from_seq", confirmed+1))
				failed = false
			} else {
				s.logger.Info("audit syslog: connected", slog.Uint64("from_seq", confirmed+1))
			}
		}
		more := s.cfg.Log.Appended()
		recs, err := s.readBatch(s.cfg.Log, s.logger, "audit syslog", "receiver", sent, s.cfg.Batch)
		if err != nil {
			if !wait() {
				return
			}
			continue
		}
		if len(recs) > 0 {
			buf = buf[:0]
			for i := range recs {
				if buf, err = s.appendMessage(buf, &recs[i]); err != nil {
					s.errs.WithLabelValues(errLog).Inc()
					s.logger.Error("audit syslog: a record could not be encoded", slog.Uint64("seq", recs[i].Seq), slog.Any("error", err))
					if !wait() {
						return
					}
					break
				}
			}
			if err != nil {
				continue
			}
			c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if _, err := c.Write(buf); err != nil {
				drop(errWrite, fmt.Errorf("audit syslog: sending to %s failed: %v; reconnecting, records are sent again from the last confirmed one", s.cfg.URL, err))
				if !wait() {
					return
				}
				continue
			}
			sent = recs[len(recs)-1].Seq
			s.shipped.Add(float64(len(recs)))
			s.setLag(s.cfg.Log, sent)
			retry.reset()
			if cap(buf) > 4<<20 {
				buf = nil // one batch of large records need not stay
			}
			continue
		}
		s.setLag(s.cfg.Log, sent)
		select {
		case <-s.ctx.Done():
			return
		case <-more:
		case <-tick.C:
			confirm()
		case <-c.dead:
		}
	}
}

// dial connects to the receiver; on failure it returns the metric reason
// and an error saying what to do.
func (s *Syslog) dial() (*conn, string, error) {
	nd := &net.Dialer{Timeout: s.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	nc, err := nd.DialContext(s.ctx, "tcp", s.addr)
	if err != nil {
		return nil, errConnect, fmt.Errorf("audit syslog: cannot reach %s: %v; records wait in the audit log until it answers: check the receiver runs and --audit-syslog names it", s.cfg.URL, err)
	}
	if s.useTLS {
		tc := tls.Client(nc, s.tlsConf)
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, errTLS, s.handshakeError(err)
		}
		nc = tc
	}
	c := &conn{Conn: nc, dead: make(chan struct{})}
	c.unhook = context.AfterFunc(s.ctx, func() { nc.Close() })
	c.wg.Add(1)
	go c.watch()
	return c, "", nil
}

// handshakeError explains a failed TLS handshake.
func (s *Syslog) handshakeError(err error) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("audit syslog: the certificate of %s is not signed by a CA this node trusts (%v); pass the CA that signed it with --audit-syslog-ca", s.cfg.URL, err)
	case errors.As(err, &host):
		return fmt.Errorf("audit syslog: the certificate of %s is not valid for %q (%v); set --audit-syslog-server-name to a name the certificate holds", s.cfg.URL, s.tlsConf.ServerName, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("audit syslog: the certificate of %s is not usable (%v); renew it on the receiver", s.cfg.URL, err)
	case errors.As(err, &rhe):
		return fmt.Errorf("audit syslog: %s did not answer in TLS (%v); use tcp:// for a plain receiver", s.cfg.URL, err)
	}
	return fmt.Errorf("audit syslog: TLS handshake with %s failed: %v; check the receiver serves TLS on that port (use tcp:// for a plain receiver) and accepts TLS 1.2 or later", s.cfg.URL, err)
}
