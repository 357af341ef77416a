package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mcpgw/mcpgw/vault"
)

// Vault key flags and their environment variables.
const (
	envVaultKey        = "MCPGW_VAULT_KEY"
	envVaultPassphrase = "MCPGW_VAULT_PASSPHRASE"
	defaultVaultKey    = "./vault.key"
)

func vaultKeyFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "vault-key", Value: defaultVaultKey, EnvVars: []string{envVaultKey},
		Usage: "vault key file (age X25519 identity, 0600); keep it outside the data dir and back it up"}
}

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create this node's vault key file",
		Flags: []cli.Flag{
			vaultKeyFlag(),
			&cli.BoolFlag{Name: "passphrase", Usage: "wrap the key with a passphrase (age scrypt) read from " + envVaultPassphrase + " or a prompt"},
		},
		Action: func(c *cli.Context) error {
			path := c.String("vault-key")
			id, err := vault.GenerateIdentity()
			if err != nil {
				return err
			}
			if c.Bool("passphrase") {
				pass, err := readPassphrase(true)
				if err != nil {
					return err
				}
				err = vault.WriteKeyFilePassphrase(path, id, pass)
				clear(pass)
				if err != nil {
					return err
				}
			} else if err := vault.WriteKeyFile(path, id); err != nil {
				return err
			}
			abs, _ := filepath.Abs(path)
			fmt.Printf("vault key %s written to %s\nBack this file up: without it the stored credentials cannot be decrypted.\n", id.ID(), abs)
			return nil
		},
	}
}

// readPassphrase reads the vault passphrase from the environment or, on a
// terminal, a prompt (twice when confirm is set).
func readPassphrase(confirm bool) ([]byte, error) {
	if p, ok := os.LookupEnv(envVaultPassphrase); ok {
		if p == "" {
			return nil, fmt.Errorf("%s is set but empty", envVaultPassphrase)
		}
		return []byte(p), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, fmt.Errorf("the vault key is passphrase-protected: set %s or run on a terminal to be prompted", envVaultPassphrase)
	}
	fmt.Fprint(os.Stderr, "vault passphrase: ")
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, err
	}
	if confirm {
		fmt.Fprint(os.Stderr, "again: ")
		q, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, err
		}
		same := string(p) == string(q)
		clear(q)
		if !same {
			clear(p)
			return nil, errors.New("passphrases differ")
		}
	}
	if len(p) == 0 {
		return nil, errors.New("empty passphrase")
	}
	return p, nil
}

// loadVaultKeys loads the key file for serve. A missing file on a node with
// no credentials yet is created, with a warning to back it up, so that
// `mcpgw serve` works with no flags; a missing file next to existing data is
// an error, since a new key could not read what the old one sealed.
func loadVaultKeys(path string, dataExists bool, logger *slog.Logger) (keys *vault.Keys, passphrase []byte, err error) {
	var pass []byte
	askPass := func() ([]byte, error) {
		p, err := readPassphrase(false)
		if err == nil {
			pass = append([]byte(nil), p...)
		}
		return p, err
	}
	keys, err = vault.LoadKeys(path, askPass)
	if errors.Is(err, vault.ErrKeyFileMissing) && !dataExists {
		id, gerr := vault.GenerateIdentity()
		if gerr != nil {
			return nil, nil, gerr
		}
		if werr := vault.WriteKeyFile(path, id); werr != nil {
			return nil, nil, werr
		}
		abs, _ := filepath.Abs(path)
		logger.Warn("created a new vault key; back it up, without it stored credentials cannot be decrypted", slog.String("path", abs), slog.String("key_id", id.ID()))
		return vault.NewKeys(id), nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("vault key %s: %w", path, err)
	}
	return keys, pass, nil
}
