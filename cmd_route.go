package main

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"

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
				Flags: append(adminFlags(),
					&cli.StringFlag{Name: "transport", Value: "streamable", Usage: "upstream transport: streamable, sse, websocket or stdio"},
					&cli.StringFlag{Name: "kind", Value: "internal", Usage: "internal or external"},
					&cli.StringFlag{Name: "credential", Usage: "required, optional or none (default: required for external, optional for internal)"},
				),
				Action: func(c *cli.Context) error {
					r := adminapi.Route{Name: c.Args().First(), Transport: c.String("transport"), Kind: c.String("kind"), Credential: c.String("credential")}
					if r.Name == "" {
						return cli.Exit("usage: mcpgw route add <name> <url>  (or --transport stdio -- <command> [args...])", 2)
					}
					rest := c.Args().Tail()
					if r.Transport == "stdio" {
						r.Command = rest
					} else if len(rest) == 1 {
						r.URL = rest[0]
					} else {
						return cli.Exit("usage: mcpgw route add <name> <url>", 2)
					}
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var got adminapi.Route
					if err := a.Do(c.Context, "POST", "/v1/routes", r, &got); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "route %s → %s (%s, %s, credential %s)\n", got.Name, got.URL, got.Transport, got.Kind, got.Credential)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list routes",
				Flags: adminFlags(),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var routes []adminapi.Route
					if err := a.Do(c.Context, "GET", "/v1/routes", nil, &routes); err != nil {
						return err
					}
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "NAME\tURL\tTRANSPORT\tKIND\tCREDENTIAL\tCOMMAND")
					for _, r := range routes {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.URL, r.Transport, r.Kind, r.Credential, strings.Join(r.Command, " "))
					}
					return w.Flush()
				},
			},
			{
				Name:      "rm",
				Usage:     "remove a route",
				ArgsUsage: "<name>",
				Flags:     adminFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("usage: mcpgw route rm <name>", 2)
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
