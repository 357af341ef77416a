package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the full command set with separate output and error writers.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp(&out, &errOut)
	full, path := reorderArgs(app, append([]string{"mcpgw"}, args...))
	if err = app.Run(full); err != nil {
		err = classify(err, path)
	}
	return out.String(), errOut.String(), err
}

// runMain runs the command line as main does and returns its exit code.
func runMain(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(newApp(&out, &errOut), append([]string{"mcpgw"}, args...))
	return out.String(), errOut.String(), code
}

// TestAdminCommandsWriteThroughApp: the admin commands print their
// results through the app's Writer (what a script reads) and their notes
// through its ErrWriter, against a real node.
func TestAdminCommandsWriteThroughApp(t *testing.T) {
	n := startTestNode(t)
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "state.db")
	tests := []struct {
		name    string
		args    []string // the command's words, then its flags and arguments
		words   int      // how many of args name the command; default 2
		stdout  []string // each must appear
		stderr  []string
		errText string // the command fails with this, if set
	}{
		{name: "route add", args: []string{"route", "add", "echo", "http://127.0.0.1:9/mcp"},
			stdout: []string{"route echo → http://127.0.0.1:9/mcp (streamable, internal, credential optional)\n"}},
		{name: "route list", args: []string{"route", "list"},
			stdout: []string{"NAME", "echo", "http://127.0.0.1:9/mcp", "streamable"}},
		{name: "route list --stale", args: []string{"route", "list", "--stale"},
			stdout: []string{"NAME", "echo"}, stderr: []string{"mcpgw: --stale: http://", " answered from its local copy, which may miss recent writes\n"}},
		{name: "vault put", args: []string{"vault", "put", "--org", "acme", "--account", "alice", "--route", "echo", "--file", secret},
			stdout: []string{"credential bearer for org acme, account alice, route echo sealed with key "}},
		{name: "vault list", args: []string{"vault", "list"},
			stdout: []string{"ORG", "acme", "alice", "echo", "bearer"}},
		{name: "token issue", args: []string{"token", "issue", "--service", "billing", "--org", "acme", "--ttl", "1h"},
			stdout: []string{"eyJ"}, stderr: []string{"for service billing, orgs acme, expires "}},
		{name: "token list", args: []string{"token", "list"},
			stdout: []string{"SERVICE", "billing", "acme", "false"}},
		{name: "token rotate-key", args: []string{"token", "rotate-key"},
			stdout: []string{"signing key is now "}},
		{name: "rule add", args: []string{"rule", "add", "--id", "r1", "--effect", "deny", "--tool", "drop_*"},
			stdout: []string{"rule r1: deny service=* org=* account=* route=* tool=drop_*\n"}},
		{name: "limit list", args: []string{"limit", "list"},
			stdout: []string{"ID", "RATE", "POOL"}},
		{name: "cluster status", args: []string{"cluster", "status"},
			stdout: []string{"node " + n.NodeID(), "is Leader", "Voter", "up"}},
		{name: "backup", args: []string{"backup", "--out", backup}, words: 1,
			stdout: []string{"backup of ", "bytes written to " + backup}},
		{name: "route rm", args: []string{"route", "rm", "echo"},
			stdout: []string{"route echo removed\n"}},
		{name: "route rm unknown", args: []string{"route", "rm", "echo"},
			errText: "no route named \"echo\"; list them with `mcpgw route list`"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The admin flags go before the positional arguments.
			words := tc.words
			if words == 0 {
				words = 2
			}
			args := append(append(append([]string{}, tc.args[:words]...), admin...), tc.args[words:]...)
			stdout, stderr, err := runCLI(t, args...)
			if tc.errText != "" {
				if err == nil || err.Error() != tc.errText {
					t.Fatalf("error %v, want %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout, want) {
					t.Fatalf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Fatalf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stdout+stderr, "s3cret-token") {
				t.Fatal("a command printed the credential")
			}
		})
	}
}
