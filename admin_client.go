package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/node"
)

// adminFlags are the flags of every command that talks to the admin API.
func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "admin", Value: cli.NewStringSlice("http://127.0.0.1:7422"), EnvVars: []string{envAdmin},
			Usage: "admin API URL of a node; several (repeated or comma-separated) are tried in turn when one is down"},
		&cli.StringFlag{Name: "admin-token", EnvVars: []string{"MCPGW_ADMIN_TOKEN"}, Usage: "admin token (default: read from <data-dir>/admin.token)"},
		dataDirFlag(),
		caFileFlag(),
		waitFlag(),
	}
}

// envAdmin names the admin API's address: where serve listens and where
// the other commands reach it. envAdminDeprecated is its old name for
// serve, still read.
const (
	envAdmin           = "MCPGW_ADMIN"
	envAdminDeprecated = "MCPGW_ADMIN_ADDR"
)

// waitFlag bounds how long an admin command waits for a node that is
// starting: one whose admin listener refuses connections, or whose data
// dir has no admin token yet.
func waitFlag() *cli.DurationFlag {
	return &cli.DurationFlag{Name: "wait", Value: 10 * time.Second, EnvVars: []string{"MCPGW_WAIT"},
		Usage: "how long to wait for a node that is still starting (0: fail at once)"}
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
	addrs := strings.Join(splitList(c.StringSlice("admin")), ",")
	notice := waitNotice(c)
	tok := c.String("admin-token")
	if tok == "" {
		var err error
		if tok, err = waitAdminToken(background(c), c.String("data-dir"), addrs, c.Duration("wait"), func() { notice(addrs) }); err != nil {
			return nil, err
		}
	}
	roots, err := cliRoots(c)
	if err != nil {
		return nil, err
	}
	return adminapi.NewClient(addrs, tok, &adminapi.ClientOptions{Roots: roots, StartWait: c.Duration("wait"), Waiting: notice, Stale: c.Bool("stale")}), nil
}

// staleFlag is the flag of read commands that accept a node's local copy
// when it cannot confirm the copy is current.
func staleFlag() cli.Flag {
	return &cli.BoolFlag{Name: "stale", Usage: "answer from the node's local copy without checking with the leader that it is current: works on a node cut off from the majority, but may miss recent writes"}
}

// staleNotice says on stderr that an answer came from a local copy.
func staleNotice(c *cli.Context, a *adminapi.Client) {
	if a.AnsweredStale() {
		fmt.Fprintf(c.App.ErrWriter, "mcpgw: --stale: %s answered from its local copy, which may miss recent writes\n", a.Base())
	}
}

// waitNotice returns a function that prints, once, that the command waits
// for a node.
func waitNotice(c *cli.Context) func(addr string) {
	var once sync.Once
	return func(addr string) {
		once.Do(func() {
			fmt.Fprintf(c.App.ErrWriter, "mcpgw: waiting for the node at %s to start (up to %s, --wait)\n", addr, c.Duration("wait"))
		})
	}
}

// waitAdminToken reads the admin token of dataDir, waiting up to wait for
// a node that is starting to write it: one whose data dir exists, or whose
// admin address (one of addrs) accepts no connection yet. A node that
// answers while the file is missing was started with another data dir:
// that fails at once.
func waitAdminToken(ctx context.Context, dataDir, addrs string, wait time.Duration, waiting func()) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		tok, err := readAdminToken(dataDir)
		if err == nil && tok == "" {
			err = fmt.Errorf("no admin token: %s is empty (a node still writing it?): pass --admin-token or MCPGW_ADMIN_TOKEN", filepath.Join(dataDir, node.AdminTokenFile))
		}
		if err == nil || time.Now().After(deadline) {
			return tok, err
		}
		if _, serr := os.Stat(dataDir); serr != nil && anyListening(addrs) {
			return tok, err
		}
		waiting()
		select { // a retry interval: the node gives no signal when it writes the file
		case <-ctx.Done():
			return "", err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// anyListening reports whether one of the comma-separated admin
// addresses accepts a TCP connection.
func anyListening(addrs string) bool {
	for _, a := range strings.Split(addrs, ",") {
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		u, err := url.Parse(strings.TrimSpace(a))
		if err != nil || u.Host == "" {
			continue
		}
		host := u.Host
		if u.Port() == "" {
			port := "80"
			if u.Scheme == "https" {
				port = "443"
			}
			host = net.JoinHostPort(u.Hostname(), port)
		}
		if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
			c.Close()
			return true
		}
	}
	return false
}

// serveAdminAddr is the admin listen address of serve. MCPGW_ADMIN is also
// what the other commands dial, so a URL form is accepted; its old name
// is read with a warning.
func serveAdminAddr(c *cli.Context, logger *slog.Logger) (string, error) {
	if _, ok := os.LookupEnv(envAdminDeprecated); ok {
		if _, ok := os.LookupEnv(envAdmin); !ok {
			logger.Warn(envAdminDeprecated + " is deprecated: set " + envAdmin + " instead")
		}
	}
	v := strings.TrimSpace(c.String("admin"))
	if strings.Contains(v, ",") {
		return "", fmt.Errorf("--admin %q lists several addresses (as %s may, for the other commands): serve listens on one, pass it with --admin", v, envAdmin)
	}
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("--admin %q: use host:port (or a URL like http://127.0.0.1:7422)", v)
		}
		v = u.Host
	}
	return v, nil
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

// listAction is the action of a `list` subcommand: it GETs the items at
// path from the admin API and prints them as JSON with --json, otherwise as
// a table with header (tab-separated) and one row of cells per item.
func listAction[T any](path, header string, row func(T) []any) cli.ActionFunc {
	return func(c *cli.Context) error {
		a, err := newAdminClient(c)
		if err != nil {
			return err
		}
		var items []T
		if err := a.Do(c.Context, "GET", path, nil, &items); err != nil {
			return err
		}
		staleNotice(c, a)
		if c.Bool("json") {
			return writeJSON(c, nonNilSlice(items))
		}
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, header)
		for _, it := range items {
			cells := row(it)
			for i, cell := range cells {
				if i > 0 {
					fmt.Fprint(w, "\t")
				}
				fmt.Fprint(w, cell)
			}
			fmt.Fprintln(w)
		}
		return w.Flush()
	}
}
