package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
)

func oauthCommand() *cli.Command {
	target := func() []cli.Flag {
		return append(adminFlags(),
			&cli.StringFlag{Name: "org", Required: true, Usage: "org the account belongs to"},
			&cli.StringFlag{Name: "account", Required: true, Usage: "account within the org"},
			&cli.StringFlag{Name: "route", Required: true, Usage: "route of the OAuth-protected MCP server"},
		)
	}
	return &cli.Command{
		Name:  "oauth",
		Usage: "connect accounts to OAuth-protected MCP servers",
		Subcommands: []*cli.Command{
			oauthClientCommand(),
			{
				Name:  "url",
				Usage: "print a sign-in link for an account; whoever opens it and approves connects the account",
				Description: `The gateway needs --public-url (where browsers reach its session listener).
The link is valid once, for a few minutes.

Example:
   mcpgw oauth url --org acme --account alice --route linear`,
				Flags: append(target(), jsonFlag(),
					&cli.StringSliceFlag{Name: "scope", Usage: "scopes to ask for instead of the server's suggestion (repeat or comma-separate)"}),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					res, err := a.AuthorizationURL(c.Context, adminapi.OAuthURLRequest{Org: c.String("org"), Account: c.String("account"),
						Route: c.String("route"), Scopes: splitList(c.StringSlice("scope"))})
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return writeJSON(c, res)
					}
					fmt.Fprintln(c.App.Writer, res.URL)
					fmt.Fprintf(c.App.ErrWriter, "open it in a browser and approve at %s before %s\n", res.Issuer, res.Expires.Local().Format(time.Kitchen))
					return nil
				},
			},
			{
				Name:      "complete",
				Usage:     "finish a sign-in by hand with the address the browser was sent back to",
				ArgsUsage: "CALLBACK-URL",
				Description: `For a browser that could not reach the gateway's callback: pass the whole
address it was sent to (or its query string), or --state and --code.`,
				Flags: append(adminFlags(), jsonFlag(),
					&cli.StringFlag{Name: "state", Usage: "the callback's state parameter"},
					&cli.StringFlag{Name: "code", Usage: "the callback's code parameter"}),
				Action: func(c *cli.Context) error {
					req := adminapi.OAuthCompleteRequest{State: c.String("state"), Code: c.String("code")}
					if arg := c.Args().First(); arg != "" {
						if u, err := url.Parse(arg); err == nil && u.RawQuery != "" {
							req.Query = u.RawQuery
						} else {
							req.Query = strings.TrimPrefix(arg, "?")
						}
					}
					if req.Query == "" && (req.State == "" || req.Code == "") {
						return fmt.Errorf("give the callback address, or --state and --code")
					}
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					res, err := a.CompleteOAuth(c.Context, req)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return writeJSON(c, res)
					}
					fmt.Fprintf(c.App.Writer, "account %s of org %s connected to route %s (issuer %s)\n", res.Account, res.Org, res.Route, res.Issuer)
					return nil
				},
			},
			{
				Name:  "status",
				Usage: "show whether an account is connected (never the token)",
				Flags: append(target(), jsonFlag()),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					st, err := a.OAuthStatus(c.Context, c.String("org"), c.String("account"), c.String("route"))
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return writeJSON(c, st)
					}
					w := c.App.Writer
					fmt.Fprintf(w, "state:        %s\n", st.State)
					if st.Reason != "" {
						fmt.Fprintf(w, "reason:       %s\n", st.Reason)
					}
					if st.Kind != "" {
						fmt.Fprintf(w, "credential:   %s (not oauth)\n", st.Kind)
					}
					if st.Issuer != "" {
						fmt.Fprintf(w, "issuer:       %s\n", st.Issuer)
					}
					if !st.Expires.IsZero() {
						fmt.Fprintf(w, "expires:      %s\n", st.Expires.Format(time.RFC3339))
					}
					if len(st.Scopes) > 0 {
						fmt.Fprintf(w, "scopes:       %s\n", strings.Join(st.Scopes, " "))
					}
					if st.State == "connected" && st.Kind == "" {
						fmt.Fprintf(w, "refreshable:  %v\n", st.Refreshable)
					}
					return nil
				},
			},
			{
				Name:  "revoke",
				Usage: "delete an account's OAuth credential for a route; its next session needs a new sign-in",
				Flags: target(),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					if err := a.RevokeOAuth(c.Context, c.String("org"), c.String("account"), c.String("route")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "oauth credential of org %s, account %s, route %s deleted\n", c.String("org"), c.String("account"), c.String("route"))
					return nil
				},
			},
		},
	}
}
