package oauth

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Config configures a Client.
type Config struct {
	// Fetch bounds every request to upstream-named URLs. Default: https only,
	// no loopback, 15s timeout, 1 MiB responses, 5 redirects.
	Fetch FetchOptions
	// PendingTTL is how long a consent URL stays valid. Default 10m.
	PendingTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults spelled out.
func DefaultConfig() Config {
	return Config{Fetch: FetchOptions{}.withDefaults(), PendingTTL: 10 * time.Minute, Now: time.Now}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.PendingTTL < 0 {
		return errors.New("oauth config: pending ttl is negative: set a positive duration or 0 for the 10m default")
	}
	if c.PendingTTL > time.Hour {
		return fmt.Errorf("oauth config: pending ttl %s is over 1h: a consent url must be short-lived, lower it", c.PendingTTL)
	}
	return nil
}

// Client runs discovery, registration and the token flows. It holds no
// per-user state: every flow's state is in the values it returns. Safe for
// concurrent use.
type Client struct {
	http       *http.Client
	opts       FetchOptions
	pendingTTL time.Duration
	now        func() time.Time
}

// New returns a Client. It does no I/O.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.PendingTTL == 0 {
		cfg.PendingTTL = d.PendingTTL
	}
	if cfg.Now == nil {
		cfg.Now = d.Now
	}
	opts := cfg.Fetch.withDefaults()
	return &Client{http: NewHTTPClient(opts), opts: opts, pendingTTL: cfg.PendingTTL, now: cfg.Now}, nil
}

// HTTPClient returns the SSRF-guarded client this Client fetches with, for
// callers that fetch other upstream-named URLs (e.g. JWKS).
func (c *Client) HTTPClient() *http.Client { return c.http }

// Close drops the client's idle upstream connections. Idempotent; the
// Client stays usable (new connections are dialled as needed).
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}
