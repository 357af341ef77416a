package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

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
				Flags: append(adminFlags(), jsonFlag(), staleFlag()),
				Action: listAction("/v1/credentials", "ORG\tACCOUNT\tROUTE\tKIND\tKEY\tCREATED\tROTATED", func(i adminapi.CredentialInfo) []any {
					return []any{i.Org, i.Account, i.Route, i.Kind, i.KeyID, i.Created.Format("2006-01-02T15:04:05Z"), i.Rotated.Format("2006-01-02T15:04:05Z")}
				}),
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
				Usage: "make a new vault data key active on every node; the leader reseals every credential and signing key in the background and retires the old key (the key file is not touched)",
				Flags: append(adminFlags(),
					&cli.BoolFlag{Name: "wait-reseal", Usage: "return only once every record is resealed and the old data key retired"},
					&cli.DurationFlag{Name: "wait-timeout", Value: 10 * time.Minute, Usage: "give up waiting after this long"},
				),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var res adminapi.RotateResult
					if err := a.Do(c.Context, "POST", "/v1/vault/rotate", nil, &res); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "vault data key is now %s; decrypt-only: %s; %d records to reseal\n", res.KeyID, listOrNone(res.DecryptOnly), res.Pending)
					if !c.Bool("wait-reseal") {
						fmt.Fprintln(c.App.Writer, "Resealing runs in the background: follow it with `mcpgw vault status`.")
						return nil
					}
					deadline := time.Now().Add(c.Duration("wait-timeout"))
					for {
						var st adminapi.VaultStatus
						if err := a.Do(c.Context, "GET", "/v1/vault/status", nil, &st); err != nil {
							return err
						}
						if !st.Rotating {
							fmt.Fprintf(c.App.Writer, "all %d records sealed with %s; old data keys retired\n", st.Records, res.KeyID)
							return nil
						}
						if time.Now().After(deadline) {
							return fmt.Errorf("%d of %d records still wait for resealing after %v: check the leader's log, then follow it with `mcpgw vault status`", st.Pending, st.Records, c.Duration("wait-timeout"))
						}
						select {
						case <-c.Context.Done():
							return c.Context.Err()
						case <-time.After(500 * time.Millisecond):
						}
					}
				},
			},
			{
				Name:  "rotate-kek",
				Usage: "replace this node's key-encryption key (the vault key file) and re-wrap the keyring to it; --finish drops the old key once every node has the new file",
				Description: `Steps on a cluster:
   1. mcpgw vault rotate-kek --admin <node1>   (rewrites node1's key file: new key first, old kept)
   2. copy node1's key file to the same path on every other node (0600)
   3. mcpgw vault status --admin <each node>   (node_kek_ids lists the new key first)
   4. mcpgw vault rotate-kek --finish --admin <node1>
Until step 4 nodes with the old key file keep working.`,
				Flags: append(adminFlags(),
					&cli.BoolFlag{Name: "finish", Usage: "drop the wraps of every old key-encryption key, and the old keys from this node's key file"},
				),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					path := "/v1/vault/rotate-kek"
					if c.Bool("finish") {
						path += "?finish=true"
					}
					var res adminapi.KEKRotateResult
					if err := a.Do(c.Context, "POST", path, nil, &res); err != nil {
						return err
					}
					if res.Finished {
						fmt.Fprintf(c.App.Writer, "key-encryption key rotation finished: the keyring is wrapped to %s only\n", res.KEKID)
						return nil
					}
					fmt.Fprintf(c.App.Writer, "key-encryption key is now %s; the keyring is wrapped to %s\n"+
						"Copy this node's key file to every other node and back it up, then run `mcpgw vault rotate-kek --finish`.\n", res.KEKID, strings.Join(res.WrappedTo, ", "))
					return nil
				},
			},
			{
				Name:  "status",
				Usage: "show the vault keys: ids, state, what each seals, and resealing progress",
				Flags: append(adminFlags(),
					&cli.BoolFlag{Name: "json", Usage: "print the status as JSON"},
					staleFlag(),
				),
				Action: func(c *cli.Context) error {
					a, err := newAdminClient(c)
					if err != nil {
						return err
					}
					var st adminapi.VaultStatus
					if err := a.Do(c.Context, "GET", "/v1/vault/status", nil, &st); err != nil {
						return err
					}
					staleNotice(c, a)
					if c.Bool("json") {
						enc := json.NewEncoder(c.App.Writer)
						enc.SetIndent("", "  ")
						return enc.Encode(st)
					}
					fmt.Fprintf(c.App.Writer, "key-encryption keys in this node's key file: %s\n", listOrNone(st.NodeKEKs))
					if st.KeyFileError != "" {
						fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", st.KeyFileError)
					}
					fmt.Fprintf(c.App.Writer, "keyring wrapped to: %s\n", listOrNone(st.WrappedTo))
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "KEY\tSTATE\tCREDENTIALS\tSIGNING KEYS\tOAUTH FLOWS\tOAUTH CLIENTS\tWRAPPED TO\tON THIS NODE\tCREATED")
					for _, k := range st.Keys {
						created := "-"
						if !k.Created.IsZero() {
							created = k.Created.Format("2006-01-02T15:04:05Z")
						}
						fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%t\t%s\n", k.ID, k.State, k.Credentials, k.SigningKeys, k.OAuthFlows, k.OAuthClients, listOrNone(k.WrappedTo), k.Unwrapped, created)
					}
					if err := w.Flush(); err != nil {
						return err
					}
					if st.Rotating {
						fmt.Fprintf(c.App.Writer, "rotation in progress: %d of %d records resealed\n", st.Records-st.Pending, st.Records)
					} else {
						fmt.Fprintf(c.App.Writer, "all %d records sealed with the active data key\n", st.Records)
					}
					return nil
				},
			},
		},
	}
}

// listOrNone joins ids, or says none.
func listOrNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
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
