package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/node"
)

// adminFlags are the flags of every command that talks to the admin API.
func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "admin", Value: "http://127.0.0.1:7422", EnvVars: []string{"MCPGW_ADMIN"}, Usage: "admin API URL of any node"},
		&cli.StringFlag{Name: "admin-token", EnvVars: []string{"MCPGW_ADMIN_TOKEN"}, Usage: "admin token (default: read from <data-dir>/admin.token)"},
		dataDirFlag(),
		caFileFlag(),
	}
}

// caFileFlag names the CA that https:// admin and gateway addresses are
// verified against.
func caFileFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "ca-file", EnvVars: []string{client.EnvCAFile},
		Usage: "PEM CA certificate to trust for https://, wss:// and quic:// addresses: the cluster CA, <data-dir>/tls/cluster/ca.crt on any node (default: that file when it exists here, and the system roots)"}
}

// cliRoots returns the CAs a command trusts: the system roots and
// --ca-file, or else the cluster CA of --data-dir when this host has one.
func cliRoots(c *cli.Context) (*x509.CertPool, error) {
	path := c.String("ca-file")
	explicit := path != ""
	if !explicit {
		path = filepath.Join(node.DefaultClusterTLSDir(c.String("data-dir")), cluster.CACertFile)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	data, err := os.ReadFile(path)
	switch {
	case err != nil && explicit:
		return nil, fmt.Errorf("--ca-file %s: %w", path, err)
	case err != nil:
		return pool, nil
	case !pool.AppendCertsFromPEM(data):
		return nil, fmt.Errorf("--ca-file %s holds no PEM certificate: name the cluster CA, <data-dir>/tls/cluster/ca.crt on any node", path)
	}
	return pool, nil
}

// newAdminClient returns a client of the admin API at --admin, with the
// admin token of --admin-token or of --data-dir.
func newAdminClient(c *cli.Context) (*adminapi.Client, error) {
	tok := c.String("admin-token")
	if tok == "" {
		var err error
		if tok, err = readAdminToken(c.String("data-dir")); err != nil {
			return nil, err
		}
	}
	roots, err := cliRoots(c)
	if err != nil {
		return nil, err
	}
	return adminapi.NewClient(c.String("admin"), tok, &adminapi.ClientOptions{Roots: roots}), nil
}

// readAdminToken reads the admin token a node keeps in its data dir.
func readAdminToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, node.AdminTokenFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("no admin token: pass --admin-token or MCPGW_ADMIN_TOKEN, or run where %s exists (%v)", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}
