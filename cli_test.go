package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/internal/logtest"
	"github.com/mcpgw/mcpgw/internal/tcptest"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/node"
)

func TestReorderArgs(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	tests := []struct {
		name     string
		in, want string
		path     string
	}{
		{name: "flag after url", in: "route add linear https://mcp.linear.app/mcp --kind external",
			want: "route add --kind external linear https://mcp.linear.app/mcp", path: "route add"},
		{name: "flag value not taken for an argument", in: "route add legacy http://10.0.0.5:8080/sse --transport sse --admin 127.0.0.1:7422",
			want: "route add --transport sse --admin 127.0.0.1:7422 legacy http://10.0.0.5:8080/sse", path: "route add"},
		{name: "stdio command after --", in: "route add files --transport stdio -- /usr/local/bin/files-mcp --root /srv",
			want: "route add --transport stdio -- files /usr/local/bin/files-mcp --root /srv", path: "route add"},
		{name: "flag=value and bool flags", in: "route list --json --admin=a:1",
			want: "route list --json --admin=a:1", path: "route list"},
		{name: "parent flags stay with the parent", in: "audit --admin a:1 verify --admin b:1",
			want: "audit --admin a:1 verify --admin b:1", path: "audit verify"},
		{name: "call flags after the target", in: "call http://h/mcp tools/call {} --org acme --timeout 5s",
			want: "call --org acme --timeout 5s http://h/mcp tools/call {}", path: "call"},
		{name: "an argument that looks like a flag", in: "route add x --transport stdio -- -weird",
			want: "route add --transport stdio -- x -weird", path: "route add"},
		{name: "unknown flag left for the parser", in: "route list extra --bogus",
			want: "route list --bogus extra", path: "route list"},
		{name: "unknown command", in: "rout add", want: "rout add"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, path := reorderArgs(app, append([]string{"mcpgw"}, strings.Fields(tc.in)...))
			if diff := cmp.Diff(strings.Fields("mcpgw "+tc.want), got); diff != "" {
				t.Fatalf("reorderArgs(%q) (-want +got):\n%s", tc.in, diff)
			}
			if got, want := strings.Join(path, " "), tc.path; got != want {
				t.Fatalf("path=%q, want %q", got, want)
			}
		})
	}
}

func TestNearest(t *testing.T) {
	names := []string{"route", "rule", "vault", "status", "serve", "restore"}
	tests := []struct{ in, want string }{
		{"rout", "route"}, {"ruel", "rule"}, {"vualt", "vault"}, {"statsu", "status"}, {"xyz", ""}, {"bench", ""},
	}
	for _, tc := range tests {
		if got := nearest(tc.in, names); got != tc.want {
			t.Errorf("nearest(%q)=%q, want %q", tc.in, got, tc.want)
		}
	}
	if got, want := levenshtein("kitten", "sitting"), 3; got != want {
		t.Fatalf("levenshtein=%d, want %d", got, want)
	}
}

// TestREADMERouteExamples runs the README's route examples as written,
// flags after the arguments, against a real node.
func TestREADMERouteExamples(t *testing.T) {
	n := startTestNode(t)
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	for _, line := range []string{
		"route add linear https://mcp.linear.app/mcp --kind external",
		"route add legacy http://10.0.0.5:8080/sse --transport sse",
	} {
		if _, stderr, code := runMain(t, append(strings.Fields(line), admin...)...); code != 0 {
			t.Fatalf("%s: exit %d\n%s", line, code, stderr)
		}
	}
	stdio := append(append(strings.Fields("route add files --transport stdio"), admin...), strings.Fields("-- /usr/local/bin/files-mcp --root /srv")...)
	if stdout, stderr, code := runMain(t, stdio...); code != 0 || !strings.Contains(stdout, "route files → /usr/local/bin/files-mcp --root /srv (stdio") {
		t.Fatalf("stdio route add: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code := runMain(t, append([]string{"route", "list", "--json"}, admin...)...)
	if code != 0 {
		t.Fatalf("route list --json: exit %d\n%s", code, stderr)
	}
	var routes []adminapi.Route
	if err := json.Unmarshal([]byte(stdout), &routes); err != nil {
		t.Fatalf("route list --json printed %q: %v", stdout, err)
	}
	got := map[string]adminapi.Route{}
	for _, r := range routes {
		got[r.Name] = r
	}
	if r := got["linear"]; r.Kind != "external" || r.URL != "https://mcp.linear.app/mcp" || r.Credential != "required" {
		t.Errorf("linear = %+v, want external https://mcp.linear.app/mcp", r)
	}
	if r := got["legacy"]; r.Transport != "sse" || r.URL != "http://10.0.0.5:8080/sse" {
		t.Errorf("legacy = %+v, want sse", r)
	}
	if diff := cmp.Diff([]string{"/usr/local/bin/files-mcp", "--root", "/srv"}, got["files"].Command); diff != "" {
		t.Errorf("files command (-want +got):\n%s", diff)
	}
}

// TestExitCodes: 0 ok, 1 error, 2 usage, and each usage error says what
// was wrong.
func TestExitCodes(t *testing.T) {
	down := tcptest.FreeAddr(t)
	tests := []struct {
		name   string
		args   string
		code   int
		stderr string
	}{
		{"version", "version", 0, ""},
		{"route add without arguments", "route add", 2, "mcpgw route add: no route name: usage: mcpgw route add <name> <url>"},
		{"route add with two urls", "route add a http://x/1 http://x/2", 2, `route "a" takes one URL, got 2 arguments`},
		{"stdio route without command", "route add a --transport stdio", 2, `stdio route "a" has no command`},
		{"missing required flag", "rule add --effect deny", 2, "mcpgw rule add: required flag \"id\" not set: see `mcpgw rule add --help`"},
		{"extra argument", "route list extra", 2, "mcpgw route list takes no arguments, got \"extra\""},
		{"unknown flag", "route list --bogus", 2, "mcpgw route list: flag provided but not defined: -bogus"},
		{"typo'd command", "rout list", 2, "no command \"rout\"; did you mean `mcpgw route`?"},
		{"typo'd subcommand", "route ad x", 2, "mcpgw route: no command \"ad\"; did you mean `mcpgw route add`?"},
		{"call with extra arguments", "call http://h/mcp tools/list {} extra", 2, "want <target-url> <method> [json-params], got 4 argument(s)"},
		{"call target without scheme", "call 127.0.0.1:9000/mcp tools/list", 2, `target "127.0.0.1:9000/mcp" has no scheme: add http:// (http://127.0.0.1:9000/mcp)`},
		{"completion for an unknown shell", "completion tcsh", 2, `unknown shell "tcsh"`},
		{"admin API down", "route list --wait 0 --admin-token x --admin " + down, 1, "admin API unreachable at http://" + down + ": connect: connection refused (is `mcpgw serve` running? set --admin or MCPGW_ADMIN)"},
		{"audit verify of a node down", "audit verify --admin-token x --admin " + down, 1, "1 of 1 nodes failed"},
		{"wait for a node that is down", "wait --timeout 300ms --admin " + down, 1, "the node at http://" + down + " is not up after 300ms"},
		{"gateway down", "call --gateway ws://" + down + " http://h/mcp tools/list", 1, "gateway ws://" + down + " unreachable: connect: connection refused (is `mcpgw serve` running? set --gateway or MCPGW_ADDR)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runMain(t, strings.Fields(tc.args)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
		})
	}
}

// TestJSONOnEveryList: every list and status command prints JSON with
// --json: an array for lists (empty ones too), an object for status.
func TestJSONOnEveryList(t *testing.T) {
	n := startTestNode(t)
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	if _, stderr, code := runMain(t, append([]string{"route", "add", "echo", "http://127.0.0.1:9/mcp"}, admin...)...); code != 0 {
		t.Fatal(stderr)
	}
	tests := []struct {
		args  string
		array bool
		field string // a field every element (or the object) has
	}{
		{"route list", true, "transport"},
		{"rule list", true, ""},
		{"limit list", true, ""},
		{"token list", true, ""},
		{"vault list", true, ""},
		{"cluster status", false, "applied_index"},
		{"status", false, "members_up"},
		{"audit", true, ""},
		{"version", false, "go_version"},
	}
	for _, tc := range tests {
		t.Run(tc.args, func(t *testing.T) {
			stdout, stderr, code := runMain(t, append(append(strings.Fields(tc.args), "--json"), admin...)...)
			if tc.args == "version" {
				stdout, stderr, code = runMain(t, "version", "--json")
			}
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr)
			}
			var v any
			if err := json.Unmarshal([]byte(stdout), &v); err != nil {
				t.Fatalf("printed %q: %v", stdout, err)
			}
			var objs []any
			if tc.array {
				arr, ok := v.([]any)
				if !ok {
					t.Fatalf("printed %s, want a JSON array", stdout)
				}
				objs = arr
			} else {
				objs = []any{v}
			}
			for _, o := range objs {
				m, ok := o.(map[string]any)
				if !ok {
					t.Fatalf("element %v is not an object", o)
				}
				if _, ok := m[tc.field]; tc.field != "" && !ok {
					t.Fatalf("%v lacks field %q", m, tc.field)
				}
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	tests := []struct {
		args string
		want []string
	}{
		{"completion bash", []string{"complete -o bashdefault -o default -F _mcpgw_complete mcpgw", "--generate-bash-completion"}},
		{"completion zsh", []string{"#compdef mcpgw", "compdef _mcpgw mcpgw"}},
		{"completion fish", []string{"complete -r -c mcpgw -n '__fish_mcpgw_no_subcommand' -a 'route'", "__fish_seen_subcommand_from add' -f -l transport -r"}},
		// What the scripts ask the binary for.
		{"route --generate-bash-completion", []string{"add\nlist\nrm\n"}},
		{"--generate-bash-completion", []string{"route\n", "wait\n", "completion\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.args, func(t *testing.T) {
			// urfave/cli's default completer reads os.Args, not the
			// arguments it runs on.
			saved := os.Args
			os.Args = append([]string{"mcpgw"}, strings.Fields(tc.args)...)
			defer func() { os.Args = saved }()
			stdout, stderr, code := runMain(t, strings.Fields(tc.args)...)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Fatalf("output lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// TestAdminFailover: with several --admin addresses, a command uses the
// next when one is down.
func TestAdminFailover(t *testing.T) {
	n := startTestNode(t)
	stdout, stderr, code := runMain(t, "route", "list", "--admin", tcptest.FreeAddr(t)+","+n.AdminAddr(), "--admin-token", n.AdminToken(), "--wait", "0")
	if code != 0 || !strings.Contains(stdout, "NAME") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestAdminCommandWaitsForStartingNode: a command run while the node is
// still starting waits for it, saying so once, and `mcpgw wait --ready`
// returns once it is up.
func TestAdminCommandWaitsForStartingNode(t *testing.T) {
	addr := tcptest.FreeAddr(t)
	dataDir := filepath.Join(t.TempDir(), "data") // a first run: serve creates it
	var stdout, stderr, waitOut, waitErr logtest.Buffer
	var code, waitCode int
	// Both must be waiting before the node starts. They start one after
	// the other: urfave/cli parses flags into globals (the help flag).
	waiting := func(b *logtest.Buffer) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(b.String(), "waiting") {
			if time.Now().After(deadline) {
				t.Fatalf("the command does not wait: %q", b.String())
			}
			time.Sleep(10 * time.Millisecond) // poll interval
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		code = run(newApp(&stdout, &stderr), []string{"mcpgw", "route", "list", "--admin", addr, "--data-dir", dataDir, "--wait", "30s"})
	})
	waiting(&stderr)
	wg.Go(func() {
		waitCode = run(newApp(&waitOut, &waitErr), []string{"mcpgw", "wait", "--ready", "--admin", addr, "--timeout", "30s"})
	})
	waiting(&waitErr)
	startTestNode(t, func(c *node.Config) { c.AdminAddr, c.DataDir = addr, dataDir })
	wg.Wait()
	if code != 0 || !strings.Contains(stdout.String(), "NAME") {
		t.Fatalf("route list: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if got, want := stderr.String(), "mcpgw: waiting for the node at "+addr+" to start (up to 30s, --wait)\n"; got != want {
		t.Fatalf("route list stderr=%q, want %q", got, want)
	}
	if waitCode != 0 || waitOut.String() != "http://"+addr+" is up\n" {
		t.Fatalf("wait --ready: exit %d\n%s%s", waitCode, waitOut.String(), waitErr.String())
	}

	// A node that is up, asked with a data dir that has no token: no
	// waiting, the error at once.
	_, errOut, code := runMain(t, "route", "list", "--admin", addr, "--data-dir", filepath.Join(t.TempDir(), "elsewhere"), "--wait", "30s")
	if code != 1 || strings.Contains(errOut, "waiting") || !strings.Contains(errOut, "no admin token: pass --admin-token") {
		t.Fatalf("route list with the wrong data dir: exit %d\n%s", code, errOut)
	}
}

// TestCallByRouteNameAndToolError: `mcpgw call <stdio-route>` reaches the
// route by name, flags after the target work, and a tool result with
// isError exits 1 after printing it.
func TestCallByRouteNameAndToolError(t *testing.T) {
	n := startTestNode(t, func(c *node.Config) { c.InsecureDev = true })
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	add := append(append([]string{"route", "add", "files", "--transport", "stdio"}, admin...), "--", exe, upstreamtest.StdioArg)
	if _, stderr, code := runMain(t, add...); code != 0 {
		t.Fatalf("route add: exit %d\n%s", code, stderr)
	}
	gw := "ws://" + n.HTTPAddr()
	stdout, stderr, code := runMain(t, "call", "files", "tools/call", `{"name":"echo","arguments":{"text":"hi"}}`, "--gateway", gw, "--org", "acme")
	if code != 0 || !strings.Contains(stdout, `"text": "hi"`) {
		t.Fatalf("call files echo: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = runMain(t, "call", "files", "tools/call", `{"name":"fail","arguments":{"text":"boom"}}`, "--gateway", gw)
	if code != 1 || !strings.Contains(stdout, "failed: boom") || !strings.Contains(stderr, "tools/call: the tool reported an error (isError: true") {
		t.Fatalf("call of a failing tool: exit %d, want 1\n%s%s", code, stdout, stderr)
	}
}

// TestOperatorMistakesWarn: a lone deny rule, a second route with the same
// URL and a URL nothing answers are accepted with a warning that says what
// to do; --check refuses the unreachable one.
func TestOperatorMistakesWarn(t *testing.T) {
	n := startTestNode(t)
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	up := upstreamtest.StartHTTP(t, upstreamtest.New().StreamableHandler()) + "/mcp"
	down := "http://" + tcptest.FreeAddr(t) + "/mcp"
	steps := []struct {
		name   string
		args   []string
		code   int
		stderr string // "" means no warning at all
	}{
		{"live upstream, checked", []string{"route", "add", "github", up, "--check"}, 0, ""},
		{"same URL again", []string{"route", "add", "github2", up}, 0, "mcpgw: warning: route github has the same URL " + up},
		{"nothing answers", []string{"route", "add", "dead", down}, 0, "mcpgw: warning: nothing answers at " + down + " from this host"},
		{"--check refuses a dead upstream", []string{"route", "add", "dead2", down, "--check"}, 1, "did not answer an MCP initialize from this host"},
		{"lone deny", []string{"rule", "add", "--id", "no-deletes", "--route", "github", "--tool", "delete_*", "--effect", "deny"}, 0,
			"mcpgw: warning: route github now has rules and none allows, so every call on it is denied; allow what should pass, e.g. `mcpgw rule add --id github-allow --route github --tool '*' --effect allow`"},
		{"allow added", []string{"rule", "add", "--id", "gh", "--route", "github", "--tool", "*", "--effect", "allow"}, 0, ""},
	}
	for _, s := range steps {
		_, stderr, code := runMain(t, append(s.args, admin...)...)
		if code != s.code {
			t.Fatalf("%s: exit %d, want %d\n%s", s.name, code, s.code, stderr)
		}
		if s.stderr == "" && stderr != "" {
			t.Fatalf("%s: unexpected warning:\n%s", s.name, stderr)
		}
		if !strings.Contains(stderr, s.stderr) {
			t.Fatalf("%s: stderr lacks %q:\n%s", s.name, s.stderr, stderr)
		}
	}
	if _, _, code := runMain(t, append([]string{"route", "rm", "dead2"}, admin...)...); code != 1 {
		t.Fatalf("route dead2 exists after a failed --check")
	}
}

// TestAdminHTTPErrorShowsBody: --admin pointed at the session port shows
// what answered and what to do, not only the status.
func TestAdminHTTPErrorShowsBody(t *testing.T) {
	n := startTestNode(t)
	_, stderr, code := runMain(t, "route", "list", "--admin", n.HTTPAddr(), "--admin-token", "x")
	if code != 1 || !strings.Contains(stderr, "answered HTTP 404: ") || !strings.Contains(stderr, "is --admin the node's admin listener, default port 7422, not its session port?") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
}

// TestInitIsAtomic: init --passphrase with no terminal and no
// MCPGW_VAULT_PASSPHRASE writes nothing, so the retry with the passphrase
// succeeds.
func TestInitIsAtomic(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	saved := os.Stdin
	os.Stdin = devNull // not a terminal, whatever runs the test
	defer func() { os.Stdin = saved }()
	t.Setenv(envVaultPassphrase, "")
	os.Unsetenv(envVaultPassphrase)

	dir := t.TempDir()
	dataDir, key := dir+"/data", dir+"/vault.key"
	args := []string{"init", "--data-dir", dataDir, "--vault-key", key, "--passphrase"}
	_, stderr, code := runMain(t, args...)
	if code != 1 || !strings.Contains(stderr, "set MCPGW_VAULT_PASSPHRASE or run on a terminal to be prompted; nothing was written") {
		t.Fatalf("init without a passphrase: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(node.DefaultClusterTLSDir(dataDir)); !os.IsNotExist(err) {
		t.Fatalf("init without a passphrase left the TLS dir: %v", err)
	}
	t.Setenv(envVaultPassphrase, "correct horse")
	stdout, stderr, code := runMain(t, args...)
	if code != 0 || !strings.Contains(stdout, "cluster CA and node certificate") {
		t.Fatalf("init retried with a passphrase: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("no vault key after init: %v", err)
	}
}

func TestServeAdminAddr(t *testing.T) {
	tests := []struct {
		name, env, envOld, flag string
		want, err, warn         string
	}{
		{name: "default", want: "127.0.0.1:7422"},
		{name: "URL form of MCPGW_ADMIN", env: "http://127.0.0.1:7500", want: "127.0.0.1:7500"},
		{name: "deprecated name", envOld: "127.0.0.1:7501", want: "127.0.0.1:7501", warn: "MCPGW_ADMIN_ADDR is deprecated: set MCPGW_ADMIN instead"},
		{name: "a list", env: "a:1,b:2", err: "lists several addresses"},
		{name: "flag wins", env: "a:1", flag: "127.0.0.1:7502", want: "127.0.0.1:7502"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range map[string]string{envAdmin: tc.env, envAdminDeprecated: tc.envOld} {
				t.Setenv(k, v)
				if v == "" {
					os.Unsetenv(k)
				}
			}
			var logs bytes.Buffer
			app := &cli.App{Flags: serveCommand().Flags, Writer: io.Discard, ErrWriter: io.Discard, Action: func(c *cli.Context) error {
				got, err := serveAdminAddr(c, slog.New(slog.NewTextHandler(&logs, nil)))
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("error %v, want %q", err, tc.err)
					}
					return nil
				}
				if err != nil || got != tc.want {
					t.Fatalf("serveAdminAddr=%q, %v, want %q", got, err, tc.want)
				}
				return nil
			}}
			args := []string{"serve"}
			if tc.flag != "" {
				args = append(args, "--admin", tc.flag)
			}
			if err := app.Run(args); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), tc.warn) || (tc.warn == "" && logs.Len() > 0) {
				t.Fatalf("logs %q, want %q", logs.String(), tc.warn)
			}
		})
	}
}

// TestCallQUICWithoutCA: a QUIC gateway whose CA this host does not trust
// gets an error naming MCPGW_CA_FILE and ca.crt, not a bare x509 error.
func TestCallQUICWithoutCA(t *testing.T) {
	t.Setenv("MCPGW_CA_FILE", "")
	n := startTestNode(t, func(c *node.Config) { c.QUICAddr, c.InsecureDev = "127.0.0.1:0", true })
	_, stderr, code := runMain(t, "call", "http://127.0.0.1:9/mcp", "tools/list", "--gateway", "quic://"+n.QUICAddr(), "--data-dir", t.TempDir(), "--timeout", "20s")
	if code != 1 || strings.Count(stderr, "MCPGW_CA_FILE") != 1 || !strings.Contains(stderr, "ca.crt") {
		t.Fatalf("exit %d, want 1 and a hint naming MCPGW_CA_FILE and ca.crt:\n%s", code, stderr)
	}
}

func TestVersion(t *testing.T) {
	savedV, savedC, savedD := version, commit, buildDate
	version, commit, buildDate = "1.2.3", "abc123", "2026-12-01T00:00:00Z"
	defer func() { version, commit, buildDate = savedV, savedC, savedD }()
	want := "mcpgw 1.2.3, commit abc123, built 2026-12-01T00:00:00Z, " + runtime.Version() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if stdout, stderr, code := runMain(t, args...); code != 0 || stdout != want {
			t.Fatalf("%v: exit %d, %q, want %q\n%s", args, code, stdout, want, stderr)
		}
	}
	stdout, _, _ := runMain(t, "version", "--json")
	var got buildInfo
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(buildInfo{Version: "1.2.3", Commit: "abc123", BuildDate: "2026-12-01T00:00:00Z", GoVersion: runtime.Version()}, got); diff != "" {
		t.Fatalf("version --json (-want +got):\n%s", diff)
	}
}

// TestAuditVerifyExitCodes: a broken chain exits 3, a node that cannot be
// asked exits 1, so a script tells tampering from an outage. The nodes
// are real HTTP servers on loopback answering as a node whose chain is
// intact or broken would.
func TestAuditVerifyExitCodes(t *testing.T) {
	answer := func(res adminapi.AuditVerifyResult) string {
		return upstreamtest.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/audit/verify" {
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(res)
		}))
	}
	intact := answer(adminapi.AuditVerifyResult{Node: "n1", Checked: 5, OK: true})
	broken := answer(adminapi.AuditVerifyResult{Node: "n2", Checked: 3, OK: false, BrokenSeq: 4, Error: "hash mismatch"})
	down := "http://" + tcptest.FreeAddr(t)
	tests := []struct {
		name   string
		admin  string
		code   int
		stdout string
	}{
		{"intact", intact, 0, "n1 (" + intact + "): 5 records, chain intact\n"},
		{"broken", intact + "," + broken, 3, "n2 (" + broken + "): chain BROKEN at record 4 after 3 good ones: hash mismatch\n"},
		{"unreachable", intact + "," + down, 1, "n1 (" + intact + "): 5 records, chain intact\n"},
		{"broken and unreachable", broken + "," + down, 3, "chain BROKEN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runMain(t, "audit", "verify", "--admin", tc.admin, "--admin-token", "x")
			if code != tc.code || !strings.Contains(stdout, tc.stdout) {
				t.Fatalf("exit %d, want %d; stdout lacks %q?\n%s%s", code, tc.code, tc.stdout, stdout, stderr)
			}
		})
	}
}

// TestREADMEConfigTableListsEveryServeFlag keeps the README's configuration
// reference complete: every serve flag (but --print-config, which is no
// setting) has a row, with its environment variable.
func TestREADMEConfigTableListsEveryServeFlag(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "| `--") {
			rows = append(rows, line)
		}
	}
	for _, f := range serveCommand().Flags {
		name := f.Names()[0]
		if name == "print-config" {
			continue
		}
		found := false
		for _, row := range rows {
			cells := strings.SplitN(row, "|", 4)
			if len(cells) < 4 || !strings.Contains(cells[1], "`--"+name+"`") {
				continue
			}
			found = true
			if ev, ok := f.(interface{ GetEnvVars() []string }); ok {
				for _, v := range ev.GetEnvVars() {
					if !strings.Contains(cells[2], "`"+v+"`") {
						t.Errorf("README config row of --%s does not name its variable %s", name, v)
					}
				}
			}
		}
		if !found {
			t.Errorf("README's configuration table has no row for --%s: add one (flag, variable, default, meaning)", name)
		}
	}
}
