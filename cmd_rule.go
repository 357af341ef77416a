package main

import (
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
)

// selectorFlags are the who/what fields rules and limits share.
func selectorFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "id", Required: true, Usage: "id of the entry (adding an existing id replaces it)"},
		&cli.StringFlag{Name: "service", Value: "*", Usage: "service name or *"},
		&cli.StringFlag{Name: "org", Value: "*", Usage: "org or *"},
		&cli.StringFlag{Name: "account", Value: "*", Usage: "account or *"},
		&cli.StringFlag{Name: "route", Value: "*", Usage: "route name or *"},
		&cli.StringFlag{Name: "tool", Value: "*", Usage: "tool name, prefix pattern like list_*, or *"},
	}
}

func ruleCommand() *cli.Command {
	return &cli.Command{
		Name:  "rule",
		Usage: "allow/deny rules: once a route has a rule, what no rule allows is denied",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "add or replace a rule",
				Description: `Once a route has a rule, what no rule allows on it is denied: add the allow
rules first, then the denies.

Examples:
   mcpgw rule add --id gh-agents --route github --tool '*' --effect allow
   mcpgw rule add --id no-deletes --route github --tool 'delete_*' --effect deny`,
				Flags: append(append(adminFlags(), selectorFlags()...),
					&cli.StringFlag{Name: "effect", Required: true, Usage: "allow or deny"}),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					r := adminapi.Rule{ID: c.String("id"), Service: c.String("service"), Org: c.String("org"), Account: c.String("account"), Route: c.String("route"), Tool: c.String("tool"), Effect: c.String("effect")}
					if err := a.Do(c.Context, "POST", "/v1/rules", r, &r); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "rule %s: %s service=%s org=%s account=%s route=%s tool=%s\n", r.ID, r.Effect, r.Service, r.Org, r.Account, r.Route, r.Tool)
					var rules []adminapi.Rule
					if a.Do(c.Context, "GET", "/v1/rules", nil, &rules) == nil {
						warnNoAllow(c.App.ErrWriter, r.Route, rules)
					}
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list rules",
				Flags: append(adminFlags(), jsonFlag(), staleFlag()),
				Action: listAction("/v1/rules", "ID\tEFFECT\tSERVICE\tORG\tACCOUNT\tROUTE\tTOOL", func(r adminapi.Rule) []any {
					return []any{r.ID, r.Effect, r.Service, r.Org, r.Account, r.Route, r.Tool}
				}),
			},
			removeCommand("rule", "/v1/rules/"),
		},
	}
}

func limitCommand() *cli.Command {
	return &cli.Command{
		Name:  "limit",
		Usage: "cluster-wide token-bucket rate limits on tools/call",
		Subcommands: []*cli.Command{
			{
				Name:  "set",
				Usage: "add or replace a limit",
				Description: `Example:
   mcpgw limit set --id gh-per-account --route github --rate 5 --burst 10 --pool org,account`,
				Flags: append(append(adminFlags(), selectorFlags()...),
					&cli.Float64Flag{Name: "rate", Required: true, Usage: "calls per second, cluster-wide"},
					&cli.IntFlag{Name: "burst", Required: true, Usage: "calls allowed at once, cluster-wide"},
					&cli.StringFlag{Name: "pool", Usage: "fields whose values share one bucket, e.g. org,account (default: one bucket per distinct caller)"}),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					l := adminapi.Limit{ID: c.String("id"), Service: c.String("service"), Org: c.String("org"), Account: c.String("account"), Route: c.String("route"), Tool: c.String("tool"),
						Rate: c.Float64("rate"), Burst: c.Int("burst"), Pool: c.String("pool")}
					if err := a.Do(c.Context, "POST", "/v1/limits", l, &l); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "limit %s: %g/s burst %d on service=%s org=%s account=%s route=%s tool=%s\n", l.ID, l.Rate, l.Burst, l.Service, l.Org, l.Account, l.Route, l.Tool)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list limits",
				Flags: append(adminFlags(), jsonFlag(), staleFlag()),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var limits []adminapi.Limit
					if err := a.Do(c.Context, "GET", "/v1/limits", nil, &limits); err != nil {
						return err
					}
					staleNotice(c, a)
					if c.Bool("json") {
						return writeJSON(c, nonNilSlice(limits))
					}
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "ID\tRATE\tBURST\tSERVICE\tORG\tACCOUNT\tROUTE\tTOOL\tPOOL")
					for _, l := range limits {
						fmt.Fprintf(w, "%s\t%g\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Rate, l.Burst, l.Service, l.Org, l.Account, l.Route, l.Tool, l.Pool)
					}
					return w.Flush()
				},
			},
			removeCommand("limit", "/v1/limits/"),
		},
	}
}

// removeCommand deletes a rule or limit by id.
func removeCommand(what, path string) *cli.Command {
	return &cli.Command{
		Name:        "rm",
		Usage:       "remove a " + what,
		ArgsUsage:   "<id>",
		Description: fmt.Sprintf("Example:\n   mcpgw %s rm <id>     # ids: mcpgw %s list", what, what),
		Flags:       adminFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("mcpgw %s rm: want one id, got %d argument(s): see `mcpgw %s list` for ids", what, c.NArg(), what)
			}
			a, err := newAdminClient(c)
			if err != nil {
				return err
			}
			if err := a.Do(c.Context, "DELETE", path+url.PathEscape(c.Args().First()), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "%s %s removed\n", what, c.Args().First())
			return nil
		},
	}
}

// warnNoAllow warns when route (or, for "*", some route) has rules but
// none that allows: every call on it is then denied, which a lone deny
// rule does by surprise.
func warnNoAllow(w io.Writer, route string, rules []adminapi.Rule) {
	for _, r := range rules {
		if r.Effect == "allow" && (r.Route == "*" || r.Route == route) {
			return
		}
	}
	which := "route " + route
	if route == "*" {
		which = "every route"
	}
	fmt.Fprintf(w, "mcpgw: warning: %s now has rules and none allows, so every call on it is denied; "+
		"allow what should pass, e.g. `mcpgw rule add --id %s-allow --route %s --tool '*' --effect allow`\n", which, safeID(route), route)
}

// safeID turns a route name into a rule id prefix.
func safeID(route string) string {
	if route == "*" {
		return "all"
	}
	return route
}
