package node

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/client"
)

func TestValidateListeners(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings of the error; none: valid
	}{
		{"loopback plaintext", func(c *Config) {}, nil},
		{"wildcard gets TLS by default", func(c *Config) { c.HTTPAddr = "0.0.0.0:7420" }, nil},
		{"wildcard plaintext refused", func(c *Config) { c.HTTPAddr, c.TLS = "0.0.0.0:7420", TLSOff },
			[]string{"--http 0.0.0.0:7420", "not a loopback address", "--insecure-plaintext", "--tls-cert"}},
		{"admin off loopback plaintext refused", func(c *Config) { c.AdminAddr, c.TLS = "10.0.0.1:7422", TLSOff },
			[]string{"--admin 10.0.0.1:7422", "--insecure-plaintext"}},
		{"empty host is every address", func(c *Config) { c.HTTPAddr, c.TLS = ":7420", TLSOff }, []string{"--http :7420"}},
		{"plaintext off loopback when asked", func(c *Config) { c.HTTPAddr, c.InsecurePlaintext = "0.0.0.0:7420", true }, nil},
		{"tls on loopback", func(c *Config) { c.TLS = TLSOn }, nil},
		{"on and insecure contradict", func(c *Config) { c.TLS, c.InsecurePlaintext = TLSOn, true }, []string{"--tls=on and --insecure-plaintext"}},
		{"unknown mode", func(c *Config) { c.TLS = "yes" }, []string{`--tls "yes"`, "auto"}},
		{"negative max conns", func(c *Config) { c.MaxConns = -1 }, []string{"--max-conns -1"}},
		{"zero per-ip cap", func(c *Config) { c.MaxConnsPerIP = 0 }, []string{"--max-conns-per-ip 0"}},
		{"zero admin cap", func(c *Config) { c.AdminMaxConns = 0 }, []string{"--admin-max-conns 0"}},
		{"zero idle timeout", func(c *Config) { c.IdleTimeout = 0 }, []string{"--idle-timeout"}},
		{"zero abandon timeout", func(c *Config) { c.SessionAbandonTimeout = 0 }, []string{"--session-abandon-timeout"}},
		{"zero stdio cap", func(c *Config) { c.MaxStdioPerRoute = 0 }, []string{"--max-stdio-per-route 0"}},
		{"unknown audit sync", func(c *Config) { c.AuditSync = "sometimes" }, []string{`--audit-sync "sometimes"`, "batch", "always"}},
		{"audit sync always", func(c *Config) { c.AuditSync = "always" }, nil},
		{"zero audit flush interval", func(c *Config) { c.AuditFlushInterval = 0 }, []string{"--audit-flush-interval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.VaultKeys = testVaultKeys(t)
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate()=%v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate()=nil, want an error naming %q", tt.want)
			}
			checkMessage(t, err.Error(), tt.want...)
		})
	}
}

func TestResolveConnCaps(t *testing.T) {
	tests := []struct {
		name            string
		maxConns, admin int
		nofile          int
		wantSessions    int
		wantErr         string
	}{
		{"sized from the limit", 0, 256, 20000, (20000 - 1024 - 256) / 2, ""},
		{"at most twice the sessions", 0, 256, 1 << 20, 20000, ""},
		{"small limit keeps a quarter", 0, 256, 1024, (1024 - 256 - 256) / 2, ""},
		{"limit unknown", 0, 256, 0, 20000, ""},
		{"explicit within the limit", 5000, 256, 20000, 5000, ""},
		{"explicit beyond the limit", 19000, 256, 20000, 0, "--max-conns 19000 and --admin-max-conns 256 leave fewer than 1024"},
		{"limit too small", 0, 256, 300, 0, "open-file limit 300"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxConns, cfg.AdminMaxConns = tt.maxConns, tt.admin
			caps, err := cfg.resolveConnCaps(tt.nofile)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolveConnCaps(%d)=%v, want an error containing %q", tt.nofile, err, tt.wantErr)
				}
				return
			}
			if err != nil || caps.sessions != tt.wantSessions {
				t.Fatalf("resolveConnCaps(%d)=%d, %v; want %d, nil", tt.nofile, caps.sessions, err, tt.wantSessions)
			}
		})
	}
}

// TestTLSListeners serves the session and admin listeners over TLS on
// loopback (--tls=on): a session and an admin call trusting the cluster CA
// succeed, one that does not is refused with what to do, and a plain HTTP
// request is told it reached an HTTPS server.
func TestTLSListeners(t *testing.T) {
	n, route := gatewayTo(t, func(c *Config) { c.TLS = TLSOn })
	if !strings.HasPrefix(n.HTTPURL(), "https://") || !strings.HasPrefix(n.AdminURL(), "https://") {
		t.Fatalf("listeners %s and %s, want https", n.HTTPURL(), n.AdminURL())
	}
	ctx := testContext(t, 30*time.Second)
	wss := client.WithGateway("wss://" + n.HTTPAddr())

	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", wss, client.WithToken(testToken(n)), client.WithRootCAs(nodeRoots(t, n)))
	if err != nil {
		t.Fatalf("session over wss with the cluster CA: %v", err)
	}
	if _, err := sess.CallTool(ctx, callParams("echo", "over tls")); err != nil {
		t.Fatalf("call over wss: %v", err)
	}
	sess.Close()

	t.Setenv(client.EnvCAFile, "")
	_, err = client.Connect(ctx, route.URL, "org1", "acct1", wss, client.WithToken(testToken(n)))
	if err == nil {
		t.Fatal("a session over wss opened without trusting the cluster CA")
	}
	checkMessage(t, err.Error(), "certificate", client.EnvCAFile, "ca.crt")

	resp := adminDo(t, n, http.MethodGet, "/v1/routes", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin API over https: HTTP %d", resp.StatusCode)
	}

	plain, err := http.Get("http://" + n.AdminAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(plain.Body)
	plain.Body.Close()
	if plain.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS server") {
		t.Fatalf("plain HTTP to the TLS admin listener: HTTP %d %q, want 400 saying it is an HTTPS server", plain.StatusCode, body)
	}

	// The certificate is the node's own from the cluster CA, naming the
	// listener's host.
	conn, err := tls.Dial("tcp", n.HTTPAddr(), &tls.Config{RootCAs: nodeRoots(t, n), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to the session listener: %v", err)
	}
	if got, want := conn.ConnectionState().PeerCertificates[0].Subject.CommonName, n.NodeID(); got != want {
		t.Fatalf("session listener presents a certificate for %q, want the node's %q", got, want)
	}
	conn.Close()
}

// TestReadTimeoutSparesStreams checks that --read-timeout bounds a request
// body that never arrives, but not a response that streams: a tools/call
// whose event stream stays open well past the timeout is not cut.
func TestReadTimeoutSparesStreams(t *testing.T) {
	const timeout = 300 * time.Millisecond
	n, _ := gatewayTo(t, func(c *Config) { c.ReadTimeout, c.IdleTimeout = timeout, timeout })

	// A body promised and never sent: the connection is closed.
	c, err := net.Dial("tcp", n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/mcp/up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("a request whose body never came was not ended: %v", err)
	}

	// A slow call's event stream outlives the timeouts.
	endpoint := streamableEndpoint(n, "up")
	const version = "2025-06-18"
	resp := postJSON(t, endpoint, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	io.Copy(io.Discard, resp.Body)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: HTTP %d, session %q", resp.StatusCode, sid)
	}
	hdr := []string{"Mcp-Session-Id", sid, "Mcp-Protocol-Version", version}
	if resp := postJSON(t, endpoint, "", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, hdr...); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("initialized: HTTP %d", resp.StatusCode)
	}
	resp = postJSON(t, endpoint, "", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","arguments":{},"_meta":{"progressToken":"p"}}}`, hdr...)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("slow call: HTTP %d %s, want an event stream", resp.StatusCode, ct)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream ended before the progress notification: %v", err)
		}
		if strings.Contains(line, "notifications/progress") {
			break
		}
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, br)
		ended <- err
	}()
	select {
	case err := <-ended:
		t.Fatalf("the slow call's event stream ended under the read timeout: %v", err)
	case <-time.After(5 * timeout):
	}
	resp.Body.Close()
	<-ended
}
