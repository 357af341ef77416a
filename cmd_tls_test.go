package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/node"
)

// runCommands runs the CLI with the given commands and returns what it
// printed.
func runCommands(t *testing.T, cmds []*cli.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{Name: "mcpgw", Commands: cmds, Writer: &out, ErrWriter: &out, ExitErrHandler: func(*cli.Context, error) {}}
	err := app.Run(append([]string{"mcpgw"}, args...))
	return out.String(), err
}

// TestCommandsTrustClusterCA runs admin commands and `mcpgw call` against
// a node serving TLS on loopback: they succeed trusting the cluster CA
// through --ca-file, MCPGW_CA_FILE or the --data-dir of a node on this
// host, and fail without it, saying to pass --ca-file.
func TestCommandsTrustClusterCA(t *testing.T) {
	t.Setenv(client.EnvCAFile, "")
	dataDir := t.TempDir()
	n := startTestNode(t, func(c *node.Config) { c.TLS, c.DataDir = node.TLSOn, dataDir })
	caFile := filepath.Join(node.DefaultClusterTLSDir(dataDir), cluster.CACertFile)
	cmds := []*cli.Command{statusCommand(), routeCommand(), tokenCommand(), callCommand()}
	admin := "--admin=" + n.AdminURL()
	tok := "--admin-token=" + n.AdminToken()
	elsewhere := "--data-dir=" + t.TempDir()

	if out, err := runCommands(t, cmds, "status", admin, tok, elsewhere, "--ca-file", caFile); err != nil || !strings.Contains(out, "node:") {
		t.Fatalf("status with --ca-file: %v\n%s", err, out)
	}
	if out, err := runCommands(t, cmds, "status", admin, tok, "--data-dir", dataDir); err != nil {
		t.Fatalf("status with the CA of --data-dir: %v\n%s", err, out)
	}
	_, err := runCommands(t, cmds, "status", admin, tok, elsewhere)
	if err == nil {
		t.Fatal("status trusted the admin API without the cluster CA")
	}
	for _, want := range []string{"--ca-file", client.EnvCAFile, "certificate"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("status without the CA: %q, want it to mention %q", err, want)
		}
	}
	_, err = runCommands(t, cmds, "status", "--admin=http://"+n.AdminAddr(), tok, elsewhere)
	if err == nil || !strings.Contains(err.Error(), "--admin https://"+n.AdminAddr()) {
		t.Fatalf("status over http to an https admin API: %v, want a hint to use https://", err)
	}

	t.Setenv(client.EnvCAFile, caFile)
	up := upstreamtest.StartHTTP(t, upstreamtest.New().StreamableHandler()) + "/mcp"
	if out, err := runCommands(t, cmds, "route", "add", admin, tok, elsewhere, "echo", up); err != nil {
		t.Fatalf("route add with %s: %v\n%s", client.EnvCAFile, err, out)
	}
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(caFile)
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("read %s: %v", caFile, err)
	}
	var issued adminapi.IssuedToken
	if err := adminapi.NewClient(n.AdminURL(), n.AdminToken(), &adminapi.ClientOptions{Roots: roots}).Do(context.Background(), http.MethodPost, "/v1/tokens", adminapi.IssueTokenRequest{Service: "cli", Orgs: []string{"*"}, TTL: "1h"}, &issued); err != nil {
		t.Fatalf("issue a token: %v", err)
	}
	gw := "--gateway=wss://" + n.HTTPAddr()
	svc := "--token=" + issued.Token
	if out, err := runCommands(t, cmds, "call", gw, svc, elsewhere, up, "tools/list"); err != nil {
		t.Fatalf("call over wss with %s: %v\n%s", client.EnvCAFile, err, out)
	}
	t.Setenv(client.EnvCAFile, "")
	_, err = runCommands(t, cmds, "call", gw, svc, elsewhere, up, "tools/list")
	if err == nil || !strings.Contains(err.Error(), client.EnvCAFile) {
		t.Fatalf("call over wss without the CA: %v, want it to mention %s", err, client.EnvCAFile)
	}
}
