package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// crashNodeEnv, set to a JSON crashNodeSpec, makes the test binary run a
// node (see runCrashNodeIfAsked) for a test to SIGKILL: a crash has to end
// a real process, which no in-process test can.
const crashNodeEnv = "MCPGW_TEST_CRASH_NODE"

// crashNodeSpec is what the crash node is started with.
type crashNodeSpec struct {
	DataDir    string
	Upstream   string // URL of the streamable HTTP upstream of route "up"
	AuditSync  string
	AuditFlush time.Duration
}

// runCrashNodeIfAsked runs the crash node when crashNodeEnv is set and
// reports whether it did; call it first in TestMain. The node serves
// sessions without tokens (InsecureDev), prints "ready <session addr>" once
// its route is in place, and exits when its stdin closes (its test is gone)
// unless it is killed first.
func runCrashNodeIfAsked() bool {
	raw := os.Getenv(crashNodeEnv)
	if raw == "" {
		return false
	}
	if err := runCrashNode(raw); err != nil {
		fmt.Fprintln(os.Stderr, "crash node:", err)
		os.Exit(1)
	}
	return true
}

func runCrashNode(raw string) error {
	var spec crashNodeSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return err
	}
	cfg := DefaultConfig()
	cfg.DataDir = spec.DataDir
	cfg.HTTPAddr, cfg.AdminAddr, cfg.RaftAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	cfg.InsecureDev = true
	cfg.AuditSync, cfg.AuditFlushInterval = spec.AuditSync, spec.AuditFlush
	id, err := vault.GenerateIdentity()
	if err != nil {
		return err
	}
	cfg.VaultKeys = vault.NewKeys(id)
	n, err := New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(context.Background()); err != nil {
		return err
	}
	defer n.Close()
	body, _ := json.Marshal(storage.Route{Name: "up", URL: spec.Upstream})
	req, err := http.NewRequest(http.MethodPost, n.AdminURL()+"/v1/routes", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("add route: HTTP %d", resp.StatusCode)
	}
	fmt.Printf("ready %s\n", n.HTTPAddr())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// TestAuditSurvivesKill SIGKILLs a node right after its callers got their
// answers, then reads its audit log: with --audit-sync=always every
// answered tools/call has its record; with batch, the records lost are the
// last ones only, none of them answered longer before the kill than the
// flush interval and the commit in progress (given a generous margin).
func TestAuditSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a node process")
	}
	tests := []struct {
		name string
		sync string
		// paused is how many calls are answered before a pause longer
		// than the batch bound; 0: no pause.
		paused int
	}{
		{name: "always", sync: "always"},
		{name: "batch", sync: "batch", paused: 20},
	}
	const calls = 40
	const flush = 5 * time.Millisecond
	// margin covers the commit in progress at the kill, which takes as
	// long as the disk's sync: milliseconds, but a loaded machine has been
	// seen taking 200ms.
	const margin = 2 * time.Second
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := upstreamtest.New()
			upURL := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
			dataDir := t.TempDir()
			spec, _ := json.Marshal(crashNodeSpec{DataDir: dataDir, Upstream: upURL, AuditSync: tc.sync, AuditFlush: flush})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), crashNodeEnv+"="+string(spec))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			t.Cleanup(func() {
				stdin.Close()
				if !killed {
					cmd.Process.Kill()
					cmd.Wait()
				}
			})
			// A node that dies first ends the read.
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				t.Fatalf("crash node did not start: %v; its stderr: %s", err, stderr.String())
			}
			addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
			if !ok {
				t.Fatalf("crash node printed %q, want %q", line, "ready <addr>")
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sess, err := client.Connect(ctx, upURL, "org1", "acct1", client.WithGateway("ws://"+addr))
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer sess.Close()
			var answered [calls]time.Time
			for i := range calls {
				if i == tc.paused && i > 0 {
					// The bound under test is a span of time: the calls
					// answered before this pause are past it at the kill.
					time.Sleep(flush + margin)
				}
				res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": fmt.Sprint("call-", i)}})
				if err != nil || res.IsError {
					t.Fatalf("call %d: %v", i, err)
				}
				answered[i] = time.Now()
			}
			// Killed the moment the last answer is in: nothing the node
			// does on the way out can save a record.
			killedAt := time.Now()
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
			cmd.Wait()
			// The dead node never ended its upstream sessions.
			for ss := range up.MCP.Sessions() {
				ss.Close()
			}

			l, err := storage.OpenAudit(filepath.Join(dataDir, storage.AuditFile), storage.AuditOptions{})
			if err != nil {
				t.Fatalf("reopen the audit log after the kill: %v", err)
			}
			defer l.Close()
			if _, err := l.Verify(); err != nil {
				t.Fatalf("Verify after the kill: %v", err)
			}
			recs, err := l.Query(storage.AuditQuery{Kind: storage.AuditToolCall, OldestFirst: true})
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range recs {
				if r.Tool != "echo" || r.Outcome != storage.AuditOK {
					t.Fatalf("record %d: tool %q outcome %q, want echo ok", i, r.Tool, r.Outcome)
				}
			}
			kept := len(recs)
			lostSpan := time.Duration(0)
			if kept < calls {
				lostSpan = killedAt.Sub(answered[kept])
			}
			t.Logf("audit-sync=%s: %d of %d answered calls have their record after kill -9; the lost ones were answered in the last %v", tc.sync, kept, calls, lostSpan)
			switch {
			case tc.sync == "always" && kept != calls:
				t.Fatalf("%d of %d answered calls have their record, want all", kept, calls)
			case kept < tc.paused || kept > calls:
				t.Fatalf("%d of %d answered calls have their record, want at least the %d answered more than %v before the kill", kept, calls, tc.paused, flush+margin)
			}
		})
	}
}
