package main

import (
	"bytes"
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

	"github.com/mcpgw/mcpgw/node"
)

// adminFlags are the flags of every command that talks to the admin API.
func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "admin", Value: "http://127.0.0.1:7422", EnvVars: []string{"MCPGW_ADMIN"}, Usage: "admin API URL of any node"},
		&cli.StringFlag{Name: "admin-token", EnvVars: []string{"MCPGW_ADMIN_TOKEN"}, Usage: "admin token (default: read from <data-dir>/admin.token)"},
		dataDirFlag(),
	}
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
	return newAdminClientAt(c.String("admin"), tok), nil
}

// newAdminClientAt returns a client of the admin API at base.
func newAdminClientAt(base, token string) *adminClient {
	base = strings.TrimSuffix(base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &adminClient{base: base, token: token, http: &http.Client{Timeout: 30 * time.Second}}
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
		return fmt.Errorf("admin API %s unreachable: %v (is `mcpgw serve` running? set --admin)", a.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("admin API answered HTTP %d", resp.StatusCode)
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
		return 0, fmt.Errorf("admin API %s unreachable: %v (is `mcpgw serve` running? set --admin)", a.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return 0, errors.New(e.Error)
		}
		return 0, fmt.Errorf("admin API answered HTTP %d", resp.StatusCode)
	}
	return io.Copy(w, resp.Body)
}
