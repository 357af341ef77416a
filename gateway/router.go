package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/mcpgw/mcpgw/storage"
)

// ErrNoRoute is returned when no route allows a target.
var ErrNoRoute = errors.New("no route")

// routeTable is an immutable snapshot of the routes, ready for matching.
type routeTable struct {
	byName  map[string]storage.Route
	entries []routeEntry // longest prefix first
}

type routeEntry struct {
	route  storage.Route
	target normalURL
}

func newRouteTable(routes []storage.Route) *routeTable {
	t := &routeTable{byName: make(map[string]storage.Route, len(routes))}
	for _, r := range routes {
		t.byName[r.Name] = r
		u, err := normalizeURL(r.URL)
		if err != nil {
			continue // validated on write; a bad stored URL matches nothing
		}
		t.entries = append(t.entries, routeEntry{route: r, target: u})
	}
	sort.SliceStable(t.entries, func(i, j int) bool {
		return len(t.entries[i].target.path) > len(t.entries[j].target.path)
	})
	return t
}

// match finds the route whose URL is the longest prefix of target and
// returns it with the normalized URL to dial.
func (t *routeTable) match(target string) (storage.Route, string, error) {
	u, err := normalizeURL(target)
	if err != nil {
		return storage.Route{}, "", err
	}
	for _, e := range t.entries {
		if e.target.scheme != u.scheme || e.target.host != u.host {
			continue
		}
		if u.path == e.target.path || strings.HasPrefix(u.path, strings.TrimSuffix(e.target.path, "/")+"/") {
			if e.route.Transport == storage.TransportStdio {
				return e.route, "", nil
			}
			return e.route, u.String(), nil
		}
	}
	return storage.Route{}, "", fmt.Errorf("%w for target %q: add one with `mcpgw route add <name> <url>` (routes are an allow-list)", ErrNoRoute, u.String())
}

// byRouteName returns the named route.
func (t *routeTable) byRouteName(name string) (storage.Route, string, error) {
	r, ok := t.byName[name]
	if !ok {
		return storage.Route{}, "", fmt.Errorf("%w named %q: list routes with `mcpgw route list`", ErrNoRoute, name)
	}
	if r.Transport == storage.TransportStdio {
		return r, "", nil
	}
	return r, r.URL, nil
}

// normalURL is a target URL reduced to what matching compares.
type normalURL struct {
	scheme, host, path, query string
}

// String re-escapes the path, which normalizeURL holds decoded: a decoded
// "?", "#" or "%" written back raw would change what the URL names.
func (n normalURL) String() string {
	return (&url.URL{Scheme: n.scheme, Host: n.host, Path: n.path, RawQuery: n.query}).String()
}

// normalizeURL parses and canonicalizes a target or route URL so that
// matching compares structure, never raw strings: "https://a.example.com.evil"
// can never match a route for "https://a.example.com", and "/mcp/../admin"
// is "/admin".
func normalizeURL(raw string) (normalURL, error) {
	u, err := url.Parse(raw)
	if raw != "" && !strings.Contains(raw, "://") && (err != nil || u.Scheme == "") {
		return normalURL{}, fmt.Errorf("target %q has no scheme: add http:// (http://%s), https://, ws:// or wss://", raw, raw)
	}
	if err != nil {
		return normalURL{}, fmt.Errorf("target %q is not a URL: %v", raw, err)
	}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "http", "https", "ws", "wss", "stdio":
	default:
		return normalURL{}, fmt.Errorf("target %q: scheme must be http, https, ws, wss or stdio", raw)
	}
	if u.User != nil {
		return normalURL{}, fmt.Errorf("target %q: credentials in URLs are refused; store them with `mcpgw vault put`", u.Redacted())
	}
	if u.Fragment != "" || u.Opaque != "" {
		return normalURL{}, fmt.Errorf("target %q: fragments and opaque URLs are not allowed", raw)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return normalURL{}, fmt.Errorf("target %q has no host", raw)
	}
	if strings.Contains(host, ":") {
		// Only an IPv6 literal may hold a colon; url.Parse lets "http://::"
		// through with host ":".
		if _, err := netip.ParseAddr(host); err != nil {
			return normalURL{}, fmt.Errorf("target %q has an invalid host %q", raw, host)
		}
	}
	if port := u.Port(); port != "" && !(scheme == "http" && port == "80") && !(scheme == "https" && port == "443") &&
		!(scheme == "ws" && port == "80") && !(scheme == "wss" && port == "443") {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	trailing := strings.HasSuffix(p, "/") && p != "/"
	p = path.Clean(p)
	if trailing {
		p += "/"
	}
	return normalURL{scheme: scheme, host: host, path: p, query: u.RawQuery}, nil
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)

// ValidName checks a route, org or account name; what names it in the error.
func ValidName(what, s string) error {
	if !namePattern.MatchString(s) {
		return fmt.Errorf("%s %q is invalid: use 1-128 letters, digits and . _ : @ - (starting with a letter or digit)", what, s)
	}
	return nil
}

// ValidateRoute checks a route before it is written and fills in its defaults
// (transport, kind, credential mode) and its normalized URL.
func ValidateRoute(r *storage.Route) error {
	if err := ValidName("route name", r.Name); err != nil {
		return err
	}
	if r.Transport == "" {
		r.Transport = storage.TransportStreamable
	}
	if r.Kind == "" {
		r.Kind = storage.KindInternal
	}
	switch r.Kind {
	case storage.KindInternal, storage.KindExternal:
	default:
		return fmt.Errorf("route kind %q is invalid: use internal or external", r.Kind)
	}
	if r.Credential == "" {
		r.Credential = storage.CredentialOptional
		if r.Kind == storage.KindExternal {
			r.Credential = storage.CredentialRequired
		}
	}
	switch r.Credential {
	case storage.CredentialRequired, storage.CredentialOptional, storage.CredentialNone:
	default:
		return fmt.Errorf("route credential mode %q is invalid: use required, optional or none", r.Credential)
	}
	switch r.Transport {
	case storage.TransportStdio:
		if len(r.Command) == 0 {
			return errors.New("stdio route needs a command: `mcpgw route add <name> --transport stdio -- <command> [args...]`")
		}
		r.URL = "stdio://" + strings.ToLower(r.Name)
		return nil
	case storage.TransportStreamable, storage.TransportSSE, storage.TransportWebSocket:
	default:
		return fmt.Errorf("route transport %q is invalid: use streamable, sse, websocket or stdio", r.Transport)
	}
	if len(r.Command) > 0 {
		return fmt.Errorf("route %q has a command but transport %s; commands are for stdio routes", r.Name, r.Transport)
	}
	u, err := normalizeURL(r.URL)
	if err != nil {
		return err
	}
	want := map[storage.Transport][]string{
		storage.TransportStreamable: {"http", "https"},
		storage.TransportSSE:        {"http", "https"},
		storage.TransportWebSocket:  {"ws", "wss"},
	}[r.Transport]
	if u.scheme != want[0] && u.scheme != want[1] {
		return fmt.Errorf("route %q: transport %s needs a %s:// or %s:// URL, got %q", r.Name, r.Transport, want[0], want[1], r.URL)
	}
	if u.query != "" {
		return fmt.Errorf("route %q: URL must not carry a query string", r.Name)
	}
	r.URL = u.String()
	return nil
}
