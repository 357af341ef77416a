package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/node"
	"github.com/mcpgw/mcpgw/storage"
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
		Usage: "create this node's vault key, cluster CA and node certificate (or, with --ca-from, a certificate for a node joining a cluster)",
		Description: `Without --ca-from: creates the vault key file and a new cluster CA with a
certificate for this node: the first node of a cluster.

With --ca-from <bundle>: issues this node's certificate from the cluster CA in
a join bundle (mcpgw cluster bundle on the first node). No vault key is created:
copy vault.key from a member yourself; every node must hold the same one. The
bundle holds the CA key: delete it once this command succeeds.`,
		Flags: []cli.Flag{
			vaultKeyFlag(),
			dataDirFlag(),
			nodeIDFlag(),
			&cli.StringFlag{Name: "raft-advertise", EnvVars: []string{"MCPGW_RAFT_ADVERTISE"}, Value: "127.0.0.1",
				Usage: "host (or host:port) other nodes dial to reach this node's raft listener; the certificate names it"},
			&cli.StringSliceFlag{Name: "host", EnvVars: []string{"MCPGW_CERT_HOSTS"},
				Usage: "another host (IP or DNS name) clients dial to reach this node's session, admin or QUIC listener, named in the certificate too (repeatable)"},
			&cli.StringFlag{Name: "tls-dir", EnvVars: []string{"MCPGW_CLUSTER_TLS_DIR"}, Usage: "where to write the cluster certificates (default <data-dir>/tls/cluster, what serve reads)"},
			&cli.StringFlag{Name: "ca-from", Usage: "join bundle of an existing cluster: issue this node's certificate from its CA"},
			&cli.BoolFlag{Name: "passphrase", Usage: "wrap the key with a passphrase (age scrypt) read from " + envVaultPassphrase + " or a prompt"},
		},
		Action: runInit,
	}
}

func runInit(c *cli.Context) (err error) {
	dataDir := c.String("data-dir")
	if c.String("ca-from") == "" {
		if err := refuseNewKeyOverState(c.String("vault-key"), dataDir); err != nil {
			return err
		}
	}
	tlsDir := c.String("tls-dir")
	if tlsDir == "" {
		tlsDir = node.DefaultClusterTLSDir(dataDir)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	id, err := cluster.LoadNodeID(dataDir, c.String("node-id"))
	if err != nil {
		return err
	}
	host := c.String("raft-advertise")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		return errors.New("--raft-advertise: name the host other nodes dial to reach this one")
	}
	hosts := []string{host}
	for _, h := range splitList(c.StringSlice("host")) {
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if _, err := os.Stat(filepath.Join(tlsDir, cluster.NodeCertFile)); err == nil {
		return fmt.Errorf("%s already holds a node certificate; delete %s to issue a new one", tlsDir, tlsDir)
	}
	// init is all or nothing: whatever can fail (the passphrase above
	// all) is asked before anything is written, and the certificates this
	// run wrote are removed if a later step fails, so a retry starts clean.
	path := c.String("vault-key")
	_, statErr := os.Stat(path)
	newKey := c.String("ca-from") == "" && statErr != nil
	var pass []byte
	if newKey && c.Bool("passphrase") {
		if pass, err = readPassphrase(c.App.ErrWriter, true); err != nil {
			return fmt.Errorf("%w; nothing was written", err)
		}
		defer clear(pass)
	}
	_, tlsDirErr := os.Stat(tlsDir)
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return fmt.Errorf("create TLS dir: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		if tlsDirErr != nil {
			os.RemoveAll(tlsDir)
			return
		}
		for _, f := range []string{cluster.CACertFile, cluster.CAKeyFile, cluster.NodeCertFile, cluster.NodeKeyFile} {
			os.Remove(filepath.Join(tlsDir, f))
		}
	}()

	if bundle := c.String("ca-from"); bundle != "" {
		ca, err := cluster.ReadJoinBundle(bundle)
		if err != nil {
			return err
		}
		if err := cluster.IssueNodeCert(ca, tlsDir, id, hosts); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "node %s: certificate for %s issued by the cluster CA into %s\n", id, strings.Join(hosts, ", "), tlsDir)
		fmt.Fprintf(c.App.Writer, "Now delete %s (it holds the cluster CA key).\n", bundle)
		if _, err := os.Stat(c.String("vault-key")); err != nil {
			fmt.Fprintf(c.App.Writer, "Copy vault.key from a member to %s (every node needs the same vault key; never send it over the network unprotected).\n", c.String("vault-key"))
		}
		fmt.Fprintf(c.App.Writer, "Then start with: mcpgw serve --data-dir %s --raft-advertise %s:<port> --join <member raft address>\n", dataDir, host)
		return nil
	}

	if err := node.CreateClusterTLS(tlsDir, id, hosts); err != nil {
		return err
	}
	if !newKey {
		fmt.Fprintf(c.App.Writer, "node %s: cluster CA and node certificate for %s written to %s\n", id, strings.Join(hosts, ", "), tlsDir)
		fmt.Fprintf(c.App.Writer, "vault key %s exists already: kept\n", path)
		return nil
	}
	vid, err := vault.GenerateIdentity()
	if err != nil {
		return err
	}
	if pass != nil {
		err = vault.WriteKeyFilePassphrase(path, vid, pass)
	} else {
		err = vault.WriteKeyFile(path, vid)
	}
	if err != nil {
		return fmt.Errorf("%w; the certificates were removed: fix this and run init again", err)
	}
	fmt.Fprintf(c.App.Writer, "node %s: cluster CA and node certificate for %s written to %s\n", id, strings.Join(hosts, ", "), tlsDir)
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(c.App.Writer, "vault key %s written to %s\nBack this file up: without it the stored credentials cannot be decrypted.\n", vid.ID(), abs)
	return nil
}

// readPassphrase reads the vault passphrase from the environment or, on a
// terminal, a prompt (twice when confirm is set).
func readPassphrase(prompt io.Writer, confirm bool) ([]byte, error) {
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
	fmt.Fprint(prompt, "vault passphrase: ")
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt)
	if err != nil {
		return nil, err
	}
	if confirm {
		fmt.Fprint(prompt, "again: ")
		q, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
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
func loadVaultKeys(prompt io.Writer, path, dataDir string, logger *slog.Logger) (keys *vault.Keys, passphrase []byte, err error) {
	sealedWith, err := node.SealingKeyIDs(dataDir)
	if err != nil {
		return nil, nil, err
	}
	_, statErr := os.Stat(filepath.Join(dataDir, storage.StateFile))
	dataExists := statErr == nil
	var pass []byte
	askPass := func() ([]byte, error) {
		p, err := readPassphrase(prompt, false)
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
	if errors.Is(err, vault.ErrKeyFileMissing) && len(sealedWith) > 0 {
		return nil, nil, missingKeyError(path, dataDir, sealedWith)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("vault key %s: %w", path, err)
	}
	return keys, pass, nil
}

// refuseNewKeyOverState refuses to mint a vault key for a data dir that
// holds state already: the new key could not open it.
func refuseNewKeyOverState(keyFile, dataDir string) error {
	if _, err := os.Stat(keyFile); err == nil {
		return nil
	}
	sealedWith, err := node.SealingKeyIDs(dataDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dataDir, storage.StateFile)); err != nil {
		return nil
	}
	if len(sealedWith) == 0 {
		return fmt.Errorf("data dir %s already holds state, and vault key file %s is missing: refusing to mint a new vault key over it; restore the key file from your backup or copy it from another node, or move the data dir away to start afresh", dataDir, keyFile)
	}
	return missingKeyError(keyFile, dataDir, sealedWith)
}

// missingKeyError says which vault key sealed the data and where to put it.
func missingKeyError(keyFile, dataDir string, sealedWith []string) error {
	abs, _ := filepath.Abs(keyFile)
	return fmt.Errorf("vault key file %s not found, and the data in %s is sealed with vault key %s: restore the key file holding key %s (its first lines read \"# key id: %s\") from your backup, or copy it from another node of the cluster, to %s (mode 0600), or pass --vault-key with its path; do not run `mcpgw init` here, a new key cannot open this data",
		keyFile, dataDir, strings.Join(sealedWith, " or "), sealedWith[0], sealedWith[0], abs)
}
