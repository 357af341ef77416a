package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/bench"
)

// benchUpstreamCommand serves the echo upstream `mcpgw bench` starts as a
// child process of its own, so /proc tells its CPU from the gateway's.
func benchUpstreamCommand() *cli.Command {
	return &cli.Command{
		Name:   bench.UpstreamCommand,
		Usage:  "serve the echo MCP server mcpgw bench measures against (stateful at /mcp, stateless at /stateless)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:0", Usage: "listen address"},
			&cli.BoolFlag{Name: "stdio", Usage: "serve the same MCP server over stdin and stdout instead, for proxies that front stdio servers"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(background(c), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if c.Bool("stdio") {
				return bench.ServeStdio(ctx)
			}
			return bench.ServeUpstream(ctx, c.String("addr"), func(base string) {
				fmt.Fprintln(c.App.Writer, bench.UpstreamReadyPrefix+base)
			})
		},
	}
}
