package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
)

// oauthClientCommand is `mcpgw oauth client`: clients registered at an
// authorization server by hand.
func oauthClientCommand() *cli.Command {
	return &cli.Command{
		Name:  "client",
		Usage: "manage OAuth clients registered for the gateway at authorization servers by hand",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "use a client you registered at an authorization server (the secret is read from stdin or a file, never the command line)",
				Description: `For authorization servers that cannot fetch the gateway's client metadata
document (air-gapped, or the gateway's public URL is internal) and offer no
dynamic registration. Register a client there with the redirect URI
<public-url>/oauth/callback, then give its id here; sign-in links for every
route whose server uses that authorization server use it.

Examples:
   mcpgw oauth client add --route linear --client-id mcpgw-prod --client-secret-stdin < secret.txt
   mcpgw oauth client add --issuer https://auth.example.com --client-id mcpgw --auth-method none`,
				Flags: append(adminFlags(), jsonFlag(),
					&cli.StringFlag{Name: "route", Usage: "route whose server's authorization server the client is for (discovered now)"},
					&cli.StringFlag{Name: "issuer", Usage: "the authorization server's issuer, exactly as its metadata says (instead of --route)"},
					&cli.StringFlag{Name: "client-id", Required: true, Usage: "the client id the authorization server issued"},
					&cli.BoolFlag{Name: "client-secret-stdin", Usage: "read the client secret from stdin"},
					&cli.StringFlag{Name: "client-secret-file", Usage: "read the client secret from this file"},
					&cli.StringFlag{Name: "auth-method", Usage: "token endpoint auth method: client_secret_basic, client_secret_post or none (default: chosen from what the server supports)"}),
				Action: func(c *cli.Context) error {
					if (c.String("route") == "") == (c.String("issuer") == "") {
						return fmt.Errorf("give one of --route and --issuer")
					}
					req := adminapi.OAuthClientRequest{Route: c.String("route"), Issuer: c.String("issuer"), ClientID: c.String("client-id"), AuthMethod: c.String("auth-method")}
					if c.Bool("client-secret-stdin") || c.String("client-secret-file") != "" {
						b, err := readSecret(c.App.ErrWriter, c.String("client-secret-file"))
						if err != nil {
							return fmt.Errorf("read the client secret: %w", err)
						}
						req.ClientSecret = strings.TrimRight(string(b), "\r\n")
					}
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					res, err := a.AddOAuthClient(c.Context, req)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return writeJSON(c, res)
					}
					secret := "no secret (public client)"
					if res.HasSecret {
						secret = "secret sealed in the vault"
					}
					fmt.Fprintf(c.App.Writer, "client %s used at %s (%s)\n", res.ClientID, res.Issuer, secret)
					return nil
				},
			},
		},
	}
}
