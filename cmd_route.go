package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
)

func routeCommand() *cli.Command {
	return &cli.Command{
		Name:  "route",
		Usage: "manage the allow-list of upstream MCP servers",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add or replace a route",
				ArgsUsage: "<name> <url> | <name> --transport stdio -- <command> [args...]",
				Description: `Flags may come before or after the arguments; after --, everything is the command.
Adding checks from this host that something listens at the URL and warns if not;
--check opens an MCP session (initialize) first and adds the route only if it succeeds.

Examples:
   mcpgw route add linear https://mcp.linear.app/mcp --kind external
   mcpgw route add legacy http://10.0.0.5:8080/sse --transport sse
   mcpgw route add files --transport stdio -- /usr/local/bin/files-mcp --root /srv
   mcpgw route add echo http://127.0.0.1:9000/mcp --check`,
				Flags: append(adminFlags(),
					&cli.StringFlag{Name: "transport", Value: "streamable", Usage: "upstream transport: streamable, sse, websocket or stdio"},
					&cli.StringFlag{Name: "kind", Value: "internal", Usage: "internal or external"},
					&cli.StringFlag{Name: "credential", Usage: "required, optional or none (default: required for external, optional for internal)"},
					&cli.BoolFlag{Name: "check", Usage: "open an MCP session to the URL from this host first (initialize); add the route only if it answers"},
				),
				Action: runRouteAdd,
			},
			{
				Name:  "list",
				Usage: "list routes",
				Flags: append(adminFlags(), jsonFlag(), staleFlag()),
				Action: listAction("/v1/routes", "NAME\tURL\tTRANSPORT\tKIND\tCREDENTIAL\tCOMMAND", func(r adminapi.Route) []any {
					return []any{r.Name, r.URL, r.Transport, r.Kind, r.Credential, strings.Join(r.Command, " ")}
				}),
			},
			{
				Name:        "rm",
				Usage:       "remove a route",
				ArgsUsage:   "<name>",
				Description: "Example:\n   mcpgw route rm legacy",
				Flags:       adminFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usagef("mcpgw route rm: want one route name, got %d argument(s): see `mcpgw route rm --help`", c.NArg())
					}
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					if err := a.Do(c.Context, "DELETE", "/v1/routes/"+url.PathEscape(c.Args().First()), nil, nil); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "route %s removed\n", c.Args().First())
					return nil
				},
			},
		},
	}
}

func runRouteAdd(c *cli.Context) error {
	const usage = "usage: mcpgw route add <name> <url>, or mcpgw route add <name> --transport stdio -- <command> [args...]"
	r := adminapi.Route{Name: c.Args().First(), Transport: c.String("transport"), Kind: c.String("kind"), Credential: c.String("credential")}
	if r.Name == "" {
		return usagef("mcpgw route add: no route name: %s", usage)
	}
	rest := c.Args().Tail()
	if r.Transport == "stdio" {
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:] // the separator, when the flags came first
		}
		if len(rest) == 0 {
			return usagef("mcpgw route add: stdio route %q has no command: %s", r.Name, usage)
		}
		r.Command = rest
	} else {
		switch len(rest) {
		case 1:
			r.URL = rest[0]
		case 0:
			return usagef("mcpgw route add: route %q has no URL: %s", r.Name, usage)
		default:
			return usagef("mcpgw route add: route %q takes one URL, got %d arguments %q (a command needs --transport stdio --): %s", r.Name, len(rest), rest, usage)
		}
	}
	if c.Bool("check") && r.Transport != "stdio" {
		if err := checkUpstream(background(c), r); err != nil {
			return fmt.Errorf("--check: %s %s did not answer an MCP initialize from this host: %v; route not added", r.Transport, r.URL, err)
		}
	}
	a, err := newAdminClient(c)
	if err != nil {
		return err
	}
	var got adminapi.Route
	if err := a.Do(c.Context, "POST", "/v1/routes", r, &got); err != nil {
		return err
	}
	target := got.URL
	if got.Transport == "stdio" {
		target = strings.Join(got.Command, " ")
	}
	fmt.Fprintf(c.App.Writer, "route %s → %s (%s, %s, credential %s)\n", got.Name, target, got.Transport, got.Kind, got.Credential)
	if got.Transport == "stdio" {
		return nil
	}
	var routes []adminapi.Route
	if a.Do(c.Context, "GET", "/v1/routes", nil, &routes) == nil {
		for _, o := range routes {
			if o.Name != got.Name && o.URL == got.URL {
				fmt.Fprintf(c.App.ErrWriter, "mcpgw: warning: route %s has the same URL %s; targets under it match one of them only: remove one with `mcpgw route rm`\n", o.Name, o.URL)
			}
		}
	}
	if !c.Bool("check") {
		if err := dialUpstream(got.URL); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "mcpgw: warning: nothing answers at %s from this host (%v); sessions through the route fail until it does (try `--check`)\n", got.URL, err)
		}
	}
	return nil
}

// dialUpstream opens, and closes, a TCP connection to the host of rawURL.
func dialUpstream(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "ws": "80", "https": "443", "wss": "443"}[u.Scheme]
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(u.Hostname(), port), 3*time.Second)
	if err != nil {
		return dialCause(err)
	}
	return conn.Close()
}

// checkUpstream opens an MCP session to the route's URL and closes it.
func checkUpstream(ctx context.Context, r adminapi.Route) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var t mcp.Transport
	switch r.Transport {
	case "sse":
		t = &mcp.SSEClientTransport{Endpoint: r.URL}
	case "websocket":
		return dialUpstream(r.URL) // the SDK has no WebSocket client: a listener is what can be checked
	default:
		t = &mcp.StreamableClientTransport{Endpoint: r.URL, MaxRetries: -1}
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "mcpgw-route-check", Version: version}, nil).Connect(ctx, t, nil)
	if err != nil {
		return err
	}
	return cs.Close()
}
