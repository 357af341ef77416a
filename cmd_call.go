package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/gateway"
)

func callCommand() *cli.Command {
	return &cli.Command{
		Name:      "call",
		Usage:     "open a session through the gateway, send one request, print its result",
		ArgsUsage: "<target-url | stdio-route-name> <method> [json-params]",
		Description: `The target is the upstream URL a route covers, or the name of a stdio route.
Exits 0 on a result, 1 on an error, including a tool result with "isError": true.

Examples:
   mcpgw call http://127.0.0.1:9000/mcp tools/list
   mcpgw call http://127.0.0.1:9000/mcp tools/call '{"name":"echo","arguments":{"text":"hi"}}' --org acme
   mcpgw call files tools/list          # the stdio route named files`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "gateway", Value: client.DefaultAddr, EnvVars: []string{client.EnvAddr}, Usage: "gateway address"},
			&cli.StringFlag{Name: "token", EnvVars: []string{client.EnvToken}, Usage: "service token"},
			&cli.StringFlag{Name: "org", Value: "default", EnvVars: []string{"MCPGW_ORG"}, Usage: "org to act for"},
			&cli.StringFlag{Name: "account", Value: "default", EnvVars: []string{"MCPGW_ACCOUNT"}, Usage: "account whose credential the gateway injects"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "give up after this long"},
			dataDirFlag(),
			caFileFlag(),
		},
		Action: runCall,
	}
}

func runCall(c *cli.Context) error {
	if c.NArg() < 2 || c.NArg() > 3 {
		return usagef("mcpgw call: want <target-url> <method> [json-params], got %d argument(s): see `mcpgw call --help`", c.NArg())
	}
	target, method := c.Args().Get(0), c.Args().Get(1)
	target, err := callTarget(target)
	if err != nil {
		return err
	}
	var params json.RawMessage
	if p := c.Args().Get(2); p != "" {
		if !json.Valid([]byte(p)) {
			return usagef("mcpgw call: params %q are not valid JSON", p)
		}
		params = json.RawMessage(p)
	}
	ctx, cancel := context.WithTimeout(background(c), c.Duration("timeout"))
	defer cancel()

	roots, err := cliRoots(c)
	if err != nil {
		return err
	}
	gwAddr := c.String("gateway")
	t, err := client.NewTransport(gwAddr, target, c.String("org"), c.String("account"), client.WithToken(c.String("token")), client.WithRootCAs(roots))
	if err != nil {
		return err
	}
	defer client.CloseConnections() // a QUIC gateway learns at once that this process is gone
	conn, err := t.Connect(ctx)
	if err != nil {
		return fmt.Errorf("open session: %w", explainGatewayError(gwAddr, err))
	}
	defer conn.Close()

	init, _ := json.Marshal(map[string]any{
		"protocolVersion": "2025-11-25",
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]string{"name": "mcpgw-call", "version": version},
	})
	if _, err := roundTrip(ctx, c.App.ErrWriter, conn, 1, "initialize", init); err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	if err := conn.Write(ctx, &jsonrpc.Request{Method: "notifications/initialized", Params: json.RawMessage("{}")}); err != nil {
		return err
	}
	result, err := roundTrip(ctx, c.App.ErrWriter, conn, 2, method, params)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, result, "", "  "); err != nil {
		out.Write(result)
	}
	out.WriteByte('\n')
	if _, err := c.App.Writer.Write(out.Bytes()); err != nil {
		return err
	}
	var tool struct {
		IsError bool `json:"isError"`
	}
	if json.Unmarshal(result, &tool) == nil && tool.IsError {
		return fmt.Errorf("%s: the tool reported an error (isError: true; its result is above)", method)
	}
	return nil
}

// callTarget checks the target argument of call: a URL with a scheme, or
// the bare name of a stdio route, which the gateway knows as
// stdio://<name>.
func callTarget(target string) (string, error) {
	if strings.Contains(target, "://") {
		return target, nil
	}
	if strings.ContainsAny(target, "/:") || strings.Count(target, ".") >= 3 {
		return "", usagef("mcpgw call: target %q has no scheme: add http:// (http://%s) or https://", target, target)
	}
	if err := gateway.ValidName("route", target); err != nil {
		return "", usagef("mcpgw call: %v", err)
	}
	return "stdio://" + target, nil
}

// explainGatewayError adds what to do to the errors of a session that did
// not open: a gateway that is down, or one whose certificate is not
// trusted.
func explainGatewayError(addr string, err error) error {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	switch {
	case strings.Contains(err.Error(), client.EnvCAFile):
		return err // the client library said what to do already
	case errors.As(err, &verr) || errors.As(err, &uerr) || strings.Contains(err.Error(), "x509: certificate signed by unknown authority"):
		return fmt.Errorf("%w (trust the cluster CA: --ca-file <data-dir>/tls/cluster/ca.crt of any node, or %s)", err, client.EnvCAFile)
	case isConnRefused(err):
		return fmt.Errorf("gateway %s unreachable: %v (is `mcpgw serve` running? set --gateway or %s)", addr, dialCause(err), client.EnvAddr)
	}
	return err
}

// isConnRefused reports whether err is a refused or failed dial.
func isConnRefused(err error) bool {
	var oerr *net.OpError
	return errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &oerr) && oerr.Op == "dial")
}

// dialCause drops the URLs net/http and the dialer wrap a dial error in.
func dialCause(err error) error {
	var oerr *net.OpError
	if errors.As(err, &oerr) && oerr.Err != nil {
		return oerr.Err
	}
	return err
}

// roundTrip sends one request and waits for its response, printing
// notifications to stderr and refusing server-to-client requests, which a
// one-shot command cannot answer.
func roundTrip(ctx context.Context, notes io.Writer, conn mcp.Connection, id int64, method string, params json.RawMessage) (json.RawMessage, error) {
	rid, _ := jsonrpc.MakeID(float64(id))
	if err := conn.Write(ctx, &jsonrpc.Request{ID: rid, Method: method, Params: params}); err != nil {
		return nil, err
	}
	for {
		msg, err := conn.Read(ctx)
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *jsonrpc.Response:
			if m.ID != rid {
				continue
			}
			if m.Error != nil {
				return nil, m.Error
			}
			return m.Result, nil
		case *jsonrpc.Request:
			if m.IsCall() {
				conn.Write(ctx, &jsonrpc.Response{ID: m.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "mcpgw call cannot answer " + m.Method}})
				continue
			}
			fmt.Fprintf(notes, "notification %s %s\n", m.Method, m.Params)
		}
	}
}
