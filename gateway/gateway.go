package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// State is what the data path reads of the replicated state. Reads are
// local and may be stale by one applied write; Generation changes after
// every write, which is how the gateway knows to rebuild its views.
// *storage.Store satisfies it.
type State interface {
	Generation() uint64
	Routes() ([]storage.Route, error)
	Credential(org, account, route string) (storage.Credential, error)
	TokenKeys() ([]storage.TokenKey, error)
	Revocations() ([]storage.Revocation, error)
	Rules() ([]storage.Rule, error)
	Limits() ([]storage.Limit, error)
}

// Options configures a Gateway. The zero value of each field means its
// default; a nil *Options means all defaults.
type Options struct {
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// Clock returns the current time for token expiry and rate limits.
	// Default time.Now.
	Clock func() time.Time
	// Registerer receives the data path's Prometheus instruments. Default:
	// a private registry nobody reads.
	Registerer prometheus.Registerer
	// AuditLog receives the audit records, written in batches by one
	// goroutine. The caller opens and closes it, after Close. Default nil:
	// records are queued and dropped.
	AuditLog *storage.AuditLog
	// NodeID names this node in its audit records. Default: empty.
	NodeID string
	// AuditQueueLen bounds the audit records waiting for the disk; more
	// are dropped and counted, never waited for (with AuditSyncBatch).
	// Default 65536.
	AuditQueueLen int
	// AuditSync is when a record must be on disk: AuditSyncBatch (within
	// AuditFlushInterval, the proxy never waiting) or AuditSyncAlways
	// (before the response it accounts for is sent). Default
	// AuditSyncBatch.
	AuditSync AuditSync
	// AuditFlushInterval bounds, with AuditSyncBatch, how long a record
	// waits in memory before its batch is committed, and so what a crash
	// can lose. Default DefaultAuditFlushInterval (50ms).
	AuditFlushInterval time.Duration
	// AuditHashPayloads records in each tool call's audit record the
	// SHA-256 of its arguments as forwarded and of its result as the
	// upstream sent it, never the values. Default false.
	AuditHashPayloads bool
	// MaxMessageBytes caps one JSON-RPC message in either direction.
	// Default transport.DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// ConnectTimeout bounds opening an upstream connection. Default 10s.
	ConnectTimeout time.Duration
	// RotationDrainTimeout bounds how long calls in flight on a stdio or
	// WebSocket upstream connection may take to finish once the session's
	// credential changed; then the connection is closed (those calls fail
	// with a retryable error) and re-established on the new credential.
	// Default DefaultRotationDrainTimeout (30s).
	RotationDrainTimeout time.Duration
	// SessionIdleTimeout closes streamable HTTP sessions without requests
	// for this long, even those that keep a GET stream open. Default 30m.
	SessionIdleTimeout time.Duration
	// SessionAbandonTimeout closes streamable HTTP sessions that have had
	// neither a GET stream open nor a request for this long: their client
	// is most likely gone. Default transport.DefaultAbandonTimeout (60s).
	SessionAbandonTimeout time.Duration
	// MaxStdioPerRoute caps the upstream processes one stdio route runs at
	// once, one per session; more sessions are refused with
	// transport.CodeOverloaded. Default DefaultMaxStdioPerRoute.
	MaxStdioPerRoute int
	// OpenFrameTimeout bounds reading the open frame of a framed stream.
	// Default transport.DefaultOpenTimeout.
	OpenFrameTimeout time.Duration
	// MaxSessions caps concurrent sessions across transports; more are
	// refused with transport.CodeOverloaded. Default 10000.
	MaxSessions int
	// MaxInFlightCalls caps the tools/call requests forwarded at once.
	// Default 10000.
	MaxInFlightCalls int
	// MaxCallsPerSession caps the calls one session may have awaiting an
	// answer; more are answered at once with transport.CodeOverloaded. Default 256.
	MaxCallsPerSession int
	// InsecureDev accepts sessions without a service token, as service
	// "insecure-dev" with every org. For local trials only. Default false.
	InsecureDev bool
	// AllowedOrigins lists the browser Origins (scheme://host[:port]) that
	// may open sessions besides loopback ones. Default: none.
	AllowedOrigins []string
	// Admit, when set, runs before anything else decides on a session; an
	// error refuses it (a *transport.Refusal as it is). A node that has
	// not caught up with the cluster after a start uses it, since its
	// routes and revocations may be old. Default nil: admit.
	Admit func(ctx context.Context) error
	// TracerProvider, when set, receives a span per session and, per call,
	// a gateway span and an upstream span, parented on the W3C trace
	// context the client sent (params._meta, else the HTTP headers that
	// opened the session); sampled calls carry the upstream span's
	// traceparent in params._meta. Default nil: no tracing, at no cost.
	TracerProvider trace.TracerProvider
	// OAuth, when set, renews oauth credentials an upstream refuses (401)
	// and records step-up requests (403 insufficient_scope). Default nil:
	// the refusal reaches the caller as it is.
	OAuth OAuthRefresher
	// OAuthRefreshWait bounds how long a call waits for a refresh after
	// its upstream answered 401. Default 20s.
	OAuthRefreshWait time.Duration
	// Consent, when set, starts an upstream OAuth flow for a session
	// refused for want of a credential, and the refusal carries its
	// authorization URL (transport.CodeConsentRequired). Default nil: such
	// sessions are refused with transport.CodeNoCredential.
	Consent Consent
}

// DefaultMaxStdioPerRoute is Options.MaxStdioPerRoute's default. A stdio MCP
// server commonly takes 30-100 MB, so 64 of them fit a gateway VM while a
// stdio route this busy on one node is rare.
const DefaultMaxStdioPerRoute = 64

// withDefaults returns o with every zero field set to its default.
func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.Clock == nil {
		r.Clock = time.Now
	}
	if r.Registerer == nil {
		r.Registerer = prometheus.NewRegistry()
	}
	if r.AuditQueueLen <= 0 {
		r.AuditQueueLen = 65536
	}
	if r.AuditSync == "" {
		r.AuditSync = AuditSyncBatch
	}
	if r.AuditFlushInterval <= 0 {
		r.AuditFlushInterval = DefaultAuditFlushInterval
	}
	if r.MaxMessageBytes <= 0 {
		r.MaxMessageBytes = transport.DefaultMaxMessageBytes
	}
	if r.ConnectTimeout <= 0 {
		r.ConnectTimeout = 10 * time.Second
	}
	if r.RotationDrainTimeout <= 0 {
		r.RotationDrainTimeout = DefaultRotationDrainTimeout
	}
	if r.SessionIdleTimeout <= 0 {
		r.SessionIdleTimeout = 30 * time.Minute
	}
	if r.SessionAbandonTimeout <= 0 {
		r.SessionAbandonTimeout = transport.DefaultAbandonTimeout
	}
	if r.MaxStdioPerRoute <= 0 {
		r.MaxStdioPerRoute = DefaultMaxStdioPerRoute
	}
	if r.OpenFrameTimeout <= 0 {
		r.OpenFrameTimeout = transport.DefaultOpenTimeout
	}
	if r.MaxSessions <= 0 {
		r.MaxSessions = 10000
	}
	if r.MaxInFlightCalls <= 0 {
		r.MaxInFlightCalls = 10000
	}
	if r.OAuthRefreshWait <= 0 {
		r.OAuthRefreshWait = 20 * time.Second
	}
	if r.MaxCallsPerSession <= 0 {
		r.MaxCallsPerSession = 256
	}
	return r
}

// Gateway is one node's data path. Its methods are safe for concurrent
// use.
type Gateway struct {
	state   State
	keys    func() *vault.Keys
	opts    Options
	logger  *slog.Logger
	metrics *metrics
	// tracer is nil when tracing is off.
	tracer trace.Tracer

	pol        policyCache
	audit      *auditor
	streamable *transport.StreamableServer
	procs      *upstreamProcs
	// upstreamClient makes the upstream HTTP requests, counting their
	// bytes; its connections are reused across the gateway's sessions.
	upstreamClient *http.Client
	sse            *transport.SSEServer // legacy HTTP+SSE sessions

	ctx      context.Context // ends when the gateway shuts down, and with it every session
	cancel   context.CancelFunc
	sessions sync.WaitGroup // running sessions
	watchers sync.WaitGroup // the token watch

	activeSessions atomic.Int64 // sessions counted against MaxSessions
	live           liveSessions // running sessions by token id

	// paramHeaders holds, per route (name and URL), what its upstream's
	// tools mirror into Mcp-Param-* headers: route name + "\x00" + URL →
	// *transport.ParamHeaders.
	paramHeaders sync.Map

	unsealed unsealedCache // credentials unsealed recently, for sessions to come
	consents consentLinks  // authorization URLs handed out, per (org, account, route)
	writers  *workerPool   // runs the upstream writes of calls

	closeOnce sync.Once
	closeErr  error
}

// New returns a gateway over state that unseals credentials and signing
// keys with the vault keys keys returns (a func, since a key rotation
// swaps them). It does no I/O; it starts the audit writer and, unless
// InsecureDev is set, the watch that ends sessions of revoked or expired
// tokens. Close stops them.
func New(state State, keys func() *vault.Keys, opts *Options) *Gateway {
	o := opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{state: state, keys: keys, opts: o, logger: o.Logger, metrics: newMetrics(o.Registerer), ctx: ctx, cancel: cancel, writers: newWorkerPool()}
	if o.TracerProvider != nil {
		g.tracer = o.TracerProvider.Tracer(tracerName)
	}
	g.pol.inflight = policy.NewGate(o.MaxInFlightCalls)
	g.pol.limiter, _ = policy.NewLimiter(nil)
	g.audit = newAuditor(o.Logger, o.Registerer, o.AuditQueueLen)
	g.audit.configure(o.AuditSync, o.AuditFlushInterval)
	if o.AuditLog != nil {
		g.audit.start(o.AuditLog, o.NodeID)
	}
	g.procs = newUpstreamProcs(o.MaxStdioPerRoute, o.Registerer)
	g.upstreamClient = transport.NewCountedHTTPClient(g.metrics.upIn, g.metrics.upOut)
	o.Registerer.MustRegister(&routeCollector{g: g, cs: g.metrics.perRoute()})
	g.streamable = transport.NewStreamableServer(g.openStreamable, &transport.StreamableServerOptions{
		Authenticate:    func(r *http.Request) error { _, err := g.authenticate(r); return err },
		MaxMessageBytes: o.MaxMessageBytes,
		IdleTimeout:     o.SessionIdleTimeout,
		AbandonTimeout:  o.SessionAbandonTimeout,
		Expired:         func(reason string) { g.metrics.streamableExpired.WithLabelValues(reason).Inc() },
		Logger:          o.Logger,
	})
	o.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mcpgw_streamable_sessions", Help: "Stateful streamable HTTP sessions the node holds, those awaiting their client's next request included.",
	}, func() float64 { return float64(g.streamable.Sessions()) }))
	g.sse = transport.NewSSEServer(g.openSSE, &transport.SSEServerOptions{
		MaxMessageBytes: o.MaxMessageBytes,
		Logger:          o.Logger,
	})
	g.watchSessionTokens()
	return g
}

// now reads the gateway's clock.
func (g *Gateway) now() time.Time { return g.opts.Clock() }

// vaultKeys returns the vault keys in force.
func (g *Gateway) vaultKeys() *vault.Keys { return g.keys() }

// Sessions returns the number of sessions open, across transports.
func (g *Gateway) Sessions() int { return int(g.activeSessions.Load()) }

// StreamableSessions returns the number of streamable HTTP sessions the
// gateway tracks, stateful ones awaiting their next request included.
func (g *Gateway) StreamableSessions() int { return g.streamable.Sessions() }

// UpstreamProcesses returns the upstream processes running for the stdio
// route named route.
func (g *Gateway) UpstreamProcesses(route string) int { return g.procs.count(route) }

// SetLiveNodes sets the number of live nodes that split every cluster-wide
// rate limit; values below 1 count as 1.
func (g *Gateway) SetLiveNodes(n int) { g.pol.limiter.SetShare(n) }

// LiveNodes returns the number of live nodes the rate limits are split
// among.
func (g *Gateway) LiveNodes() int { return g.pol.limiter.Share() }

// Keyring returns the service-token keyring of the current policy view:
// the signing keys and revocations of the replicated state.
func (g *Gateway) Keyring() (*policy.Keyring, error) {
	st, err := g.policy()
	if err != nil {
		return nil, err
	}
	return st.keyring, nil
}

// VerifyToken checks a service token against the current policy view and
// returns its claims. Its errors are refusals (transport.Refusal) that say
// what was wrong, never quoting the token.
func (g *Gateway) VerifyToken(token string) (*policy.Claims, error) { return g.verifyToken(token) }

// Drain ends the open streamable HTTP event streams and the legacy HTTP+SSE
// sessions, which never end by themselves; an http.Server's
// RegisterOnShutdown takes it.
func (g *Gateway) Drain() {
	g.streamable.Drain()
	g.sse.Drain()
}

// Shutdown ends every session (a pending call is answered with
// transport.CodeNodeLost, a WebSocket is closed as going away) and waits
// until they have ended or ctx is done. New sessions are refused from then
// on.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.cancel()
	g.streamable.Close()
	g.sse.Close()
	done := make(chan struct{})
	go func() { g.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends every session without waiting for them (Shutdown waits),
// stops the token watch and writes the audit records queued so far. Records
// queued later are dropped. It is safe to call more than once.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.cancel()
		g.streamable.Close()
		g.sse.Close()
		g.watchers.Wait()
		g.audit.close()
		g.unsealed.stop()
		g.upstreamClient.CloseIdleConnections()
		g.writers.close()
	})
	return g.closeErr
}
