package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
)

// Targets a run can measure, in the order they run.
const (
	TargetDirect = "direct" // streamable HTTP straight to the upstream
	TargetWS     = "ws"     // through the gateway over WebSocket
	TargetQUIC   = "quic"   // through the gateway over QUIC
	TargetUnix   = "unix"   // through the gateway over its Unix socket
	TargetHTTP   = "http"   // through the gateway over streamable HTTP
	// TargetOther is streamable HTTP to Config.Target, another MCP proxy
	// (or gateway) fronting the echo upstream, measured as the gateway is.
	TargetOther = "target"
)

// AllTargets lists every target of the gateway the bench measures; a run
// with Config.Target measures TargetOther as well.
var AllTargets = []string{TargetDirect, TargetWS, TargetQUIC, TargetUnix, TargetHTTP}

// Protocol versions a run can pin.
const (
	Protocol20251125 = "2025-11-25"
	Protocol20260728 = "2026-07-28"
)

// Org and account the sessions act for.
const benchOrg, benchAccount = "bench", "bench"

// streamsPerQUICConn caps the sessions the bench puts on one QUIC
// connection: the gateway's default per-connection stream limit.
const streamsPerQUICConn = 1000

// stateless reports whether protocol is served only by a stateless
// upstream.
func stateless(protocol string) bool { return protocol >= Protocol20260728 }

// routeName is the gateway route the bench creates for protocol.
func routeName(protocol string) string {
	if stateless(protocol) {
		return "bench-stateless"
	}
	return "bench"
}

// endpoints says where every target connects.
type endpoints struct {
	upstream  map[string]string // protocol → upstream URL
	other     string            // URL of TargetOther
	gw        GatewayAddrs
	token     string
	roots     *x509.CertPool
	direct    *http.Client // pooled connections straight to the upstream
	gwHTTP    *http.Client // pooled connections to the gateway, with the service token
	quicPools []*x509.CertPool
}

// bearer adds the service token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// pooledTransport keeps enough idle connections for every call in flight,
// as the gateway does towards its upstreams: with net/http's default of 2
// per host, a run would measure TCP handshakes instead of calls.
func pooledTransport(inflight int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = max(64, inflight)
	return t
}

func newEndpoints(upstream map[string]string, gw GatewayAddrs, token string, inflight int) (*endpoints, error) {
	e := &endpoints{upstream: upstream, gw: gw, token: token,
		direct: &http.Client{Transport: pooledTransport(inflight)},
		gwHTTP: &http.Client{Transport: bearer{token: token, next: pooledTransport(inflight)}},
	}
	if gw.CAFile != "" {
		pem, err := os.ReadFile(gw.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read the gateway's CA file: %w (pass --ca-file)", err)
		}
		e.roots = x509.NewCertPool()
		if !e.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", gw.CAFile)
		}
	}
	return e, nil
}

// quicRoots returns the root pool of session i. The client library shares
// one QUIC connection per gateway and root pool, so sessions beyond a
// connection's stream limit get a clone: a connection of their own.
func (e *endpoints) quicRoots(i int) *x509.CertPool {
	n := i / streamsPerQUICConn
	for len(e.quicPools) <= n {
		if len(e.quicPools) == 0 {
			e.quicPools = append(e.quicPools, e.roots)
		} else {
			e.quicPools = append(e.quicPools, e.roots.Clone())
		}
	}
	return e.quicPools[n]
}

// connect opens a session of target and checks it negotiated protocol.
func (e *endpoints) connect(ctx context.Context, target, protocol string, roots *x509.CertPool) (*mcp.ClientSession, error) {
	impl := &mcp.Implementation{Name: "mcpgw-bench", Version: "1"}
	up := e.upstream[protocol]
	opts := []client.Option{client.WithToken(e.token), client.WithProtocolVersion(protocol), client.WithImplementation(impl)}
	var sess *mcp.ClientSession
	var err error
	switch target {
	case TargetDirect:
		sess, err = mcp.NewClient(impl, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: up, HTTPClient: e.direct}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	case TargetWS:
		sess, err = client.Connect(ctx, up, benchOrg, benchAccount, append(opts, client.WithGateway("ws://"+e.gw.HTTP))...)
	case TargetQUIC:
		sess, err = client.Connect(ctx, up, benchOrg, benchAccount, append(opts, client.WithGateway("quic://"+e.gw.QUIC), client.WithRootCAs(roots))...)
	case TargetUnix:
		sess, err = client.Connect(ctx, up, benchOrg, benchAccount, append(opts, client.WithGateway("unix://"+e.gw.Unix))...)
	case TargetOther:
		sess, err = mcp.NewClient(impl, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.other, HTTPClient: e.direct}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	case TargetHTTP:
		q := url.Values{"org": {benchOrg}, "account": {benchAccount}}
		endpoint := "http://" + e.gw.HTTP + "/v1/mcp/" + url.PathEscape(routeName(protocol)) + "?" + q.Encode()
		sess, err = mcp.NewClient(impl, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: e.gwHTTP}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	default:
		return nil, fmt.Errorf("unknown target %q: use one of %v", target, AllTargets)
	}
	if err != nil {
		return nil, err
	}
	if got := sess.InitializeResult().ProtocolVersion; got != protocol {
		sess.Close()
		return nil, fmt.Errorf("negotiated protocol %s, want %s (2026-07-28 needs a stateless upstream)", got, protocol)
	}
	return sess, nil
}

// needsGateway reports whether any of targets goes through the gateway.
func needsGateway(targets []string) bool {
	return slices.ContainsFunc(targets, func(t string) bool { return t != TargetDirect && t != TargetOther })
}

// openTimeout bounds opening one session.
const openTimeout = 30 * time.Second
