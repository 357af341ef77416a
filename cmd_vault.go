package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mcpgw/mcpgw/adminapi"
)

// maxSecretBytes bounds what vault put reads.
const maxSecretBytes = 64 << 10

func vaultCommand() *cli.Command {
	keyFlags := func() []cli.Flag {
		return append(adminFlags(),
			&cli.StringFlag{Name: "org", Required: true, Usage: "org the credential belongs to"},
			&cli.StringFlag{Name: "account", Required: true, Usage: "account within the org"},
			&cli.StringFlag{Name: "route", Required: true, Usage: "route the credential is injected into"},
		)
	}
	return &cli.Command{
		Name:  "vault",
		Usage: "manage sealed upstream credentials",
		Subcommands: []*cli.Command{
			{
				Name:  "put",
				Usage: "store or replace a credential; the secret is read from stdin or --file, never from the command line",
				Description: `Kinds and secret formats:
   bearer   the token
   headers  lines "Name: value" or a JSON object
   env      lines NAME=value or a JSON object (stdio routes)
   oauth    JSON {"access_token","refresh_token","token_type","expiry","scope"}

Example:
   printf %s "$TOKEN" | mcpgw vault put --org acme --account ci --route linear --kind bearer`,
				Flags: append(keyFlags(),
					&cli.StringFlag{Name: "kind", Value: "bearer", Usage: "bearer, headers, env or oauth"},
					&cli.StringFlag{Name: "file", Usage: "read the secret from this file instead of stdin"},
				),
				Action: func(c *cli.Context) error {
					secret, err := readSecret(c.App.ErrWriter, c.String("file"))
					if err != nil {
						return err
					}
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var info adminapi.CredentialInfo
					err = a.Do(c.Context, "PUT", "/v1/credentials", adminapi.PutCredentialRequest{
						Org: c.String("org"), Account: c.String("account"), Route: c.String("route"),
						Kind: c.String("kind"), Secret: string(secret),
					}, &info)
					clear(secret)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "credential %s for org %s, account %s, route %s sealed with key %s\n", info.Kind, info.Org, info.Account, info.Route, info.KeyID)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list credentials (ids, kinds and times; never values)",
				Flags: append(adminFlags(), jsonFlag()),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var infos []adminapi.CredentialInfo
					if err := a.Do(c.Context, "GET", "/v1/credentials", nil, &infos); err != nil {
						return err
					}
					if c.Bool("json") {
						return writeJSON(c, nonNilSlice(infos))
					}
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "ORG\tACCOUNT\tROUTE\tKIND\tKEY\tCREATED\tROTATED")
					for _, i := range infos {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.Org, i.Account, i.Route, i.Kind, i.KeyID, i.Created.Format("2006-01-02T15:04:05Z"), i.Rotated.Format("2006-01-02T15:04:05Z"))
					}
					return w.Flush()
				},
			},
			{
				Name:  "rm",
				Usage: "remove a credential",
				Flags: keyFlags(),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					q := url.Values{"org": {c.String("org")}, "account": {c.String("account")}, "route": {c.String("route")}}
					if err := a.Do(c.Context, "DELETE", "/v1/credentials?"+q.Encode(), nil, nil); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "credential removed")
					return nil
				},
			},
			{
				Name:  "rotate-key",
				Usage: "reseal every credential under a new vault key; the node rewrites its key file, keeping the old key as retired",
				Flags: adminFlags(),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var res adminapi.RotateResult
					if err := a.Do(c.Context, "POST", "/v1/vault/rotate", nil, &res); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "vault key is now %s; %d credentials resealed; retired keys: %s\nBack up the key file again.\n", res.KeyID, res.Resealed, strings.Join(res.RetiredIDs, ", "))
					return nil
				},
			},
		},
	}
}

// readSecret reads a secret from a file or from stdin, refusing an
// interactive terminal echo (use a pipe or --file).
func readSecret(prompt io.Writer, file string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	} else if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(prompt, "secret (not echoed, end with Enter): ")
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(prompt)
		return b, err
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecretBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecretBytes {
		return nil, fmt.Errorf("secret larger than %d bytes", maxSecretBytes)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("empty secret: pipe it on stdin or pass --file")
	}
	return b, nil
}
