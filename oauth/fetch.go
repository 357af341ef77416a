package oauth

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// FetchOptions bounds the HTTP client that fetches everything an upstream
// names: metadata, registration, token and JWKS URLs.
//
// Private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) are
// allowed on purpose: on-premises authorization servers and MCP servers
// commonly live there, and the gateway is deployed inside such networks.
// Link-local addresses (which hold the 169.254.169.254 cloud metadata
// service), the known cloud metadata addresses, unspecified, broadcast and
// multicast addresses are never dialled, and loopback only with AllowLoopback.
type FetchOptions struct {
	// AllowLoopback permits loopback addresses and plain http to loopback
	// hosts. Default false; for development and tests only.
	AllowLoopback bool
	// Timeout bounds one request including redirects and reading the body.
	// Default 15s.
	Timeout time.Duration
	// MaxResponseBytes caps a response body. Default 1 MiB.
	MaxResponseBytes int64
	// MaxRedirects caps redirects followed per request. Default 5.
	MaxRedirects int
}

func (o FetchOptions) withDefaults() FetchOptions {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = 1 << 20
	}
	if o.MaxRedirects <= 0 {
		o.MaxRedirects = 5
	}
	return o
}

// NewHTTPClient returns an *http.Client with the SSRF guard: every request
// URL (the first and each redirect) must be https, or http to a loopback host
// when AllowLoopback is set; every dialled address is checked after DNS
// resolution, so a name that resolves to a metadata address is refused; bodies
// are capped and requests time out. Environment proxies are ignored, because
// a proxy would make the dialled address the proxy's and defeat the check.
func NewHTTPClient(o FetchOptions) *http.Client {
	o = o.withDefaults()
	dialer := &net.Dialer{
		Timeout:   5 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				host = address
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return fmt.Errorf("dial %q: %w: not an ip address after resolution", address, ErrAddressNotAllowed)
			}
			return CheckAddr(ip, o.AllowLoopback)
		},
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: &guardedTransport{base: tr, opts: o},
		Timeout:   o.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > o.MaxRedirects {
				return fmt.Errorf("follow redirect to %s: more than %d redirects: fix the upstream's redirect loop", redactURL(req.URL), o.MaxRedirects)
			}
			if err := CheckURL(req.URL.String(), o.AllowLoopback); err != nil {
				return fmt.Errorf("follow redirect: %w", err)
			}
			return nil
		},
	}
}

// guardedTransport checks each request's URL before it is sent and caps the
// response body; the dialer's Control hook checks the resolved address.
type guardedTransport struct {
	base *http.Transport
	opts FetchOptions
}

func (t *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := CheckURL(req.URL.String(), t.opts.AllowLoopback); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if res.ContentLength > t.opts.MaxResponseBytes {
		res.Body.Close()
		return nil, fmt.Errorf("fetch %s: %w: %d bytes, limit %d", redactURL(req.URL), ErrResponseTooLarge, res.ContentLength, t.opts.MaxResponseBytes)
	}
	res.Body = &limitedBody{rc: res.Body, left: t.opts.MaxResponseBytes, limit: t.opts.MaxResponseBytes, url: redactURL(req.URL)}
	return res, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections (Client.Close) reach the pool.
func (t *guardedTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// limitedBody fails the read that goes past the limit instead of silently
// truncating, so a cut-off JSON document is never parsed as a shorter one.
type limitedBody struct {
	rc    io.ReadCloser
	left  int64
	limit int64
	url   string
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Probe one byte to tell "exactly at the limit" from "over it".
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("fetch %s: %w: limit %d bytes", b.url, ErrResponseTooLarge, b.limit)
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// metadataAddrs are cloud metadata services outside the link-local range,
// refused even though their ranges (ULA, CGNAT) are otherwise allowed.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud metadata
}

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
	broadcast   = netip.MustParseAddr("255.255.255.255")
)

// CheckAddr reports whether the gateway may connect to ip. It refuses
// unspecified, "this network" (0/8), broadcast, multicast, link-local
// (169.254/16 with the cloud metadata service, fe80::/10), the known cloud
// metadata addresses, and loopback unless allowLoopback. Private ranges are
// allowed (see FetchOptions). IPv4-mapped and NAT64 addresses are judged by
// the IPv4 address they carry.
func CheckAddr(ip netip.Addr, allowLoopback bool) error {
	ip = ip.Unmap()
	if ip.Is6() && nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	ip = ip.WithZone("")
	refuse := func(why string) error {
		return fmt.Errorf("connect to %s: %w: %s; use a routable address for the upstream", ip, ErrAddressNotAllowed, why)
	}
	switch {
	case !ip.IsValid():
		return fmt.Errorf("connect: %w: invalid address", ErrAddressNotAllowed)
	case ip.IsUnspecified() || (ip.Is4() && thisNetwork.Contains(ip)):
		return refuse("unspecified address")
	case ip == broadcast:
		return refuse("broadcast address")
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsLinkLocalMulticast():
		return refuse("multicast address")
	case ip.IsLinkLocalUnicast():
		return refuse("link-local address (cloud metadata lives here)")
	case ip.IsLoopback():
		if allowLoopback {
			return nil
		}
		return fmt.Errorf("connect to %s: %w: loopback is allowed only with the development loopback option", ip, ErrAddressNotAllowed)
	}
	for _, m := range metadataAddrs {
		if ip == m {
			return refuse("cloud metadata address")
		}
	}
	return nil
}

// CheckURL reports whether the gateway may fetch raw: an absolute https URL
// with a host and no user info, or http to a loopback host (localhost or a
// loopback literal) when allowLoopback. A literal IP host is also checked with
// CheckAddr; names are checked after resolution by the client's dialer.
func CheckURL(raw string, allowLoopback bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: unparsable url: give an absolute https url", ErrURLNotAllowed)
	}
	shown := redactURL(u)
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("url %s: %w: no host: give an absolute https url", shown, ErrURLNotAllowed)
	}
	if u.User != nil {
		return fmt.Errorf("url %s: %w: user info in url: remove it", shown, ErrURLNotAllowed)
	}
	host := u.Hostname()
	ip, ipErr := netip.ParseAddr(host)
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		loopback := strings.EqualFold(host, "localhost") || (ipErr == nil && ip.Unmap().IsLoopback())
		if !allowLoopback || !loopback {
			return fmt.Errorf("url %s: %w: plain http: use https (http is allowed only to loopback in development)", shown, ErrURLNotAllowed)
		}
	default:
		return fmt.Errorf("url %s: %w: scheme %q: use https", shown, ErrURLNotAllowed, u.Scheme)
	}
	if ipErr == nil {
		if err := CheckAddr(ip, allowLoopback); err != nil {
			return fmt.Errorf("url %s: %w", shown, err)
		}
	}
	return nil
}

// redactURL drops the query, fragment and user info, which may carry codes or
// credentials, so a URL can go into an error.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return c.String()
}

// readBody reads a capped body; the cap is the client's (limitedBody), this is
// only a backstop for clients not made by NewHTTPClient.
func readBody(res *http.Response, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: limit %d bytes", ErrResponseTooLarge, limit)
	}
	return b, nil
}

var errNotFound = errors.New("not found")
