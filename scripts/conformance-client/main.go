// Command conformance-client is the client command the official MCP
// conformance suite (@modelcontextprotocol/conformance, `conformance client
// --command`) runs for each client auth scenario, with the gateway as the
// OAuth client: it starts a fresh mcpgw node, adds the scenario's MCP server
// as a route, asks `mcpgw oauth url` for a sign-in link, opens it as a
// browser would (the scenario's authorization server approves at once and
// sends the browser to the gateway's callback, which completes the flow),
// then opens a session through the gateway, lists the tools and calls
// test-tool. scripts/conformance-client.sh drives it.
//
// Usage (as the suite calls it):
//
//	MCPGW_BIN=/path/to/mcpgw MCP_CONFORMANCE_SCENARIO=auth/metadata-default conformance-client <server-url>
//
// MCP_CONFORMANCE_CONTEXT (JSON) may carry client_id and client_secret: a
// client the authorization server knows in advance, added with `mcpgw
// oauth client add` before the sign-in.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/transport"
)

const (
	route   = "conformance"
	org     = "conformance"
	account = "conformance"
	// cimdURL is the client id the suite's basic-cimd scenario expects: the
	// document is published at another address than the gateway (which the
	// scenario's authorization server never fetches).
	cimdURL = "https://conformance-test.local/client-metadata.json"
	// maxConsents bounds the sign-ins one scenario may ask for: the first,
	// then step-ups when the server asks for more scopes.
	maxConsents = 3
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("conformance-client: ")
	if len(os.Args) != 2 {
		log.Fatalf("usage: %s <server-url> (with MCPGW_BIN and MCP_CONFORMANCE_SCENARIO set)", os.Args[0])
	}
	// Stopped by the suite (its timeout), the gateway is stopped too.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 80*time.Second)
	defer cancel()
	if err := run(ctx, os.Args[1]); err != nil {
		log.Fatalf("scenario %s: %v", os.Getenv("MCP_CONFORMANCE_SCENARIO"), err)
	}
}

func run(ctx context.Context, serverURL string) error {
	bin := os.Getenv("MCPGW_BIN")
	if bin == "" {
		return errors.New("MCPGW_BIN is not set: point it at the mcpgw binary")
	}
	var conf map[string]any
	if s := os.Getenv("MCP_CONFORMANCE_CONTEXT"); s != "" {
		if err := json.Unmarshal([]byte(s), &conf); err != nil {
			return fmt.Errorf("MCP_CONFORMANCE_CONTEXT is not JSON: %v", err)
		}
	}
	dir, err := os.MkdirTemp("", "mcpgw-conformance-client-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	gw, err := startGateway(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer gw.stop()

	if _, err := gw.cli(ctx, "route", "add", "--kind", "external", "--credential", "required", route, serverURL); err != nil {
		return err
	}
	if id, ok := conf["client_id"].(string); ok {
		args := []string{"oauth", "client", "add", "--route", route, "--client-id", id}
		if secret, ok := conf["client_secret"].(string); ok {
			args = append(args, "--client-secret-stdin")
			if _, err := gw.cliIn(ctx, secret, args...); err != nil {
				return err
			}
		} else if _, err := gw.cli(ctx, args...); err != nil {
			return err
		}
	}
	tok, err := gw.cli(ctx, "token", "issue", "--service", "conformance", "--org", org, "--ttl", "1h")
	if err != nil {
		return err
	}
	if err := gw.consent(ctx); err != nil {
		return err
	}
	sess, err := gw.session(ctx, strings.TrimSpace(tok))
	if err != nil {
		return err
	}
	defer sess.Close()
	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		return fmt.Errorf("tools/list through the gateway: %w", err)
	}
	if !slices.ContainsFunc(tools.Tools, func(t *mcp.Tool) bool { return t.Name == "test-tool" }) {
		log.Printf("tools/list through the gateway has no test-tool")
	}
	for consents := 1; ; consents++ {
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "test-tool", Arguments: map[string]any{}})
		var refusal string
		switch {
		case err != nil:
			refusal = err.Error()
		case res.IsError:
			refusal = "tool error: " + text(res)
		default:
			return nil
		}
		// A refusal carrying a sign-in link (more consent needed, e.g. for
		// more scopes): open it as the user would, then call again. The
		// gateway puts it in the error's data (code -32090), the text of
		// an elicitation or tool error may carry it too.
		link := consentLink(err)
		if link == "" {
			link = signInLink(refusal)
		}
		if link == "" || consents >= maxConsents {
			return fmt.Errorf("tools/call test-tool through the gateway: %s", refusal)
		}
		log.Printf("the gateway asks for consent again; opening its sign-in link")
		if err := gw.browse(ctx, link); err != nil {
			return err
		}
	}
}

// consentLink returns the authorization URL of a consent-required error
// (code -32090, data.authorizationUrl), "" for any other error.
func consentLink(err error) string {
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != transport.CodeConsentRequired {
		return ""
	}
	var data struct {
		AuthorizationURL string `json:"authorizationUrl"`
	}
	if json.Unmarshal(werr.Data, &data) != nil {
		return ""
	}
	return data.AuthorizationURL
}

// signInLink returns the first URL in s that carries an OAuth state, "" if
// none.
func signInLink(s string) string {
	for _, m := range linkRE.FindAllString(s, -1) {
		if u, err := url.Parse(strings.TrimRight(m, ".,;)")); err == nil && u.Query().Get("state") != "" {
			return u.String()
		}
	}
	return ""
}

var linkRE = regexp.MustCompile(`https?://[^\s"'<>]+`)

// gateway is one mcpgw node, serving on loopback.
type gateway struct {
	bin, dir       string
	httpURL, admin string
	cmd            *exec.Cmd
	done           chan error
}

// startGateway starts a node on free loopback ports. A port found free can
// be taken by another process before the node binds it (scenarios run side
// by side): the node then exits saying so, and starts again, afresh, on
// other ports.
func startGateway(ctx context.Context, bin, dir string) (*gateway, error) {
	for attempt := 1; ; attempt++ {
		g, err := startGatewayOnce(ctx, bin, dir)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return g, err
		}
		log.Printf("a port was taken before mcpgw bound it; starting it again on other ports")
		for _, name := range []string{"data", "vault.key", "mcpgw.log"} {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
		}
	}
}

func startGatewayOnce(ctx context.Context, bin, dir string) (*gateway, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// Every listener on a port of its own: the defaults are fixed ports
	// another node on this machine may hold.
	raftAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	g := &gateway{bin: bin, dir: dir, httpURL: "http://" + httpAddr, admin: "http://" + adminAddr, done: make(chan error, 1)}
	logf, err := os.Create(filepath.Join(dir, "mcpgw.log"))
	if err != nil {
		return nil, err
	}
	g.cmd = exec.Command(bin, "serve",
		"--data-dir", filepath.Join(dir, "data"), "--vault-key", filepath.Join(dir, "vault.key"),
		"--http", httpAddr, "--admin", adminAddr, "--raft", raftAddr, "--quic", "", "--unix", "",
		"--public-url", g.httpURL, "--oauth-allow-loopback",
		"--oauth-client-metadata-url", cimdURL,
		"--log-format", "text")
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start mcpgw: %w", err)
	}
	go func() { g.done <- g.cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(g.admin + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return g, nil
			}
		}
		select {
		case err := <-g.done:
			g.done <- err
			return nil, fmt.Errorf("mcpgw exited before it was ready (%v):\n%s", err, g.log())
		case <-ctx.Done():
			g.stop()
			return nil, fmt.Errorf("mcpgw not ready: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, fmt.Errorf("mcpgw not ready within 30s:\n%s", g.log())
		}
	}
}

func (g *gateway) log() string {
	b, _ := os.ReadFile(filepath.Join(g.dir, "mcpgw.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (g *gateway) stop() {
	if g.cmd.Process == nil {
		return
	}
	g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
}

// cli runs an mcpgw admin command against the node and returns its stdout.
func (g *gateway) cli(ctx context.Context, args ...string) (string, error) {
	return g.cliIn(ctx, "", args...)
}

func (g *gateway) cliIn(ctx context.Context, stdin string, args ...string) (string, error) {
	sub := len(args)
	for i, a := range args {
		if strings.HasPrefix(a, "-") {
			sub = i
			break
		}
	}
	// Admin flags go right after the subcommand words.
	full := slices.Concat(args[:sub], []string{"--admin", g.admin, "--data-dir", filepath.Join(g.dir, "data")}, args[sub:])
	cmd := exec.CommandContext(ctx, g.bin, full...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("mcpgw %s: %v: %s", strings.Join(args[:sub], " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// consent asks the gateway for a sign-in link (mcpgw oauth url) and opens it.
func (g *gateway) consent(ctx context.Context) error {
	out, err := g.cli(ctx, "oauth", "url", "--org", org, "--account", account, "--route", route, "--json")
	if err != nil {
		return err
	}
	var link struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal([]byte(out), &link); err != nil || link.URL == "" {
		return fmt.Errorf("mcpgw oauth url --json printed no url: %q", out)
	}
	return g.browse(ctx, link.URL)
}

// browse opens a sign-in link as a browser does, following every redirect
// (the scenario's authorization server approves at once) to the gateway's
// callback page, which must say the account is connected.
func (g *gateway) browse(ctx context.Context, link string) error {
	var landed string
	browser := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if len(via) > 10 {
			return errors.New("more than 10 redirects")
		}
		landed = r.URL.Scheme + "://" + r.URL.Host + r.URL.Path
		return nil
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return err
	}
	res, err := browser.Do(req)
	if err != nil {
		return fmt.Errorf("open the sign-in link: %w", err)
	}
	defer res.Body.Close()
	page, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if landed != g.httpURL+"/oauth/callback" {
		return fmt.Errorf("the sign-in link did not end on the gateway's callback but on %q (HTTP %d)", landed, res.StatusCode)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("the gateway's callback answered HTTP %d: %s", res.StatusCode, pageText(page))
	}
	return nil
}

// session opens an MCP session to the route through the gateway. The
// client declares URL elicitation: a gateway that asks for consent that way
// gets its link opened, as a person would.
func (g *gateway) session(ctx context.Context, token string) (*mcp.ClientSession, error) {
	hc := &http.Client{Transport: bearer{token}}
	endpoint := g.httpURL + "/v1/mcp/" + route + "?" + url.Values{"org": {org}, "account": {account}}.Encode()
	c := mcp.NewClient(&mcp.Implementation{Name: "mcpgw-conformance-client", Version: "1"}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}},
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			if req.Params.URL == "" {
				return &mcp.ElicitResult{Action: "decline"}, nil
			}
			log.Printf("the gateway asks for consent by URL elicitation; opening its link")
			if err := g.browse(ctx, req.Params.URL); err != nil {
				log.Printf("consent by URL elicitation: %v", err)
				return &mcp.ElicitResult{Action: "cancel"}, nil
			}
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
	})
	sess, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		return nil, fmt.Errorf("session through the gateway: %w", err)
	}
	return sess, nil
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func text(r *mcp.CallToolResult) string {
	var parts []string
	for _, c := range r.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	return strings.Join(parts, " ")
}

// pageText is the callback page without its markup, for error messages.
func pageText(page []byte) string {
	var b strings.Builder
	in := false
	for _, r := range string(page) {
		switch {
		case r == '<':
			in = true
		case r == '>':
			in = false
			b.WriteByte(' ')
		case !in:
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
