package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/client"
)

func callCommand() *cli.Command {
	return &cli.Command{
		Name:      "call",
		Usage:     "open a session through the gateway, send one request, print its result",
		ArgsUsage: "<target-url> <method> [json-params]",
		Description: `Example:
   mcpgw call http://127.0.0.1:9000/mcp tools/list
   mcpgw call http://127.0.0.1:9000/mcp tools/call '{"name":"echo","arguments":{"text":"hi"}}'`,
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
		return cli.Exit("usage: mcpgw call <target-url> <method> [json-params]", 2)
	}
	target, method := c.Args().Get(0), c.Args().Get(1)
	var params json.RawMessage
	if p := c.Args().Get(2); p != "" {
		if !json.Valid([]byte(p)) {
			return cli.Exit(fmt.Sprintf("params %q are not valid JSON", p), 2)
		}
		params = json.RawMessage(p)
	}
	ctx, cancel := context.WithTimeout(background(c), c.Duration("timeout"))
	defer cancel()

	roots, err := cliRoots(c)
	if err != nil {
		return err
	}
	t, err := client.NewTransport(c.String("gateway"), target, c.String("org"), c.String("account"), client.WithToken(c.String("token")), client.WithRootCAs(roots))
	if err != nil {
		return err
	}
	defer client.CloseConnections() // a QUIC gateway learns at once that this process is gone
	conn, err := t.Connect(ctx)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
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
	_, err = c.App.Writer.Write(out.Bytes())
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
