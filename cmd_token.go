package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "issue, list and revoke service tokens",
		Subcommands: []*cli.Command{
			{
				Name:        "issue",
				Usage:       "issue a service token (printed once, on stdout)",
				Description: "Example:\n   mcpgw token issue --service billing-agent --org acme --ttl 24h",
				Flags: append(adminFlags(),
					&cli.StringFlag{Name: "service", Required: true, Usage: "name of the service the token identifies"},
					&cli.StringSliceFlag{Name: "org", Required: true, Usage: "org the service may act for (repeatable; * for any)"},
					&cli.StringFlag{Name: "ttl", Value: "720h", Usage: "lifetime, at most 720h"},
				),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var tok adminapi.IssuedToken
					if err := a.Do(c.Context, "POST", "/v1/tokens", adminapi.IssueTokenRequest{Service: c.String("service"), Orgs: splitList(c.StringSlice("org")), TTL: c.String("ttl")}, &tok); err != nil {
						return err
					}
					fmt.Fprintf(c.App.ErrWriter, "token %s for service %s, orgs %s, expires %s\n", tok.ID, tok.Service, strings.Join(tok.Orgs, ","), tok.ExpiresAt.Format("2006-01-02T15:04:05Z"))
					fmt.Fprintln(c.App.Writer, tok.Token)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list issued tokens (ids and claims; never the tokens)",
				Flags: append(adminFlags(), jsonFlag(), staleFlag()),
				Action: listAction("/v1/tokens", "ID\tSERVICE\tORGS\tISSUED\tEXPIRES\tREVOKED", func(t adminapi.TokenInfo) []any {
					return []any{t.ID, t.Service, strings.Join(t.Orgs, ","), t.IssuedAt.Format("2006-01-02T15:04:05Z"), t.ExpiresAt.Format("2006-01-02T15:04:05Z"), t.Revoked}
				}),
			},
			{
				Name:        "revoke",
				Usage:       "revoke a token on every node",
				ArgsUsage:   "<token id>",
				Description: "Example:\n   mcpgw token revoke <id>     # ids: mcpgw token list",
				Flags:       adminFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usagef("mcpgw token revoke: want one token id, got %d argument(s) (ids: mcpgw token list)", c.NArg())
					}
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					if err := a.Do(c.Context, "POST", "/v1/tokens/"+url.PathEscape(c.Args().First())+"/revoke", nil, nil); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "token %s revoked\n", c.Args().First())
					return nil
				},
			},
			{
				Name:  "rotate-key",
				Usage: "start signing with a new key; tokens signed by the old one stay valid until they expire",
				Flags: adminFlags(),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var res adminapi.TokenKeyRotated
					if err := a.Do(c.Context, "POST", "/v1/token-keys/rotate", nil, &res); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "signing key is now %s\n", res.KeyID)
					return nil
				},
			},
		},
	}
}
