package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpgw/mcpgw/adminapi"
)

// UpstreamCommand is the hidden mcpgw command that serves the echo
// upstream; it prints UpstreamReadyPrefix and its base URL on stdout once
// it listens.
const (
	UpstreamCommand     = "bench-upstream"
	UpstreamReadyPrefix = "mcpgw bench upstream listening on "
)

// startTimeout bounds how long a child process may take to listen.
const startTimeout = 30 * time.Second

// child is a process the bench started: the echo upstream or a gateway.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // how it exited; set before done closes

	mu   sync.Mutex
	tail []string // its last lines of stderr, for errors; guarded by mu
}

// startChild starts exe with args and returns once onLine, fed every line
// of the stream it names (stdout or stderr), reports ready. The other
// stream and the rest of both are drained, the last lines of stderr kept.
func startChild(ctx context.Context, name, exe string, env []string, args []string, readyOnStdout bool, onLine func(line string) (ready bool)) (*child, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s %s): %w", name, exe, strings.Join(args, " "), err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	var once sync.Once
	scan := func(r io.Reader, watch, keep bool) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if keep {
				c.mu.Lock()
				c.tail = append(c.tail, line)
				if len(c.tail) > 20 {
					c.tail = c.tail[1:]
				}
				c.mu.Unlock()
			}
			if watch && onLine(line) {
				once.Do(func() { close(ready) })
			}
		}
	}
	var pipes sync.WaitGroup
	pipes.Go(func() { scan(stdout, readyOnStdout, false) })
	pipes.Go(func() { scan(stderr, !readyOnStdout, true) })
	go func() {
		pipes.Wait() // Wait closes the pipes: read them to the end first
		c.err = cmd.Wait()
		close(c.done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("%s exited before it was ready (%v): %s", name, c.err, c.lastLines())
	case <-timer.C:
		c.stop()
		return nil, fmt.Errorf("%s not ready after %v: %s", name, startTimeout, c.lastLines())
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) lastLines() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tail) == 0 {
		return "(no output)"
	}
	return strings.Join(c.tail, "\n")
}

// stop ends the process: SIGTERM, then SIGKILL if it has not exited after
// 15 s. It waits for the exit.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.done
	}
}

// startUpstream starts the echo upstream as `exe bench-upstream`.
func startUpstream(ctx context.Context, exe string, env []string) (*child, string, error) {
	var base string
	c, err := startChild(ctx, "echo upstream", exe, env, []string{UpstreamCommand, "--addr", "127.0.0.1:0"}, true, func(line string) bool {
		u, ok := strings.CutPrefix(line, UpstreamReadyPrefix)
		if ok {
			base = strings.TrimSpace(u)
		}
		return ok
	})
	return c, base, err
}

// gatewayProc is a gateway the bench started with `exe serve` on loopback
// ports in a temporary directory.
type gatewayProc struct {
	*child
	dir   string
	addrs GatewayAddrs
}

// GatewayAddrs are where a gateway listens and how to reach it.
type GatewayAddrs struct {
	HTTP   string // host:port of WebSocket and streamable HTTP sessions
	QUIC   string // host:port of QUIC sessions
	Unix   string // path of the Unix socket
	Admin  string // admin API base URL
	CAFile string // PEM file of the CA behind the QUIC certificate
	// AdminToken authenticates to the admin API.
	AdminToken string
}

// startGateway starts a single-node gateway with every listener on a
// loopback port of the kernel's choosing, learnt from its start summary
// log line. The data and the vault key live in a temporary directory that stop
// removes.
func startGateway(ctx context.Context, exe string, env []string, extraArgs []string) (*gatewayProc, error) {
	dir, err := os.MkdirTemp("", "mcpgw-bench-")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	args := append([]string{"serve",
		"--data-dir", data,
		"--vault-key", filepath.Join(dir, "vault.key"),
		"--http", "127.0.0.1:0",
		"--admin", "127.0.0.1:0",
		"--quic", "127.0.0.1:0",
		"--raft", "127.0.0.1:0",
		"--unix", filepath.Join(dir, "gw.sock"),
		"--raft-heartbeat-timeout", "100ms",
		"--raft-election-timeout", "100ms",
		"--shutdown-timeout", "2s",
		"--log-level", "info",
	}, extraArgs...)
	var addrs GatewayAddrs
	c, err := startChild(ctx, "gateway", exe, env, args, false, func(line string) bool {
		var l struct {
			Msg   string `json:"msg"`
			HTTP  string `json:"http"`
			Admin string `json:"admin"`
			QUIC  string `json:"quic"`
			Unix  string `json:"unix"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || !strings.HasPrefix(l.Msg, "mcpgw is up") {
			return false
		}
		addrs = GatewayAddrs{HTTP: l.HTTP, QUIC: l.QUIC, Unix: l.Unix, Admin: "http://" + l.Admin}
		return true
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	g := &gatewayProc{child: c, dir: dir, addrs: addrs}
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		g.stop()
		return nil, fmt.Errorf("read the gateway's admin token: %w", err)
	}
	g.addrs.AdminToken = strings.TrimSpace(string(tok))
	g.addrs.CAFile = filepath.Join(data, "tls", "cluster", "ca.crt")
	return g, nil
}

func (g *gatewayProc) stop() {
	g.child.stop()
	os.RemoveAll(g.dir)
}

// admin calls a gateway's admin API.
type admin struct {
	base, token string
	http        *http.Client
}

func (a *admin) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API %s unreachable: %w (check --gateway-admin)", a.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin API %s %s: %s", method, path, e.Error)
		}
		return fmt.Errorf("admin API %s %s answered HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// putRoute creates or replaces an internal streamable HTTP route.
func (a *admin) putRoute(ctx context.Context, name, url string) error {
	return a.do(ctx, http.MethodPost, "/v1/routes", adminapi.Route{Name: name, URL: url, Transport: "streamable", Kind: "internal"}, nil)
}

// issueToken issues a service token for org.
func (a *admin) issueToken(ctx context.Context, org string) (string, error) {
	var tok struct {
		Token string `json:"token"`
	}
	if err := a.do(ctx, http.MethodPost, "/v1/tokens", map[string]any{"service": "mcpgw-bench", "orgs": []string{org}, "ttl": "24h"}, &tok); err != nil {
		return "", err
	}
	if tok.Token == "" {
		return "", errors.New("admin API issued an empty service token")
	}
	return tok.Token, nil
}

// goroutines reads go_goroutines from the gateway's /metrics; -1 when it
// cannot.
func (a *admin) goroutines(ctx context.Context) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return -1
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return int(n)
			}
		}
	}
	return -1
}
