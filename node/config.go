package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/gateway/auditsink"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// Config configures one node. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	// DataDir holds the node's bbolt files and admin token. Default "./data".
	DataDir string
	// HTTPAddr is the listener for WebSocket and streamable HTTP sessions.
	// Default "127.0.0.1:7420".
	HTTPAddr string
	// AdminAddr is the admin API and /metrics listener. Default
	// "127.0.0.1:7422".
	AdminAddr string
	// AllowedOrigins lists the browser Origins (scheme://host[:port]) that
	// may open sessions. Requests without an Origin header (non-browser
	// clients) are allowed; any other Origin gets 403. Default: none.
	AllowedOrigins []string
	// MaxMessageBytes caps one JSON-RPC message in either direction.
	// Default 4 MiB.
	MaxMessageBytes int64
	// ConnectTimeout bounds opening an upstream connection. Default 10s.
	ConnectTimeout time.Duration
	// ShutdownTimeout bounds draining sessions on Close. Default 10s.
	ShutdownTimeout time.Duration
	// SessionIdleTimeout closes streamable HTTP sessions without requests
	// for this long, even those that keep a GET stream open. Default 30m.
	SessionIdleTimeout time.Duration
	// SessionAbandonTimeout closes streamable HTTP sessions with neither a
	// GET stream open nor a request for this long (clients that left
	// without DELETE), and with them their upstream sessions and stdio
	// processes. Default 60s.
	SessionAbandonTimeout time.Duration
	// RotationDrainTimeout bounds how long calls in flight on an open
	// stdio or WebSocket upstream connection may take to finish when the
	// session's credential is replaced, before the connection is
	// re-established on the new one. Default 0:
	// gateway.DefaultRotationDrainTimeout (30s).
	RotationDrainTimeout time.Duration
	// MaxStdioPerRoute caps the upstream processes one stdio route runs on
	// this node at once (one per session); more sessions are refused with
	// CodeOverloaded (HTTP 503). Default 64.
	MaxStdioPerRoute int
	// InsecureDev accepts sessions without a service token, as service
	// "insecure-dev" with every org. For local trials only. Default false.
	InsecureDev bool
	// MaxInFlightCalls caps the tools/call requests a node forwards at once.
	// Default 10000.
	MaxInFlightCalls int
	// MaxCallsPerSession caps the calls one session may have awaiting an
	// answer; more are answered at once with CodeOverloaded while the
	// session keeps reading (cancellations pass, pings have a cap of their
	// own of the same size). Default 256.
	MaxCallsPerSession int
	// VaultKeys seals and unseals credentials. Required.
	VaultKeys *vault.Keys
	// VaultKeyFile is where VaultKeys came from; a key rotation rewrites it.
	// Empty disables rotation through the admin API.
	VaultKeyFile string
	// VaultPassphrase protects VaultKeyFile when rewritten; nil writes it
	// unencrypted (0600).
	VaultPassphrase []byte
	// QUICAddr is the UDP listener for QUIC sessions (ALPN "mcp", one
	// session per stream); empty disables it. Default "127.0.0.1:7421".
	QUICAddr string
	// UnixPath is a Unix socket (mode 0660) for sessions in the same framing
	// as a QUIC stream, one per connection; empty disables it. Default: empty.
	UnixPath string
	// TLSCertFile and TLSKeyFile are the PEM certificate and key of the
	// QUIC listener and of the session and admin listeners when they serve
	// TLS. Default: empty, meaning this node's certificate from the cluster
	// CA (<ClusterTLSDir>/node.crt), which clients trust through ca.crt.
	TLSCertFile, TLSKeyFile string
	// TLS says whether the session (HTTPAddr) and admin (AdminAddr)
	// listeners serve TLS: TLSAuto on those not on loopback, TLSOn on both,
	// TLSOff on neither (off loopback only with InsecurePlaintext). Default
	// TLSAuto.
	TLS TLSMode
	// InsecurePlaintext lets the session and admin listeners serve plain
	// HTTP on addresses other than loopback, where service and admin tokens
	// then cross the network in the clear. Default false.
	InsecurePlaintext bool
	// MaxConns caps the connections open at once on the session listener
	// and the Unix socket together (and, separately, the QUIC connections);
	// more are refused at once. Default 0: sized at start to half of what
	// the open-file limit leaves once AdminMaxConns and a reserve (a quarter
	// of the limit, at most 1024) are set aside, and at most 2×MaxSessions,
	// so that sessions always have descriptors for their upstreams.
	MaxConns int
	// MaxConnsPerIP caps the connections one remote address (an IPv4
	// address, an IPv6 /64) holds open on each of the session, admin and
	// QUIC listeners. Default 1000.
	MaxConnsPerIP int
	// AdminMaxConns caps the connections open at once on the admin
	// listener. Default 256.
	AdminMaxConns int
	// IdleTimeout closes a keep-alive HTTP connection on the session and
	// admin listeners that waits this long for its next request. Default
	// 60s.
	IdleTimeout time.Duration
	// ReadTimeout bounds reading a request's headers and body on the
	// session and admin listeners. It does not bound a response: event
	// streams and WebSocket sessions live as long as they are used.
	// Default 30s.
	ReadTimeout time.Duration
	// MaxSessions caps concurrent sessions on this node across transports;
	// more are refused with CodeOverloaded (HTTP 503). Default 10000.
	MaxSessions int
	// MaxStreamsPerConn caps concurrent sessions on one QUIC connection; a
	// client opening more waits for one to end. Default 1000.
	MaxStreamsPerConn int64
	// OpenFrameTimeout bounds reading the open frame of a QUIC stream or
	// Unix socket connection. Default 10s.
	OpenFrameTimeout time.Duration
	// QUICIdleTimeout closes a QUIC connection silent for this long
	// (clients send keepalives every 15s). Default 60s.
	QUICIdleTimeout time.Duration
	// AuditMaxAge drops audit records older than this; 0 keeps them
	// forever. Default 90 days.
	AuditMaxAge time.Duration
	// AuditMaxRecords keeps at most this many audit records, dropping the
	// oldest; 0 means no limit. Default 10,000,000.
	AuditMaxRecords int
	// AuditSync is when an audit record must be on disk, which bounds what
	// a crash loses: "batch" commits within AuditFlushInterval and never
	// makes a call wait; "always" sends a call's response only once its
	// record is committed and synced. Default "batch".
	AuditSync string
	// AuditFlushInterval is, with AuditSync "batch", the longest a record
	// waits in memory before it is committed, and so about what a crash
	// loses. Default 50ms (gateway.DefaultAuditFlushInterval): a commit
	// costs the same CPU whether it carries 10 records or 100, and 50ms
	// keeps the records at risk near auditd's default of 50.
	AuditFlushInterval time.Duration
	// AuditHashPayloads records in each tool call's audit record the
	// SHA-256 of its arguments (as forwarded) and of its result (as the
	// upstream sent it), never the values. Default false.
	AuditHashPayloads bool
	// AuditSyslog is the syslog receiver the audit log is shipped to,
	// tcp://host:port or tls://host:port; empty ships nothing. Default
	// empty.
	AuditSyslog string
	// AuditSyslogCA is a PEM file of the CAs that sign a tls://
	// receiver's certificate. Default: the system's roots.
	AuditSyslogCA string
	// AuditSyslogServerName is the name a tls:// receiver's certificate
	// must hold. Default: the host of AuditSyslog.
	AuditSyslogServerName string
	// AuditSyslogFacility is the facility of the syslog messages.
	// Default "local0".
	AuditSyslogFacility string
	// AuditSyslogAppName is the APP-NAME of the syslog messages. Default
	// "mcpgw".
	AuditSyslogAppName string
	// AuditOTLPEndpoint is the OpenTelemetry collector's OTLP/HTTP URL the
	// audit log is shipped to as OTLP logs, e.g. http://collector:4318;
	// empty ships nothing. Default empty.
	AuditOTLPEndpoint string
	// auditSyslogTune adjusts the sink's timings; tests shorten them.
	auditSyslogTune func(*auditsink.SyslogConfig)
	// OTLPEndpoint is the OpenTelemetry collector's OTLP/HTTP URL that
	// traces go to, e.g. http://collector:4318. Default empty: tracing off.
	OTLPEndpoint string
	// TraceSampleRatio is the fraction of new traces recorded when tracing
	// is on; a caller's sampled traceparent is always followed. Default 1.
	TraceSampleRatio float64
	// TracerProvider, when set, records the spans instead of an OTLP
	// exporter (tests use an in-memory one). Default nil.
	TracerProvider trace.TracerProvider
	// Version and Revision describe the running build in
	// mcpgw_build_info. Default "dev" and "unknown".
	Version, Revision string
	// AuditCheckpointInterval is how often the node commits the head of
	// its audit chain, signed, through raft (and once more on Close); it
	// bounds which records a node-local attacker can remove undetected.
	// Default 5s.
	AuditCheckpointInterval time.Duration
	// NodeID names this node in the cluster, its certificate and its audit
	// records. Default: the id stored in <DataDir>/node-id, or a new random
	// id stored there at first start.
	NodeID string
	// RaftAddr is the TCP listener for raft and forwarded writes (mutual
	// TLS). Default "127.0.0.1:7423".
	RaftAddr string
	// RaftAdvertise is the address other nodes dial to reach RaftAddr.
	// Default: RaftAddr, which must then not be a wildcard address.
	RaftAdvertise string
	// Bootstrap makes a node with no raft state and no Join the first voter
	// of a new cluster, so a lone node is a cluster of one. False starts a
	// node that waits to be added with `mcpgw cluster join`. Default true.
	Bootstrap bool
	// Join lists raft addresses of members of an existing cluster; a node
	// with no raft state asks them to add it as a voter. Default: none.
	Join []string
	// ClusterTLSDir holds the cluster CA certificate and this node's
	// certificate and key for raft's mutual TLS. Default
	// <DataDir>/tls/cluster; a bootstrapping node with none creates a CA
	// and a certificate there.
	ClusterTLSDir string
	// RaftHeartbeatTimeout is how long a follower waits without hearing
	// from the leader before it calls an election. Default 1s.
	RaftHeartbeatTimeout time.Duration
	// RaftElectionTimeout is how long a candidate waits for votes.
	// Default 1s; at least RaftHeartbeatTimeout.
	RaftElectionTimeout time.Duration
	// RaftApplyTimeout bounds one replicated write, waiting for a leader
	// included, and how long Start waits for a leader. Default 10s.
	RaftApplyTimeout time.Duration
	// Pprof mounts net/http/pprof under /debug/pprof/ on the admin
	// listener, behind the admin token. Default false.
	Pprof bool
	// PublicURL is the base URL browsers reach this gateway's session
	// listener at (through a load balancer, any node): upstream OAuth
	// callbacks land on PublicURL + "/oauth/callback". Empty: upstream
	// OAuth is off.
	PublicURL string
	// OAuthAllowLoopback lets upstream OAuth discovery and token requests
	// reach http servers on loopback; for development and tests only.
	OAuthAllowLoopback bool
	// OAuthClientMetadataURL is the gateway's client_id at authorization
	// servers that support Client ID Metadata Documents: the URL they
	// fetch its document from. Default: PublicURL +
	// "/oauth/client-metadata.json", which the session listener serves. Set
	// it when the document is published elsewhere (a site the
	// authorization server can reach, while the gateway it cannot); it must
	// then serve what the gateway serves at its own path.
	OAuthClientMetadataURL string
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// Clock returns the current time for token expiry and rate limits.
	// Default time.Now; tests set a fake clock.
	Clock func() time.Time
}

// DefaultConfig returns the configuration `mcpgw serve` uses with no flags.
func DefaultConfig() Config {
	return Config{
		DataDir:              "./data",
		HTTPAddr:             "127.0.0.1:7420",
		AdminAddr:            "127.0.0.1:7422",
		MaxMessageBytes:      transport.DefaultMaxMessageBytes,
		ConnectTimeout:       10 * time.Second,
		ShutdownTimeout:      10 * time.Second,
		RotationDrainTimeout: gateway.DefaultRotationDrainTimeout,
		SessionIdleTimeout:   30 * time.Minute,
		MaxInFlightCalls:     10000,
		MaxCallsPerSession:   256,
		QUICAddr:             "127.0.0.1:7421",
		MaxSessions:          10000,
		MaxStreamsPerConn:    transport.DefaultMaxStreamsPerConn,
		OpenFrameTimeout:     transport.DefaultOpenTimeout,
		QUICIdleTimeout:      transport.DefaultQUICIdleTimeout,
		AuditMaxAge:          90 * 24 * time.Hour,
		AuditMaxRecords:      10_000_000,
		TLS:                  TLSAuto,
		MaxConnsPerIP:        1000,
		AdminMaxConns:        256,
		IdleTimeout:          60 * time.Second,
		ReadTimeout:          30 * time.Second,

		RaftAddr:             "127.0.0.1:7423",
		Bootstrap:            true,
		RaftHeartbeatTimeout: time.Second,
		RaftElectionTimeout:  time.Second,
		RaftApplyTimeout:     10 * time.Second,

		SessionAbandonTimeout:   transport.DefaultAbandonTimeout,
		MaxStdioPerRoute:        gateway.DefaultMaxStdioPerRoute,
		AuditSync:               string(gateway.AuditSyncBatch),
		AuditFlushInterval:      gateway.DefaultAuditFlushInterval,
		AuditCheckpointInterval: 5 * time.Second,
		AuditSyslogFacility:     auditsink.DefaultSyslogConfig().Facility,
		AuditSyslogAppName:      auditsink.DefaultSyslogConfig().AppName,
		TraceSampleRatio:        1,
	}
}

// Validate reports the first invalid setting, naming the flag to fix.
func (c *Config) Validate() error {
	if c.VaultKeys == nil {
		return errors.New("no vault keys: run `mcpgw init` or pass --vault-key")
	}
	if c.DataDir == "" {
		return errors.New("data dir is empty: set --data-dir")
	}
	for name, addr := range map[string]string{"--http": c.HTTPAddr, "--admin": c.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q is not host:port: %v", name, addr, err)
		}
	}
	if c.MaxMessageBytes < 1024 {
		return fmt.Errorf("--max-message-bytes %d is too small: use at least 1024", c.MaxMessageBytes)
	}
	if c.MaxInFlightCalls <= 0 {
		return fmt.Errorf("--max-inflight %d must be positive", c.MaxInFlightCalls)
	}
	if c.MaxCallsPerSession <= 0 {
		return fmt.Errorf("--max-calls-per-session %d must be positive", c.MaxCallsPerSession)
	}
	if c.QUICAddr != "" {
		if _, _, err := net.SplitHostPort(c.QUICAddr); err != nil {
			return fmt.Errorf("--quic %q is not host:port (empty disables QUIC): %v", c.QUICAddr, err)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together: give both, or neither to use the node's cluster certificate")
	}
	if c.MaxSessions < 1 {
		return fmt.Errorf("--max-sessions %d: use at least 1", c.MaxSessions)
	}
	if c.MaxStreamsPerConn < 1 {
		return fmt.Errorf("--max-streams-per-conn %d: use at least 1", c.MaxStreamsPerConn)
	}
	if c.ConnectTimeout <= 0 || c.ShutdownTimeout <= 0 || c.SessionIdleTimeout <= 0 || c.OpenFrameTimeout <= 0 || c.QUICIdleTimeout <= 0 {
		return errors.New("timeouts must be positive")
	}
	if c.SessionAbandonTimeout <= 0 {
		return fmt.Errorf("--session-abandon-timeout %v must be positive", c.SessionAbandonTimeout)
	}
	if c.MaxStdioPerRoute < 1 {
		return fmt.Errorf("--max-stdio-per-route %d: use at least 1", c.MaxStdioPerRoute)
	}
	if err := c.validateListeners(); err != nil {
		return err
	}
	if c.AuditMaxAge < 0 || c.AuditMaxRecords < 0 {
		return errors.New("--audit-max-age and --audit-max-records must not be negative (0 disables the limit)")
	}
	if s := gateway.AuditSync(c.AuditSync); s != gateway.AuditSyncBatch && s != gateway.AuditSyncAlways {
		return fmt.Errorf("--audit-sync %q: use batch (records on disk within --audit-flush-interval) or always (each call's record on disk before its response)", c.AuditSync)
	}
	if c.AuditCheckpointInterval <= 0 || c.AuditCheckpointInterval > time.Hour {
		return fmt.Errorf("--audit-checkpoint-interval %v: use a positive duration of at most 1h", c.AuditCheckpointInterval)
	}
	if c.AuditFlushInterval <= 0 || c.AuditFlushInterval > time.Minute {
		return fmt.Errorf("--audit-flush-interval %v: use a positive duration of at most 1m", c.AuditFlushInterval)
	}
	if c.AuditSyslog != "" {
		sc := c.auditSyslogConfig()
		if err := sc.Validate(); err != nil {
			return err
		}
	} else if c.AuditSyslogCA != "" || c.AuditSyslogServerName != "" {
		return errors.New("--audit-syslog-ca and --audit-syslog-server-name need --audit-syslog tls://host:port")
	}
	if c.AuditOTLPEndpoint != "" {
		if _, err := auditsink.OTLPEndpointURL(c.AuditOTLPEndpoint); err != nil {
			return err
		}
	}
	if err := c.validateTracing(); err != nil {
		return err
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	for _, o := range c.AllowedOrigins {
		if _, err := gateway.ParseOrigin(o); err != nil {
			return fmt.Errorf("--allowed-origin %q: %v", o, err)
		}
	}
	return nil
}
