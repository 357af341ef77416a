package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

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
	// for this long. Default 30m.
	SessionIdleTimeout time.Duration
	// InsecureDev accepts sessions without a service token, as service
	// "insecure-dev" with every org. For local trials only. Default false.
	InsecureDev bool
	// MaxInFlightCalls caps the tools/call requests a node forwards at once.
	// Default 10000.
	MaxInFlightCalls int
	// VaultKeys seals and unseals credentials. Required.
	VaultKeys *vault.Keys
	// VaultKeyFile is where VaultKeys came from; a key rotation rewrites it.
	// Empty disables rotation through the admin API.
	VaultKeyFile string
	// VaultPassphrase protects VaultKeyFile when rewritten; nil writes it
	// unencrypted (0600).
	VaultPassphrase []byte
	// AuditMaxAge drops audit records older than this; 0 keeps them
	// forever. Default 90 days.
	AuditMaxAge time.Duration
	// AuditMaxRecords keeps at most this many audit records, dropping the
	// oldest; 0 means no limit. Default 10,000,000.
	AuditMaxRecords int
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// Clock returns the current time for token expiry and rate limits.
	// Default time.Now; tests set a fake clock.
	Clock func() time.Time
}

// DefaultConfig returns the configuration `mcpgw serve` uses with no flags.
func DefaultConfig() Config {
	return Config{
		DataDir:            "./data",
		HTTPAddr:           "127.0.0.1:7420",
		AdminAddr:          "127.0.0.1:7422",
		MaxMessageBytes:    transport.DefaultMaxMessageBytes,
		ConnectTimeout:     10 * time.Second,
		ShutdownTimeout:    10 * time.Second,
		SessionIdleTimeout: 30 * time.Minute,
		MaxInFlightCalls:   10000,
		AuditMaxAge:        90 * 24 * time.Hour,
		AuditMaxRecords:    10_000_000,
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
	if c.ConnectTimeout <= 0 || c.ShutdownTimeout <= 0 || c.SessionIdleTimeout <= 0 {
		return errors.New("timeouts must be positive")
	}
	if c.AuditMaxAge < 0 || c.AuditMaxRecords < 0 {
		return errors.New("--audit-max-age and --audit-max-records must not be negative (0 disables the limit)")
	}
	for _, o := range c.AllowedOrigins {
		if _, err := parseOrigin(o); err != nil {
			return fmt.Errorf("--allowed-origin %q: %v", o, err)
		}
	}
	return nil
}
