package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/node"
)

func serveCommand() *cli.Command {
	def := node.DefaultConfig()
	return &cli.Command{
		Name:  "serve",
		Usage: "run a gateway node (no flags: a single node on loopback, data in ./data)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", EnvVars: []string{"MCPGW_CONFIG"}, Usage: "TOML file of serve settings, keys named as the flags (max-conns = 5000); flags and environment variables override it; SIGHUP re-reads it"},
			&cli.BoolFlag{Name: "print-config", Usage: "print the settings in force (flags, environment, --config, defaults) as a config file and exit"},
			dataDirFlag(),
			vaultKeyFlag(),
			&cli.StringFlag{Name: "http", Value: def.HTTPAddr, EnvVars: []string{"MCPGW_HTTP"}, Usage: "listen address for WebSocket and streamable HTTP sessions"},
			&cli.StringFlag{Name: "admin", Value: def.AdminAddr, EnvVars: []string{envAdmin, envAdminDeprecated}, Usage: "listen address for the admin API and /metrics (" + envAdminDeprecated + " is its deprecated name)"},
			&cli.StringFlag{Name: "quic", Value: def.QUICAddr, EnvVars: []string{"MCPGW_QUIC"}, Usage: "UDP listen address for QUIC sessions (ALPN mcp, a session per stream); empty disables"},
			&cli.StringFlag{Name: "unix", Value: def.UnixPath, EnvVars: []string{"MCPGW_UNIX"}, Usage: "Unix socket path for sessions (mode 0660, a session per connection); empty disables"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"MCPGW_TLS_CERT"}, Usage: "PEM certificate for the QUIC listener and the TLS session and admin listeners (default: the node's certificate from the cluster CA, <data-dir>/tls/cluster/node.crt)"},
			&cli.StringFlag{Name: "tls-key", EnvVars: []string{"MCPGW_TLS_KEY"}, Usage: "PEM private key of --tls-cert"},
			&cli.StringFlag{Name: "tls", Value: string(def.TLS), EnvVars: []string{"MCPGW_TLS"}, Usage: "TLS on the --http and --admin listeners: auto (on those not on loopback), on, or off (off loopback only with --insecure-plaintext)"},
			&cli.BoolFlag{Name: "insecure-plaintext", EnvVars: []string{"MCPGW_INSECURE_PLAINTEXT"}, Usage: "serve plain HTTP on --http and --admin even off loopback, tokens in the clear (only behind a TLS-terminating proxy or on a protected network)"},
			&cli.IntFlag{Name: "max-conns", Value: def.MaxConns, EnvVars: []string{"MCPGW_MAX_CONNS"}, Usage: "connections open at once on --http and --unix together (and on --quic); 0 sizes it from the open-file limit"},
			&cli.IntFlag{Name: "max-conns-per-ip", Value: def.MaxConnsPerIP, EnvVars: []string{"MCPGW_MAX_CONNS_PER_IP"}, Usage: "connections one remote address (IPv4, or IPv6 /64) may hold open on each listener"},
			&cli.IntFlag{Name: "admin-max-conns", Value: def.AdminMaxConns, EnvVars: []string{"MCPGW_ADMIN_MAX_CONNS"}, Usage: "connections open at once on --admin"},
			&cli.DurationFlag{Name: "idle-timeout", Value: def.IdleTimeout, EnvVars: []string{"MCPGW_IDLE_TIMEOUT"}, Usage: "close a keep-alive HTTP connection waiting this long for its next request"},
			&cli.DurationFlag{Name: "read-timeout", Value: def.ReadTimeout, EnvVars: []string{"MCPGW_READ_TIMEOUT"}, Usage: "how long a request's headers and body may take to arrive (streams and WebSocket sessions are not bounded by it)"},
			&cli.IntFlag{Name: "max-sessions", Value: def.MaxSessions, EnvVars: []string{"MCPGW_MAX_SESSIONS"}, Usage: "concurrent sessions this node accepts across transports; more get an overloaded error"},
			&cli.Int64Flag{Name: "max-streams-per-conn", Value: def.MaxStreamsPerConn, EnvVars: []string{"MCPGW_MAX_STREAMS_PER_CONN"}, Usage: "concurrent sessions one QUIC connection may carry"},
			&cli.StringSliceFlag{Name: "allowed-origin", EnvVars: []string{"MCPGW_ALLOWED_ORIGINS"}, Usage: "browser Origin allowed to open sessions (repeatable); requests without Origin are unaffected"},
			&cli.Int64Flag{Name: "max-message-bytes", Value: def.MaxMessageBytes, EnvVars: []string{"MCPGW_MAX_MESSAGE_BYTES"}, Usage: "largest JSON-RPC message accepted in either direction"},
			&cli.DurationFlag{Name: "connect-timeout", Value: def.ConnectTimeout, EnvVars: []string{"MCPGW_CONNECT_TIMEOUT"}, Usage: "how long opening an upstream connection may take"},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: def.ShutdownTimeout, EnvVars: []string{"MCPGW_SHUTDOWN_TIMEOUT"}, Usage: "how long SIGTERM waits for sessions to drain"},
			&cli.DurationFlag{Name: "rotation-drain-timeout", Value: def.RotationDrainTimeout, EnvVars: []string{"MCPGW_ROTATION_DRAIN_TIMEOUT"}, Usage: "when the credential of an open stdio or WebSocket upstream session changes, how long calls in flight may finish on the old connection before it is re-established"},
			&cli.DurationFlag{Name: "session-idle-timeout", Value: def.SessionIdleTimeout, EnvVars: []string{"MCPGW_SESSION_IDLE_TIMEOUT"}, Usage: "close streamable HTTP sessions without a request this long, even those holding a GET stream open"},
			&cli.DurationFlag{Name: "session-abandon-timeout", Value: def.SessionAbandonTimeout, EnvVars: []string{"MCPGW_SESSION_ABANDON_TIMEOUT"}, Usage: "close streamable HTTP sessions with neither a GET stream open nor a request this long (clients gone without DELETE), ending their upstream sessions and processes"},
			&cli.IntFlag{Name: "max-stdio-per-route", Value: def.MaxStdioPerRoute, EnvVars: []string{"MCPGW_MAX_STDIO_PER_ROUTE"}, Usage: "upstream processes one stdio route may run at once on this node (one per session); more sessions get an overloaded error"},
			&cli.IntFlag{Name: "max-inflight", Value: def.MaxInFlightCalls, EnvVars: []string{"MCPGW_MAX_INFLIGHT"}, Usage: "tools/call requests this node forwards at once"},
			&cli.IntFlag{Name: "max-calls-per-session", Value: def.MaxCallsPerSession, EnvVars: []string{"MCPGW_MAX_CALLS_PER_SESSION"}, Usage: "calls one session may have awaiting an answer; more get an immediate overloaded error"},
			&cli.DurationFlag{Name: "audit-max-age", Value: def.AuditMaxAge, EnvVars: []string{"MCPGW_AUDIT_MAX_AGE"}, Usage: "drop audit records older than this (0: keep forever)"},
			&cli.IntFlag{Name: "audit-max-records", Value: def.AuditMaxRecords, EnvVars: []string{"MCPGW_AUDIT_MAX_RECORDS"}, Usage: "keep at most this many audit records, dropping the oldest (0: no limit)"},
			&cli.StringFlag{Name: "audit-sync", Value: def.AuditSync, EnvVars: []string{"MCPGW_AUDIT_SYNC"}, Usage: "when audit records reach the disk: batch (within --audit-flush-interval; a crash loses about that much) or always (each tool call's record before its response; a crash loses no answered call's record, at the cost of a commit per response)"},
			&cli.DurationFlag{Name: "audit-checkpoint-interval", Value: def.AuditCheckpointInterval, EnvVars: []string{"MCPGW_AUDIT_CHECKPOINT_INTERVAL"}, Usage: "how often this node commits its signed audit chain head through raft, so other nodes detect a truncated, rewound or replaced audit log; records since the last checkpoint are what a local attacker could remove undetected"},
			&cli.DurationFlag{Name: "audit-flush-interval", Value: def.AuditFlushInterval, EnvVars: []string{"MCPGW_AUDIT_FLUSH_INTERVAL"}, Usage: "with --audit-sync=batch, the longest an audit record waits in memory before it is committed, and so about what a crash loses; shorter costs more CPU per record (each commit syncs the disk twice), longer puts more records at risk"},
			&cli.BoolFlag{Name: "audit-hash-payloads", EnvVars: []string{"MCPGW_AUDIT_HASH_PAYLOADS"}, Usage: "record in each tool call's audit record the SHA-256 of its arguments and of its result (hex), never their values"},
			&cli.StringFlag{Name: "audit-syslog", EnvVars: []string{"MCPGW_AUDIT_SYSLOG"}, Usage: "ship the audit log to a syslog receiver (RFC 5424, octet-counted): tcp://host:514 or tls://host:6514; at least once, resuming after restarts and outages (empty: off)"},
			&cli.StringFlag{Name: "audit-syslog-ca", EnvVars: []string{"MCPGW_AUDIT_SYSLOG_CA"}, Usage: "PEM file of the CAs that sign the tls:// syslog receiver's certificate (default: the system's roots)"},
			&cli.StringFlag{Name: "audit-syslog-server-name", EnvVars: []string{"MCPGW_AUDIT_SYSLOG_SERVER_NAME"}, Usage: "name the tls:// syslog receiver's certificate must hold (default: the host of --audit-syslog)"},
			&cli.StringFlag{Name: "audit-syslog-facility", Value: def.AuditSyslogFacility, EnvVars: []string{"MCPGW_AUDIT_SYSLOG_FACILITY"}, Usage: "syslog facility of the audit messages: local0…local7, auth, authpriv, audit, daemon, user"},
			&cli.StringFlag{Name: "audit-syslog-app-name", Value: def.AuditSyslogAppName, EnvVars: []string{"MCPGW_AUDIT_SYSLOG_APP_NAME"}, Usage: "APP-NAME of the audit syslog messages"},
			&cli.StringFlag{Name: "audit-otlp-endpoint", EnvVars: []string{"MCPGW_AUDIT_OTLP_ENDPOINT"}, Usage: "ship the audit log as OTLP logs to an OpenTelemetry collector's OTLP/HTTP URL, e.g. http://collector:4318; at least once, resuming after restarts and outages (empty: off)"},
			&cli.StringFlag{Name: "otlp-endpoint", EnvVars: []string{"MCPGW_OTLP_ENDPOINT"}, Usage: "OpenTelemetry collector OTLP/HTTP URL to send traces to, e.g. http://collector:4318 (empty: tracing off)"},
			&cli.Float64Flag{Name: "trace-sample-ratio", Value: def.TraceSampleRatio, EnvVars: []string{"MCPGW_TRACE_SAMPLE_RATIO"}, Usage: "with --otlp-endpoint, the fraction of new traces recorded (0 to 1); a caller's sampled traceparent is always followed"},
			nodeIDFlag(),
			&cli.StringFlag{Name: "raft", Value: def.RaftAddr, EnvVars: []string{"MCPGW_RAFT"}, Usage: "TCP listen address for raft and forwarded writes between nodes (mutual TLS)"},
			raftAdvertiseFlag(),
			&cli.StringSliceFlag{Name: "join", EnvVars: []string{"MCPGW_JOIN"}, Usage: "raft address of a member of the cluster to join (repeatable); ignored once this node is a member"},
			&cli.BoolFlag{Name: "bootstrap", Value: def.Bootstrap, EnvVars: []string{"MCPGW_BOOTSTRAP"}, Usage: "with no --join and no raft state, start a new cluster; --bootstrap=false waits to be added with `mcpgw cluster join`"},
			clusterTLSDirFlag(),
			&cli.DurationFlag{Name: "raft-heartbeat-timeout", Value: def.RaftHeartbeatTimeout, EnvVars: []string{"MCPGW_RAFT_HEARTBEAT_TIMEOUT"}, Usage: "how long a follower waits without hearing from the leader before calling an election"},
			&cli.DurationFlag{Name: "raft-election-timeout", Value: def.RaftElectionTimeout, EnvVars: []string{"MCPGW_RAFT_ELECTION_TIMEOUT"}, Usage: "how long a candidate waits for votes"},
			&cli.DurationFlag{Name: "raft-apply-timeout", Value: def.RaftApplyTimeout, EnvVars: []string{"MCPGW_RAFT_APPLY_TIMEOUT"}, Usage: "how long a replicated write may take, waiting for a leader included"},
			&cli.BoolFlag{Name: "insecure-dev", EnvVars: []string{"MCPGW_INSECURE_DEV"}, Usage: "accept sessions WITHOUT a service token (local trials only)"},
			&cli.BoolFlag{Name: "pprof", EnvVars: []string{"MCPGW_PPROF"}, Usage: "serve Go profiles (net/http/pprof) under /debug/pprof/ on the admin listener, behind the admin token"},
			&cli.StringFlag{Name: "public-url", EnvVars: []string{"MCPGW_PUBLIC_URL"}, Usage: "base URL browsers reach the session listener at; turns on upstream OAuth (callback: <url>/oauth/callback)"},
			&cli.StringFlag{Name: "oauth-client-metadata-url", EnvVars: []string{"MCPGW_OAUTH_CLIENT_METADATA_URL"}, Usage: "the gateway's client_id at authorization servers that fetch Client ID Metadata Documents (default: <public-url>/oauth/client-metadata.json, served by the gateway; set it when the document is published at another https address)"},
			&cli.BoolFlag{Name: "oauth-allow-loopback", EnvVars: []string{"MCPGW_OAUTH_ALLOW_LOOPBACK"}, Usage: "let upstream OAuth reach http servers on loopback (development only)"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"MCPGW_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", EnvVars: []string{"MCPGW_LOG_FORMAT"}, Usage: "text or json (default: text on a terminal, json otherwise)"},
		},
		Action: runServe,
	}
}

func nodeIDFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "node-id", EnvVars: []string{"MCPGW_NODE_ID"}, Usage: "this node's id in the cluster (default: the one in <data-dir>/node-id, or a new random id)"}
}

func raftAdvertiseFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "raft-advertise", EnvVars: []string{"MCPGW_RAFT_ADVERTISE"}, Usage: "host:port other nodes dial to reach --raft (default: --raft)"}
}

func clusterTLSDirFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "cluster-tls-dir", EnvVars: []string{"MCPGW_CLUSTER_TLS_DIR"}, Usage: "cluster CA and node certificate for raft's mutual TLS (default <data-dir>/tls/cluster)"}
}

func dataDirFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "data-dir", Value: node.DefaultConfig().DataDir, EnvVars: []string{"MCPGW_DATA_DIR"}, Usage: "directory for the node's databases and admin token"}
}

func runServe(c *cli.Context) error {
	r := &serveReloader{flags: c.Command.Flags, pinned: map[string]bool{}, atStart: map[string]string{}}
	for _, f := range c.Command.Flags {
		if c.IsSet(f.Names()[0]) {
			r.pinned[f.Names()[0]] = true // a flag or environment variable: the file cannot change it
		}
	}
	fromFile := map[string]bool{}
	if r.path = c.String("config"); r.path != "" {
		cf, err := readConfigFile(r.path, c.Command.Flags)
		if err != nil {
			return err
		}
		set, err := cf.apply(c)
		if err != nil {
			return err
		}
		for _, k := range set {
			fromFile[k] = true
		}
	}
	if c.Bool("print-config") {
		out, err := effectiveConfig(c, fromFile)
		if err != nil {
			return err
		}
		fmt.Fprint(c.App.Writer, out)
		return nil
	}
	for _, f := range c.Command.Flags {
		r.atStart[f.Names()[0]] = flagValue(c, f)
	}

	r.level = new(slog.LevelVar)
	level, err := parseLogLevel(c.String("log-level"))
	if err != nil {
		return err
	}
	r.level.Set(level)
	logger, err := newLogger(c.App.ErrWriter, c.String("log-format"), r.level)
	if err != nil {
		return err
	}
	r.logger = logger

	cfg := node.DefaultConfig()
	cfg.DataDir = c.String("data-dir")
	cfg.HTTPAddr = c.String("http")
	if cfg.AdminAddr, err = serveAdminAddr(c, logger); err != nil {
		return err
	}
	cfg.QUICAddr = c.String("quic")
	cfg.UnixPath = c.String("unix")
	cfg.TLSCertFile = c.String("tls-cert")
	cfg.TLSKeyFile = c.String("tls-key")
	cfg.TLS = node.TLSMode(c.String("tls"))
	cfg.InsecurePlaintext = c.Bool("insecure-plaintext")
	cfg.MaxConns = c.Int("max-conns")
	cfg.MaxConnsPerIP = c.Int("max-conns-per-ip")
	cfg.AdminMaxConns = c.Int("admin-max-conns")
	cfg.IdleTimeout = c.Duration("idle-timeout")
	cfg.ReadTimeout = c.Duration("read-timeout")
	cfg.MaxSessions = c.Int("max-sessions")
	cfg.MaxStreamsPerConn = c.Int64("max-streams-per-conn")
	cfg.AllowedOrigins = splitList(c.StringSlice("allowed-origin"))
	cfg.MaxMessageBytes = c.Int64("max-message-bytes")
	cfg.ConnectTimeout = c.Duration("connect-timeout")
	cfg.ShutdownTimeout = c.Duration("shutdown-timeout")
	cfg.RotationDrainTimeout = c.Duration("rotation-drain-timeout")
	cfg.SessionIdleTimeout = c.Duration("session-idle-timeout")
	cfg.SessionAbandonTimeout = c.Duration("session-abandon-timeout")
	cfg.MaxStdioPerRoute = c.Int("max-stdio-per-route")
	cfg.MaxInFlightCalls = c.Int("max-inflight")
	cfg.MaxCallsPerSession = c.Int("max-calls-per-session")
	cfg.InsecureDev = c.Bool("insecure-dev")
	cfg.AuditMaxAge = c.Duration("audit-max-age")
	cfg.AuditMaxRecords = c.Int("audit-max-records")
	cfg.AuditSync = c.String("audit-sync")
	cfg.AuditFlushInterval = c.Duration("audit-flush-interval")
	cfg.AuditHashPayloads = c.Bool("audit-hash-payloads")
	cfg.AuditSyslog = c.String("audit-syslog")
	cfg.AuditSyslogCA = c.String("audit-syslog-ca")
	cfg.AuditSyslogServerName = c.String("audit-syslog-server-name")
	cfg.AuditSyslogFacility = c.String("audit-syslog-facility")
	cfg.AuditSyslogAppName = c.String("audit-syslog-app-name")
	cfg.AuditOTLPEndpoint = c.String("audit-otlp-endpoint")
	cfg.OTLPEndpoint = c.String("otlp-endpoint")
	cfg.TraceSampleRatio = c.Float64("trace-sample-ratio")
	cfg.AuditCheckpointInterval = c.Duration("audit-checkpoint-interval")
	cfg.NodeID = c.String("node-id")
	cfg.RaftAddr = c.String("raft")
	cfg.RaftAdvertise = c.String("raft-advertise")
	cfg.Join = splitList(c.StringSlice("join"))
	cfg.Bootstrap = c.Bool("bootstrap")
	cfg.ClusterTLSDir = c.String("cluster-tls-dir")
	cfg.RaftHeartbeatTimeout = c.Duration("raft-heartbeat-timeout")
	cfg.RaftElectionTimeout = c.Duration("raft-election-timeout")
	cfg.RaftApplyTimeout = c.Duration("raft-apply-timeout")
	cfg.Pprof = c.Bool("pprof")
	cfg.PublicURL = c.String("public-url")
	cfg.OAuthAllowLoopback = c.Bool("oauth-allow-loopback")
	cfg.OAuthClientMetadataURL = c.String("oauth-client-metadata-url")
	cfg.Logger = logger
	build := versionInfo()
	cfg.Version, cfg.Revision = build.Version, build.Commit
	cfg.VaultKeyFile = c.String("vault-key")
	cfg.VaultKeys, cfg.VaultPassphrase, err = loadVaultKeys(c.App.ErrWriter, cfg.VaultKeyFile, cfg.DataDir, logger)
	if err != nil {
		return err
	}

	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP is caught from before the start summary, so a reload sent
	// once the node says it is up never kills the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := n.Start(ctx); err != nil {
		return err
	}
	r.node = n
	for done := false; !done; {
		select {
		case <-hup:
			r.reload()
		case <-ctx.Done():
			done = true
		}
	}
	logger.Info("shutting down: draining sessions", slog.Duration("deadline", cfg.ShutdownTimeout))
	return n.Close()
}

// splitList accepts repeated flags and comma-separated env values alike.
func splitList(in []string) []string {
	var out []string
	for _, v := range in {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// background is the context for commands that do not run a server.
func background(c *cli.Context) context.Context {
	if c.Context != nil {
		return c.Context
	}
	return context.Background()
}
