package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/logtest"
)

// serveUntilUp runs `mcpgw serve` until it logs its start summary, then
// stops it as SIGTERM would, and returns what it wrote to stderr.
func serveUntilUp(t *testing.T, extra ...string) string {
	t.Helper()
	stderr, stop := startServe(t, extra...)
	if err := stop(); err != nil {
		t.Fatalf("serve: %v\n%s", err, stderr.String())
	}
	return stderr.String()
}

// startServe runs `mcpgw serve` with every listener on a free loopback
// port, in a temporary directory, and returns once it has logged its start
// summary; stop ends it as SIGTERM would.
func startServe(t *testing.T, extra ...string) (stderr *logtest.Buffer, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"mcpgw", "serve",
		"--data-dir", filepath.Join(dir, "data"), "--vault-key", filepath.Join(dir, "vault.key"),
		"--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--raft", "127.0.0.1:0",
		"--raft-heartbeat-timeout", "100ms", "--raft-election-timeout", "100ms", "--shutdown-timeout", "2s",
	}, extra...)
	var stdout logtest.Buffer
	stderr = new(logtest.Buffer)
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	var wg sync.WaitGroup
	wg.Go(func() { err = newApp(&stdout, stderr).RunContext(ctx, args) })
	stop = func() error {
		cancel()
		wg.Wait()
		return err
	}
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "mcpgw is up") {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("serve did not log its start summary (err %v):\n%s", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	return stderr, stop
}

// TestServeLogAtInfo: at info, a start is one summary line naming the
// addresses, the data dir, the admin token file and the next step; raft's
// chatter is not there; durations are strings.
func TestServeLogAtInfo(t *testing.T) {
	logs := serveUntilUp(t, "--log-format", "json")
	var summaries int
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		msg, _ := rec["msg"].(string)
		if rec["component"] != nil || strings.Contains(strings.ToLower(msg), "raft") {
			t.Errorf("raft line at info: %s", line)
		}
		if strings.Contains(line, "%+v") || strings.Contains(line, ":{}") {
			t.Errorf("unrendered value: %s", line)
		}
		switch {
		case strings.HasPrefix(msg, "mcpgw is up"):
			summaries++
			if !strings.Contains(msg, "mcpgw route add") {
				t.Errorf("summary names no next step: %s", line)
			}
			for _, k := range []string{"node_id", "http", "admin", "quic", "raft", "data_dir", "admin_token"} {
				if s, _ := rec[k].(string); s == "" {
					t.Errorf("summary has no %s: %s", k, line)
				}
			}
			if got := rec["admin_token"].(string); filepath.Base(got) != "admin.token" {
				t.Errorf("admin_token=%q", got)
			}
		case strings.HasPrefix(msg, "shutting down"):
			if rec["deadline"] != "2s" {
				t.Errorf("deadline=%#v, want the string \"2s\": %s", rec["deadline"], line)
			}
		}
	}
	if summaries != 1 {
		t.Fatalf("%d start summaries, want 1:\n%s", summaries, logs)
	}
}

// TestServeLogFormat: --log-format text writes key=value lines, durations
// as strings, and raft lines show up at debug rendered as text.
func TestServeLogFormat(t *testing.T) {
	logs := serveUntilUp(t, "--log-format", "text", "--log-level", "debug")
	for _, want := range []string{`msg="mcpgw is up; next:`, " deadline=2s", "component=raft", `msg="entering leader state"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("text log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, `{"time"`) || strings.Contains(logs, "%+v") || strings.Contains(logs, "={}") {
		t.Errorf("text log has JSON or unrendered values:\n%s", logs)
	}

	_, errOut, code := runMain(t, "serve", "--log-format", "yaml")
	if code != 1 || !strings.Contains(errOut, `--log-format "yaml": use text or json`) {
		t.Fatalf("--log-format yaml: exit %d, %q", code, errOut)
	}
}
