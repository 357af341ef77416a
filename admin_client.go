package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

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

// adminClient calls a node's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func newAdminClient(c *cli.Context) (*adminClient, error) {
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
	return newAdminClientAt(c.String("admin"), tok, roots), nil
}

// newAdminClientAt returns a client of the admin API at base that trusts
// roots for https:// (nil: the system roots).
func newAdminClientAt(base, token string, roots *x509.CertPool) *adminClient {
	base = strings.TrimSuffix(base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	return &adminClient{base: base, token: token, http: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// unreachable explains a failed request to the admin API.
func (a *adminClient) unreachable(err error) error {
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		var hostErr x509.HostnameError
		if errors.As(verr.Err, &hostErr) {
			return fmt.Errorf("admin API %s: %v (use a host its certificate names, as issued by `mcpgw init --host`)", a.base, err)
		}
		return fmt.Errorf("admin API %s: %v (trust the cluster CA: --ca-file <data-dir>/tls/cluster/ca.crt of any node, or %s)", a.base, err, client.EnvCAFile)
	}
	return fmt.Errorf("admin API %s unreachable: %v (is `mcpgw serve` running? set --admin)", a.base, err)
}

// httpError explains an error status from the admin API.
func (a *adminClient) httpError(status int, data []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	if status == http.StatusBadRequest && bytes.Contains(data, []byte("HTTPS server")) {
		return fmt.Errorf("admin API %s serves HTTPS: use --admin https://%s", a.base, strings.TrimPrefix(a.base, "http://"))
	}
	return fmt.Errorf("admin API answered HTTP %d", status)
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

// do sends a request and decodes a JSON answer into out (if non-nil).
func (a *adminClient) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return a.unreachable(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return a.httpError(resp.StatusCode, data)
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// download streams the answer to GET path into w.
func (a *adminClient) download(path string, w io.Writer) (int64, error) {
	req, err := http.NewRequest(http.MethodGet, a.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	hc := *a.http
	hc.Timeout = 0 // a large state database takes as long as it takes
	resp, err := hc.Do(req)
	if err != nil {
		return 0, a.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, a.httpError(resp.StatusCode, data)
	}
	return io.Copy(w, resp.Body)
}
