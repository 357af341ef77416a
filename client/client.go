// Package client is the Go library services use to reach MCP servers through
// mcpgw. A service names what it wants — a target URL, an org and an
// account — and gets a live go-sdk *mcp.ClientSession; the gateway picks the
// route and injects the credential, which the service never sees.
//
// The package must not depend on the gateway's internals (node).
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpgw/mcpgw/transport"
)

// Environment variables read when the matching option is not given.
const (
	EnvAddr   = "MCPGW_ADDR"    // gateway address, e.g. ws://gw.internal:7420 or quic://gw.internal:7421
	EnvToken  = "MCPGW_TOKEN"   // service token
	EnvCAFile = "MCPGW_CA_FILE" // PEM bundle of CAs to trust for wss://, https:// and quic:// gateways
)

// DefaultAddr is the gateway address used when neither WithGateway nor
// MCPGW_ADDR says otherwise.
const DefaultAddr = "ws://127.0.0.1:7420"

type options struct {
	addr       string
	token      string
	impl       *mcp.Implementation
	clientOpts *mcp.ClientOptions
	httpClient *http.Client
	maxMessage int64
	protocol   string
	rootCAs    *x509.CertPool
	caFile     string
	// tracerProvider, when set, traces the requests Connect's session sends.
	tracerProvider trace.TracerProvider
}

// Option configures Connect.
type Option func(*options)

// WithGateway sets the gateway address — several, comma-separated, for a
// cluster: ws://host:port, wss://host:port,
// http(s)://host:port (mapped to ws/wss), host:port (WebSocket),
// quic://host:port (one QUIC connection per gateway per process, a stream
// per session) or unix:///path/to.sock.
func WithGateway(addr string) Option { return func(o *options) { o.addr = addr } }

// WithToken sets the service token sent to the gateway.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithImplementation sets the client's name and version as sent in
// initialize. Default: mcpgw-client.
func WithImplementation(impl *mcp.Implementation) Option {
	return func(o *options) { o.impl = impl }
}

// WithClientOptions passes go-sdk client options: sampling, elicitation and
// roots handlers, notification handlers, keepalive. They behave exactly as
// with a direct go-sdk client.
func WithClientOptions(opts *mcp.ClientOptions) Option {
	return func(o *options) { o.clientOpts = opts }
}

// WithHTTPClient sets the HTTP client used for the WebSocket handshake. It
// takes precedence over WithRootCAs and WithCAFile for WebSocket gateways.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithRootCAs sets the CAs trusted for wss://, https:// and quic://
// gateways. Default: the file MCPGW_CA_FILE names, else the system roots.
func WithRootCAs(pool *x509.CertPool) Option { return func(o *options) { o.rootCAs = pool } }

// WithCAFile trusts the CAs in a PEM file for wss://, https:// and quic://
// gateways: the cluster CA, <data-dir>/tls/cluster/ca.crt on any node.
// Default: the file MCPGW_CA_FILE names, else the system roots.
func WithCAFile(path string) Option { return func(o *options) { o.caFile = path } }

// WithMaxMessageBytes caps one message received from the gateway. Default
// 4 MiB.
func WithMaxMessageBytes(n int64) Option { return func(o *options) { o.maxMessage = n } }

// WithProtocolVersion asks for a specific MCP protocol version instead of
// the newest the SDK knows (the server may still negotiate another).
func WithProtocolVersion(v string) Option { return func(o *options) { o.protocol = v } }

// Connect opens an MCP session to target for (org, account) through the
// gateway and returns it initialized. When the account must first consent
// to an OAuth-protected server, the error is a *ConsentRequiredError
// (errors.As) carrying the authorization URL to show the user.
func Connect(ctx context.Context, target, org, account string, opts ...Option) (*mcp.ClientSession, error) {
	o := options{addr: os.Getenv(EnvAddr), token: os.Getenv(EnvToken)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.addr == "" {
		o.addr = DefaultAddr
	}
	if o.impl == nil {
		o.impl = &mcp.Implementation{Name: "mcpgw-client", Version: "1"}
	}
	t, err := NewTransport(o.addr, target, org, account, opts...)
	if err != nil {
		return nil, err
	}
	var sessOpts *mcp.ClientSessionOptions
	if o.protocol != "" {
		sessOpts = &mcp.ClientSessionOptions{ProtocolVersion: o.protocol}
	}
	c := mcp.NewClient(o.impl, o.clientOpts)
	if o.tracerProvider != nil {
		c.AddSendingMiddleware(tracingMiddleware(o.tracerProvider))
	}
	sess, err := c.Connect(ctx, t, sessOpts)
	if err != nil {
		if cerr := asConsentRequired(err); cerr != err {
			return nil, cerr
		}
		return nil, fmt.Errorf("mcpgw: connect to %s via %s: %w", target, o.addr, err)
	}
	return sess, nil
}

// Transport is an mcp.Transport that opens a session through the gateway,
// for callers that build their own mcp.Client.
type Transport struct {
	// dialers open the session through each gateway node, in order of
	// preference.
	dialers []dialFunc
}

// NewTransport returns a transport for (target, org, account) through the
// gateway at addr: one address, or several separated by commas (the nodes
// of a cluster), in which case the session moves to another node when its
// node goes away.
func NewTransport(addr, target, org, account string, opts ...Option) (*Transport, error) {
	o := options{addr: addr, token: os.Getenv(EnvToken), caFile: os.Getenv(EnvCAFile)}
	for _, opt := range opts {
		opt(&o)
	}
	if target == "" || org == "" || account == "" {
		return nil, errors.New("mcpgw: target, org and account are all required")
	}
	t := &Transport{}
	for _, a := range strings.Split(addr, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		d, err := dialerFor(a, target, org, account, o)
		if err != nil {
			return nil, err
		}
		t.dialers = append(t.dialers, d)
	}
	if len(t.dialers) == 0 {
		return nil, fmt.Errorf("mcpgw: no gateway address in %q", addr)
	}
	return t, nil
}

// dialerFor returns how to open the session through one gateway address.
func dialerFor(addr, target, org, account string, o options) (dialFunc, error) {
	if open, ok, err := framedOpener(addr, target, org, account, o); ok {
		return open, err
	}
	u, h, err := wsRequest(addr, target, org, account, o)
	if err != nil {
		return nil, err
	}
	hc := o.httpClient
	if hc == nil && strings.HasPrefix(u, "wss://") && (o.rootCAs != nil || o.caFile != "") {
		roots, err := loadRoots(o.rootCAs, o.caFile)
		if err != nil {
			return nil, err
		}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	}
	return func(ctx context.Context) (mcp.Connection, error) {
		c, err := transport.DialWebSocket(ctx, u, h, hc, transport.WebSocketOptions{MaxMessageBytes: o.maxMessage})
		return c, explainTLS(err)
	}, nil
}

// loadRoots returns pool, or else the CAs in the PEM file caFile.
func loadRoots(pool *x509.CertPool, caFile string) (*x509.CertPool, error) {
	if pool != nil || caFile == "" {
		return pool, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("mcpgw: read CA file %s (%s): %w", caFile, EnvCAFile, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("mcpgw: CA file %s (%s) holds no PEM certificate", caFile, EnvCAFile)
	}
	return roots, nil
}

// explainTLS adds what to do to an error from a gateway certificate this
// process does not trust.
func explainTLS(err error) error {
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		return err
	}
	var hostErr x509.HostnameError
	if errors.As(verr.Err, &hostErr) {
		return fmt.Errorf("%w (the gateway's certificate does not name the host dialed: use a name it lists, or have the operator issue one naming it)", err)
	}
	return fmt.Errorf("%w (trust the gateway's CA: set %s, or use WithCAFile or WithRootCAs, with the cluster CA, <data-dir>/tls/cluster/ca.crt on any node)", err, EnvCAFile)
}

// wsRequest returns the URL and headers of a WebSocket session request.
func wsRequest(addr, target, org, account string, o options) (string, http.Header, error) {
	base, err := wsBase(addr)
	if err != nil {
		return "", nil, err
	}
	q := url.Values{"target": {target}, "org": {org}, "account": {account}}
	h := http.Header{}
	if o.token != "" {
		h.Set("Authorization", "Bearer "+o.token)
	}
	return base + "/v1/mcp?" + q.Encode(), h, nil
}

// Connect implements mcp.Transport.
func (t *Transport) Connect(ctx context.Context) (mcp.Connection, error) {
	if len(t.dialers) == 1 {
		return t.dialers[0](ctx)
	}
	return newFailoverConn(ctx, t.dialers)
}

// wsBase turns a gateway address into a ws:// or wss:// base URL.
func wsBase(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "ws://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("mcpgw: gateway address %q is not ws://host:port", addr)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("mcpgw: gateway address %q: scheme must be ws, wss, http, https, quic or unix", addr)
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(u.Path, "/"), nil
}
