// Command mcpgw is a single-binary MCP gateway: services open MCP sessions
// through it to internal and external MCP servers, and it picks the route,
// injects credentials, applies policy and audits.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(newApp(os.Stdout, os.Stderr), os.Args))
}

// newApp returns the command set, writing results to stdout and notes and
// errors to stderr.
func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "mcpgw",
		Usage:                "MCP gateway: one endpoint for every MCP server your services use",
		Version:              versionInfo().Version,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			initCommand(),
			serveCommand(),
			statusCommand(),
			waitCommand(),
			clusterCommand(),
			backupCommand(),
			restoreCommand(),
			routeCommand(),
			vaultCommand(),
			oauthCommand(),
			tokenCommand(),
			ruleCommand(),
			limitCommand(),
			auditCommand(),
			topCommand(),
			callCommand(),
			benchCommand(),
			benchUpstreamCommand(),
			versionCommand(),
			completionCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run prints and picks the exit code
	}
	prepareCommands(app)
	return app
}

// run runs app on args, prints its error, and returns the exit code:
// 0 ok, 1 error, 2 usage error (and 3 from `audit verify` for a
// tampered log).
func run(app *cli.App, args []string) int {
	args, path := reorderArgs(app, args)
	err := app.Run(args)
	if err == nil {
		return 0
	}
	err = classify(err, path)
	switch msg := err.Error(); {
	case msg == "":
	case strings.HasPrefix(msg, "mcpgw ") || strings.HasPrefix(msg, "usage: "):
		fmt.Fprintln(app.ErrWriter, msg) // names the command already
	default:
		fmt.Fprintf(app.ErrWriter, "mcpgw: %s\n", msg)
	}
	return exitCode(err)
}
