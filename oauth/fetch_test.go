package oauth_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpgw/mcpgw/oauth"
)

func TestCheckAddr(t *testing.T) {
	tests := []struct {
		addr     string
		loopback bool // AllowLoopback
		ok       bool
	}{
		{"169.254.169.254", false, false}, // cloud metadata
		{"169.254.0.1", true, false},
		{"fe80::1", false, false},
		{"::ffff:169.254.169.254", false, false},
		{"64:ff9b::a9fe:a9fe", false, false}, // NAT64 of 169.254.169.254
		{"fd00:ec2::254", false, false},      // AWS IMDS over IPv6
		{"100.100.100.200", false, false},    // Alibaba metadata
		{"0.0.0.0", true, false},
		{"0.1.2.3", false, false},
		{"::", true, false},
		{"255.255.255.255", false, false},
		{"224.0.0.1", false, false},
		{"ff02::1", false, false},
		{"ff05::2", false, false},
		{"127.0.0.1", false, false},
		{"127.0.0.1", true, true},
		{"127.8.9.10", true, true},
		{"::1", false, false},
		{"::1", true, true},
		{"::ffff:127.0.0.1", false, false},
		{"10.1.2.3", false, true}, // private ranges: on-prem authorization servers
		{"172.16.0.1", false, true},
		{"192.168.1.10", false, true},
		{"100.64.0.1", false, true},
		{"fd12:3456::1", false, true},
		{"8.8.8.8", false, true},
		{"2001:4860::8888", false, true},
	}
	for _, tt := range tests {
		err := oauth.CheckAddr(netip.MustParseAddr(tt.addr), tt.loopback)
		if got := err == nil; got != tt.ok {
			t.Errorf("CheckAddr(%s, loopback=%v) = %v, want ok=%v", tt.addr, tt.loopback, err, tt.ok)
		}
		if err != nil && !errors.Is(err, oauth.ErrAddressNotAllowed) {
			t.Errorf("CheckAddr(%s) = %v, want ErrAddressNotAllowed", tt.addr, err)
		}
	}
	if err := oauth.CheckAddr(netip.Addr{}, true); !errors.Is(err, oauth.ErrAddressNotAllowed) {
		t.Errorf("CheckAddr(invalid) = %v, want ErrAddressNotAllowed", err)
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url      string
		loopback bool
		want     error
	}{
		{"https://as.example/token", false, nil},
		{"https://10.0.0.5:8443/token", false, nil},
		{"http://as.example/token", false, oauth.ErrURLNotAllowed},
		{"http://as.example/token", true, oauth.ErrURLNotAllowed},
		{"http://127.0.0.1:8080/token", false, oauth.ErrURLNotAllowed},
		{"http://127.0.0.1:8080/token", true, nil},
		{"http://localhost:8080/token", true, nil},
		{"http://[::1]:8080/token", true, nil},
		{"https://169.254.169.254/latest/meta-data", false, oauth.ErrAddressNotAllowed},
		{"https://[fe80::1%25eth0]/", false, oauth.ErrAddressNotAllowed},
		{"https://0.0.0.0/", true, oauth.ErrAddressNotAllowed},
		{"https://127.0.0.1/", false, oauth.ErrAddressNotAllowed},
		{"ftp://as.example/", false, oauth.ErrURLNotAllowed},
		{"javascript:alert(1)", false, oauth.ErrURLNotAllowed},
		{"https://user:pw@as.example/", false, oauth.ErrURLNotAllowed},
		{"/relative", false, oauth.ErrURLNotAllowed},
		{"", false, oauth.ErrURLNotAllowed},
		{"https://%zz/", false, oauth.ErrURLNotAllowed},
	}
	for _, tt := range tests {
		err := oauth.CheckURL(tt.url, tt.loopback)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("CheckURL(%q, loopback=%v) = %v, want %v", tt.url, tt.loopback, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("CheckURL error %q shows user info", err)
		}
	}
}

// countingServer counts requests so a test can assert nothing reached it.
func countingServer(t *testing.T, tls bool, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	f := func(w http.ResponseWriter, r *http.Request) { n.Add(1); h(w, r) }
	var s *httptest.Server
	if tls {
		s = httptest.NewTLSServer(http.HandlerFunc(f))
	} else {
		s = httptest.NewServer(http.HandlerFunc(f))
	}
	t.Cleanup(s.Close)
	return s, &n
}

func get(c *http.Client, u string) error {
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, err = io.ReadAll(res.Body)
	return err
}

func TestHTTPClientRefusals(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }
	plain, plainHits := countingServer(t, false, ok)
	secure, secureHits := countingServer(t, true, ok)

	t.Run("plain http to loopback without the flag", func(t *testing.T) {
		err := get(oauth.NewHTTPClient(oauth.FetchOptions{}), plain.URL)
		if !errors.Is(err, oauth.ErrURLNotAllowed) {
			t.Fatalf("err=%v, want ErrURLNotAllowed", err)
		}
	})
	t.Run("https to a name resolving to loopback without the flag", func(t *testing.T) {
		// localhost passes the URL check (it is a name); the dialer refuses
		// the address it resolves to.
		u := strings.Replace(secure.URL, "127.0.0.1", "localhost", 1)
		err := get(oauth.NewHTTPClient(oauth.FetchOptions{}), u)
		if !errors.Is(err, oauth.ErrAddressNotAllowed) {
			t.Fatalf("err=%v, want ErrAddressNotAllowed", err)
		}
	})
	if plainHits.Load() != 0 || secureHits.Load() != 0 {
		t.Fatalf("refused requests reached the servers: %d, %d", plainHits.Load(), secureHits.Load())
	}
	t.Run("loopback with the flag", func(t *testing.T) {
		if err := get(oauth.NewHTTPClient(oauth.FetchOptions{AllowLoopback: true}), plain.URL); err != nil {
			t.Fatalf("err=%v, want success", err)
		}
	})
	for _, target := range []struct {
		to   string
		want error
	}{
		{"http://169.254.169.254/latest/meta-data/", oauth.ErrURLNotAllowed},
		{"https://169.254.169.254/latest/meta-data/", oauth.ErrAddressNotAllowed},
		{"https://[fe80::a9fe:a9fe]/", oauth.ErrAddressNotAllowed},
		{"http://10.0.0.1/", oauth.ErrURLNotAllowed},
	} {
		t.Run("redirect to "+target.to, func(t *testing.T) {
			redir, _ := countingServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.to, http.StatusFound)
			})
			err := get(oauth.NewHTTPClient(oauth.FetchOptions{AllowLoopback: true}), redir.URL)
			if !errors.Is(err, target.want) {
				t.Fatalf("err=%v, want %v", err, target.want)
			}
		})
	}
	t.Run("redirect loop", func(t *testing.T) {
		var loop *httptest.Server
		loop, _ = countingServer(t, false, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, loop.URL+"/again", http.StatusFound)
		})
		err := get(oauth.NewHTTPClient(oauth.FetchOptions{AllowLoopback: true, MaxRedirects: 3}), loop.URL)
		if err == nil || !strings.Contains(err.Error(), "more than 3 redirects") {
			t.Fatalf("err=%v, want a redirect limit error", err)
		}
	})
	for _, chunked := range []bool{false, true} {
		name := "oversized body with content-length"
		if chunked {
			name = "oversized chunked body"
		}
		t.Run(name, func(t *testing.T) {
			big, _ := countingServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
				body := strings.Repeat("x", 2048)
				if !chunked {
					w.Header().Set("Content-Length", "2048")
				}
				io.WriteString(w, body[:1024])
				if chunked {
					w.(http.Flusher).Flush()
				}
				io.WriteString(w, body[1024:])
			})
			err := get(oauth.NewHTTPClient(oauth.FetchOptions{AllowLoopback: true, MaxResponseBytes: 1000}), big.URL)
			if !errors.Is(err, oauth.ErrResponseTooLarge) {
				t.Fatalf("err=%v, want ErrResponseTooLarge", err)
			}
		})
	}
	t.Run("body exactly at the limit", func(t *testing.T) {
		exact, _ := countingServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, strings.Repeat("x", 1000))
		})
		if err := get(oauth.NewHTTPClient(oauth.FetchOptions{AllowLoopback: true, MaxResponseBytes: 1000}), exact.URL); err != nil {
			t.Fatalf("err=%v, want success", err)
		}
	})
}

// TestDiscoverRefusesOversizedMetadata shows the cap applies to discovery.
func TestDiscoverRefusesOversizedMetadata(t *testing.T) {
	srv, _ := countingServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mcp" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"resource":"`+strings.Repeat("a", 4096)+`"}`)
	})
	c, err := oauth.New(oauth.Config{Fetch: oauth.FetchOptions{AllowLoopback: true, MaxResponseBytes: 1024}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Discover(context.Background(), srv.URL+"/mcp", oauth.Challenge{})
	if !errors.Is(err, oauth.ErrResponseTooLarge) {
		t.Fatalf("Discover: err=%v, want ErrResponseTooLarge", err)
	}
}
