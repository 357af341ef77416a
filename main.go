// Command mcpgw is a single-binary MCP gateway: services open MCP sessions
// through it to internal and external MCP servers, and it picks the route,
// injects credentials, applies policy and audits.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	app := &cli.App{
		Name:    "mcpgw",
		Usage:   "MCP gateway: one endpoint for every MCP server your services use",
		Version: version,
		Commands: []*cli.Command{
			initCommand(),
			serveCommand(),
			statusCommand(),
			clusterCommand(),
			backupCommand(),
			restoreCommand(),
			routeCommand(),
			vaultCommand(),
			tokenCommand(),
			ruleCommand(),
			limitCommand(),
			auditCommand(),
			callCommand(),
			benchCommand(),
			benchUpstreamCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints and exits
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "mcpgw: %v\n", err)
		os.Exit(1)
	}
}
