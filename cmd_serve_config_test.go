package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServeConfigPrecedence: a flag beats its environment variable, which
// beats the config file, which beats the default; --print-config shows the
// result and where each value came from.
func TestServeConfigPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mcpgw.toml")
	writeConfig(t, path, `
max-conns = 500
max-conns-per-ip = 9
log-level = "warn"
idle-timeout = "90s"
join = ["10.0.0.1:7423", "10.0.0.2:7423"]
insecure-dev = true
audit-syslog = "tls://siem.example:6514"
audit-syslog-ca = "/etc/mcpgw/siem-ca.pem"
audit-hash-payloads = true
audit-otlp-endpoint = "http://collector:4318"
`)
	t.Setenv("MCPGW_MAX_CONNS_PER_IP", "7")
	out, errOut, code := runMain(t, "serve", "--config", path, "--print-config", "--log-level", "debug")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, _, ok := strings.Cut(l, " = "); ok {
			lines[k] = strings.Join(strings.Fields(l), " ")
		}
	}
	for key, want := range map[string]string{
		"max-conns":             `max-conns = 500 # config file`,
		"max-conns-per-ip":      `max-conns-per-ip = 7 # flag or environment`,
		"log-level":             `log-level = "debug" # flag or environment`,
		"idle-timeout":          `idle-timeout = "1m30s" # config file`,
		"join":                  `join = ["10.0.0.1:7423", "10.0.0.2:7423"] # config file`,
		"insecure-dev":          `insecure-dev = true # config file`,
		"read-timeout":          `read-timeout = "30s" # default`,
		"http":                  `http = "127.0.0.1:7420" # default`,
		"audit-syslog":          `audit-syslog = "tls://siem.example:6514" # config file`,
		"audit-syslog-ca":       `audit-syslog-ca = "/etc/mcpgw/siem-ca.pem" # config file`,
		"audit-syslog-facility": `audit-syslog-facility = "local0" # default`,
		"audit-hash-payloads":   `audit-hash-payloads = true # config file`,
	} {
		if lines[key] != want {
			t.Errorf("%s: got %q, want %q", key, lines[key], want)
		}
	}
	if _, ok := lines["config"]; ok {
		t.Errorf("--print-config lists config itself:\n%s", out)
	}

	// The printed configuration is a config file serve accepts as is.
	printed := filepath.Join(t.TempDir(), "printed.toml")
	writeConfig(t, printed, out)
	again, errOut, code := runMain(t, "serve", "--config", printed, "--print-config")
	// Every key now comes from the file but the one the environment sets.
	if code != 0 || strings.Count(again, "# config file") != len(lines)-1 || !strings.Contains(again, "# flag or environment") {
		t.Fatalf("printed config read back: exit %d, %s\n%s", code, errOut, again)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"unknown key", "max-con = 1\n", `unknown key "max-con": did you mean "max-conns"?`},
		{"wrong type", "max-conns = \"many\"\n", `key "max-conns": many is not an integer`},
		{"duration as number", "idle-timeout = 60\n", `key "idle-timeout": 60 is not a duration: write it as a string such as "30s"`},
		{"list for a single value", "http = [\"a\", \"b\"]\n", `key "http": a list, but the flag takes one value`},
		{"not TOML", "max-conns 1\n", "--config "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.toml")
			writeConfig(t, bad, tc.body)
			_, errOut, code := runMain(t, "serve", "--config", bad, "--print-config")
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, %q; want %q", code, errOut, tc.want)
			}
		})
	}
}

// TestServeSIGHUPReload: a real SIGHUP re-reads the config file; the log
// level and the connection cap change at once, a setting that needs a
// restart is named, a flag still beats the file, and a broken file changes
// nothing.
func TestServeSIGHUPReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mcpgw.toml")
	writeConfig(t, path, "log-level = \"info\"\nmax-conns = 100\n")
	stderr, stop := startServe(t, "--config", path, "--log-format", "json", "--admin-max-conns", "50")
	var http string
	for _, line := range strings.Split(stderr.String(), "\n") {
		var rec struct{ Msg, HTTP string }
		if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(rec.Msg, "mcpgw is up") {
			http = rec.HTTP
		}
	}

	hup := func(want string) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(stderr.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log after SIGHUP:\n%s", want, stderr.String())
			}
			time.Sleep(10 * time.Millisecond) // poll interval
		}
	}
	writeConfig(t, path, "log-level = \"debug\"\nmax-conns = 1\nidle-timeout = \"5m\"\nadmin-max-conns = 5\n")
	hup(`"msg":"SIGHUP: reloaded log-level info→debug, max-conns 100→1; a restart is needed for idle-timeout","config":"` + path + `","reloaded":["log-level info→debug","max-conns 100→1"],"restart_needed":["idle-timeout"]}`)

	// The new cap holds: one connection open, the next is refused.
	first, err := net.Dial("tcp", http)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := httpStatus(first); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	second, err := net.Dial("tcp", http)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
	if code, err := httpStatus(second); err == nil && code != 503 {
		t.Fatalf("second connection over max-conns 1 answered %d, want 503 or a close", code)
	}

	writeConfig(t, path, "max-conns = [1]\n")
	hup(`"msg":"SIGHUP: nothing reloaded: --config ` + path + `: key \"max-conns\": a list, but the flag takes one value; fix the file and send SIGHUP again"`)

	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// httpStatus reads one HTTP response's status code from conn.
func httpStatus(conn net.Conn) (int, error) {
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
