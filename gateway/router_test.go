package gateway

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/storage"
)

func TestNormalizeURL(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		want   string // normalized; "" when an error is expected
		errMsg string
	}{
		{name: "plain", raw: "http://127.0.0.1:8080/mcp", want: "http://127.0.0.1:8080/mcp"},
		{name: "case folded", raw: "HTTPS://API.Example.COM/MCP", want: "https://api.example.com/MCP"},
		{name: "default http port dropped", raw: "http://a.example:80/mcp", want: "http://a.example/mcp"},
		{name: "default https port dropped", raw: "https://a.example:443/mcp", want: "https://a.example/mcp"},
		{name: "default ws port dropped", raw: "ws://a.example:80/mcp", want: "ws://a.example/mcp"},
		{name: "https port kept on http", raw: "http://a.example:443/mcp", want: "http://a.example:443/mcp"},
		{name: "empty path", raw: "https://a.example", want: "https://a.example/"},
		{name: "dot segments", raw: "http://a.example/mcp/../admin", want: "http://a.example/admin"},
		{name: "encoded dot segments", raw: "http://a.example/mcp/%2e%2e/admin", want: "http://a.example/admin"},
		{name: "double slashes", raw: "http://a.example//mcp//x", want: "http://a.example/mcp/x"},
		{name: "trailing slash kept", raw: "http://a.example/mcp/", want: "http://a.example/mcp/"},
		{name: "query kept", raw: "http://a.example/mcp?x=1", want: "http://a.example/mcp?x=1"},
		{name: "IPv6", raw: "http://[::1]:9/mcp", want: "http://[::1]:9/mcp"},
		{name: "IPv6 default port", raw: "http://[::1]:80/mcp", want: "http://[::1]/mcp"},
		{name: "stdio", raw: "stdio://Files", want: "stdio://files/"},
		{name: "encoded question mark stays in the path", raw: "http://a.example/mcp/%3Fx", want: "http://a.example/mcp/%3Fx"},
		{name: "encoded hash stays in the path", raw: "http://a.example/mcp/a%23b", want: "http://a.example/mcp/a%23b"},
		{name: "encoded space", raw: "http://a.example/a%20b", want: "http://a.example/a%20b"},
		{name: "IPv6 zone", raw: "http://[fe80::1%25eth0]:8080/mcp", want: "http://[fe80::1%25eth0]:8080/mcp"},
		{name: "colon host", raw: "ws://::", errMsg: `has an invalid host ":"`},
		{name: "userinfo", raw: "http://x@127.0.0.1/mcp", errMsg: "credentials in URLs are refused"},
		{name: "userinfo password not echoed", raw: "http://x:hunter2@127.0.0.1/mcp", errMsg: "credentials in URLs are refused"},
		{name: "other scheme", raw: "ftp://a.example/mcp", errMsg: "scheme must be http, https, ws, wss or stdio"},
		{name: "no scheme", raw: "a.example/mcp", errMsg: `target "a.example/mcp" has no scheme: add http:// (http://a.example/mcp)`},
		{name: "no host", raw: "http:///mcp", errMsg: "has no host"},
		{name: "fragment", raw: "http://a.example/mcp#x", errMsg: "fragments and opaque URLs are not allowed"},
		{name: "opaque", raw: "http:a.example", errMsg: "fragments and opaque URLs are not allowed"},
		{name: "not a URL", raw: "http://a b/", errMsg: "is not a URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalizeURL(tc.raw)
			if tc.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
					t.Fatalf("normalizeURL(%q) error %v, want one containing %q", tc.raw, err, tc.errMsg)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("normalizeURL(%q) error %q leaks the password", tc.raw, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("normalizeURL(%q): %v", tc.raw, err)
			}
			if got.String() != tc.want {
				t.Fatalf("normalizeURL(%q)=%q, want %q", tc.raw, got.String(), tc.want)
			}
		})
	}
}

func TestRouteTableMatch(t *testing.T) {
	table := newRouteTable([]storage.Route{
		{Name: "local", URL: "http://127.0.0.1:8080/mcp", Transport: storage.TransportStreamable},
		{Name: "deeper", URL: "http://127.0.0.1:8080/mcp/deep", Transport: storage.TransportStreamable},
		{Name: "linear", URL: "https://mcp.linear.app/mcp", Transport: storage.TransportStreamable},
		{Name: "root", URL: "https://root.example/", Transport: storage.TransportStreamable},
		{Name: "files", URL: "stdio://files", Transport: storage.TransportStdio, Command: []string{"files-mcp"}},
		{Name: "broken", URL: "not a url"},
	})
	tests := []struct {
		name   string
		target string
		route  string // "" when no route may match
		dial   string
	}{
		{name: "exact", target: "http://127.0.0.1:8080/mcp", route: "local", dial: "http://127.0.0.1:8080/mcp"},
		{name: "sub-path", target: "http://127.0.0.1:8080/mcp/sub", route: "local", dial: "http://127.0.0.1:8080/mcp/sub"},
		{name: "longest prefix wins", target: "http://127.0.0.1:8080/mcp/deep/x", route: "deeper", dial: "http://127.0.0.1:8080/mcp/deep/x"},
		{name: "query passes to the dial URL", target: "http://127.0.0.1:8080/mcp?x=1", route: "local", dial: "http://127.0.0.1:8080/mcp?x=1"},
		{name: "case folded host", target: "https://MCP.Linear.App/mcp", route: "linear", dial: "https://mcp.linear.app/mcp"},
		{name: "default port", target: "https://mcp.linear.app:443/mcp", route: "linear", dial: "https://mcp.linear.app/mcp"},
		{name: "root route", target: "https://root.example/anything", route: "root", dial: "https://root.example/anything"},
		{name: "stdio", target: "stdio://files", route: "files", dial: ""},
		{name: "encoded question mark is no query", target: "http://127.0.0.1:8080/mcp/%3Fx", route: "local", dial: "http://127.0.0.1:8080/mcp/%3Fx"},
		{name: "encoded hash is no fragment", target: "http://127.0.0.1:8080/mcp/a%23b", route: "local", dial: "http://127.0.0.1:8080/mcp/a%23b"},
		{name: "host suffix", target: "http://127.0.0.1.evil.example/mcp"},
		{name: "host suffix with port", target: "http://127.0.0.1.evil.example:8080/mcp"},
		{name: "host prefix", target: "https://evilmcp.linear.app/mcp"},
		{name: "path traversal", target: "http://127.0.0.1:8080/mcp/../admin"},
		{name: "encoded path traversal", target: "http://127.0.0.1:8080/mcp/%2E%2E/admin"},
		{name: "path prefix without a slash", target: "http://127.0.0.1:8080/mcpx"},
		{name: "parent path", target: "http://127.0.0.1:8080/"},
		{name: "other scheme", target: "https://127.0.0.1:8080/mcp"},
		{name: "websocket scheme", target: "ws://127.0.0.1:8080/mcp"},
		{name: "other port", target: "http://127.0.0.1:8081/mcp"},
		{name: "no port", target: "http://127.0.0.1/mcp"},
		{name: "localhost is another host", target: "http://localhost:8080/mcp"},
		{name: "unknown host", target: "https://unknown.example/mcp"},
		{name: "stdio of another name", target: "stdio://files2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, dial, err := table.match(tc.target)
			if tc.route == "" {
				if !errors.Is(err, ErrNoRoute) {
					t.Fatalf("match(%q)=%q, %v; want ErrNoRoute", tc.target, r.Name, err)
				}
				if !strings.Contains(err.Error(), "mcpgw route add") {
					t.Errorf("error %q does not say `mcpgw route add`", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("match(%q): %v", tc.target, err)
			}
			if got, want := r.Name, tc.route; got != want {
				t.Errorf("route=%q, want %q", got, want)
			}
			if got, want := dial, tc.dial; got != want {
				t.Errorf("dial URL=%q, want %q", got, want)
			}
		})
	}
}

func TestRouteTableMatchRefusesBadTargets(t *testing.T) {
	table := newRouteTable([]storage.Route{{Name: "local", URL: "http://127.0.0.1:8080/mcp", Transport: storage.TransportStreamable}})
	tests := []struct {
		name   string
		target string
		errMsg string
	}{
		{name: "userinfo", target: "http://x@127.0.0.1:8080/mcp", errMsg: "credentials in URLs are refused"},
		{name: "fragment", target: "http://127.0.0.1:8080/mcp#frag", errMsg: "fragments"},
		{name: "file scheme", target: "file:///etc/passwd", errMsg: "scheme must be"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := table.match(tc.target)
			if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
				t.Fatalf("match(%q)=%q, %v; want an error containing %q", tc.target, r.Name, err, tc.errMsg)
			}
		})
	}
}

func TestByRouteName(t *testing.T) {
	table := newRouteTable([]storage.Route{{Name: "local", URL: "http://127.0.0.1:8080/mcp", Transport: storage.TransportStreamable}})
	if _, dial, err := table.byRouteName("local"); err != nil || dial != "http://127.0.0.1:8080/mcp" {
		t.Fatalf("byRouteName(local)=%q, %v", dial, err)
	}
	_, _, err := table.byRouteName("nope")
	if !errors.Is(err, ErrNoRoute) || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "mcpgw route list") {
		t.Fatalf("byRouteName(nope) error %v, want ErrNoRoute naming the route and `mcpgw route list`", err)
	}
}

func TestValidateRoute(t *testing.T) {
	tests := []struct {
		name   string
		route  storage.Route
		want   storage.Route // after defaults and normalization
		errMsg string
	}{
		{
			name:  "defaults",
			route: storage.Route{Name: "linear", URL: "HTTPS://mcp.linear.app:443/mcp"},
			want:  storage.Route{Name: "linear", URL: "https://mcp.linear.app/mcp", Transport: storage.TransportStreamable, Kind: storage.KindInternal},
		},
		{
			name:  "sse",
			route: storage.Route{Name: "old", URL: "http://127.0.0.1:9/sse", Transport: storage.TransportSSE, Kind: storage.KindExternal},
			want:  storage.Route{Name: "old", URL: "http://127.0.0.1:9/sse", Transport: storage.TransportSSE, Kind: storage.KindExternal},
		},
		{
			name:  "websocket",
			route: storage.Route{Name: "ws", URL: "wss://a.example/mcp", Transport: storage.TransportWebSocket},
			want:  storage.Route{Name: "ws", URL: "wss://a.example/mcp", Transport: storage.TransportWebSocket, Kind: storage.KindInternal},
		},
		{
			name:  "stdio gets its URL from the name",
			route: storage.Route{Name: "Files", URL: "http://ignored/", Transport: storage.TransportStdio, Command: []string{"files-mcp", "--ro"}},
			want:  storage.Route{Name: "Files", URL: "stdio://files", Transport: storage.TransportStdio, Command: []string{"files-mcp", "--ro"}, Kind: storage.KindInternal},
		},
		{name: "empty name", route: storage.Route{URL: "http://a.example/"}, errMsg: `route name "" is invalid`},
		{name: "name with a slash", route: storage.Route{Name: "a/b", URL: "http://a.example/"}, errMsg: `route name "a/b" is invalid`},
		{name: "name starting with a dot", route: storage.Route{Name: ".hidden", URL: "http://a.example/"}, errMsg: `route name ".hidden" is invalid`},
		{name: "name too long", route: storage.Route{Name: strings.Repeat("a", 129), URL: "http://a.example/"}, errMsg: "use 1-128 letters"},
		{name: "bad kind", route: storage.Route{Name: "a", URL: "http://a.example/", Kind: "dmz"}, errMsg: `route kind "dmz" is invalid`},
		{name: "bad transport", route: storage.Route{Name: "a", URL: "http://a.example/", Transport: "grpc"}, errMsg: `route transport "grpc" is invalid`},
		{name: "ws URL with streamable transport", route: storage.Route{Name: "a", URL: "ws://a.example/mcp"}, errMsg: `route "a": transport streamable needs a http:// or https:// URL`},
		{name: "http URL with websocket transport", route: storage.Route{Name: "a", URL: "http://a.example/mcp", Transport: storage.TransportWebSocket}, errMsg: `route "a": transport websocket needs a ws:// or wss:// URL`},
		{name: "stdio URL with sse transport", route: storage.Route{Name: "a", URL: "stdio://a", Transport: storage.TransportSSE}, errMsg: "transport sse needs a http:// or https:// URL"},
		{name: "stdio without command", route: storage.Route{Name: "a", Transport: storage.TransportStdio}, errMsg: "stdio route needs a command"},
		{name: "command on a network route", route: storage.Route{Name: "a", URL: "http://a.example/", Command: []string{"x"}}, errMsg: `route "a" has a command but transport streamable`},
		{name: "query string", route: storage.Route{Name: "a", URL: "http://a.example/mcp?key=1"}, errMsg: "must not carry a query string"},
		{name: "userinfo", route: storage.Route{Name: "a", URL: "http://u:secret@a.example/mcp"}, errMsg: "credentials in URLs are refused"},
		{name: "no URL", route: storage.Route{Name: "a"}, errMsg: "scheme must be"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.route
			err := ValidateRoute(&r)
			if tc.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
					t.Fatalf("ValidateRoute(%+v) error %v, want one containing %q", tc.route, err, tc.errMsg)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("validateRoute error %q leaks the password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ValidateRoute(%+v): %v", tc.route, err)
			}
			if r.Name != tc.want.Name || r.URL != tc.want.URL || r.Transport != tc.want.Transport || r.Kind != tc.want.Kind ||
				strings.Join(r.Command, " ") != strings.Join(tc.want.Command, " ") {
				t.Fatalf("validateRoute gave %+v, want %+v", r, tc.want)
			}
		})
	}
}

// FuzzNormalizeURL checks that normalization never panics, is idempotent,
// and that a target matching a route always reaches the route's scheme and
// host, however the target is spelled.
func FuzzNormalizeURL(f *testing.F) {
	const routeURL = "http://127.0.0.1:8080/mcp"
	for _, s := range []string{
		routeURL,
		"http://127.0.0.1:8080/mcp/sub?x=1",
		"http://127.0.0.1.evil.example/mcp",
		"http://x@127.0.0.1:8080/mcp",
		"http://127.0.0.1:8080/mcp/../admin",
		"http://127.0.0.1:8080/mcp/%2e%2e/admin",
		"http://127.0.0.1:8080/mcp/%3Fx",
		"http://127.0.0.1:8080/mcp/a%23b",
		"http://127.0.0.1:8080/mcp/a%20b",
		"http://[fe80::1%25eth0]:8080/mcp",
		"http://127.0.0.1:8080/mcp/a%20b",
		"HTTP://127.0.0.1:80/",
		"stdio://files",
		"ws://a.example:80/x/",
		"http://a.example:/mcp",
		"//127.0.0.1:8080/mcp",
	} {
		f.Add(s)
	}
	table := newRouteTable([]storage.Route{{Name: "local", URL: routeURL, Transport: storage.TransportStreamable}})
	route, err := normalizeURL(routeURL)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := normalizeURL(raw)
		if err != nil {
			if _, _, merr := table.match(raw); merr == nil {
				t.Fatalf("match(%q) succeeded for a target normalizeURL refuses: %v", raw, err)
			}
			return
		}
		again, err := normalizeURL(n.String())
		if err != nil {
			t.Fatalf("normalizeURL(%q) = %q, which does not normalize again: %v", raw, n.String(), err)
		}
		if again != n {
			t.Fatalf("normalizeURL not idempotent: %q -> %+v -> %+v", raw, n, again)
		}
		r, dial, err := table.match(raw)
		if err != nil {
			return
		}
		if r.Name != "local" || n.scheme != route.scheme || n.host != route.host {
			t.Fatalf("match(%q) = route %q for scheme %q host %q", raw, r.Name, n.scheme, n.host)
		}
		u, err := url.Parse(dial)
		if err != nil {
			t.Fatalf("match(%q) dial URL %q does not parse: %v", raw, dial, err)
		}
		if u.Scheme != "http" || u.Host != "127.0.0.1:8080" || u.User != nil {
			t.Fatalf("match(%q) dial URL %q leaves the route's scheme and host %s", raw, dial, routeURL)
		}
		if p := u.Path; p != "/mcp" && !strings.HasPrefix(p, "/mcp/") {
			t.Fatalf("match(%q) dial URL %q leaves the route's path", raw, dial)
		}
	})
}
