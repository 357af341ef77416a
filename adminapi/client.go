package adminapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// envCAFile is client.EnvCAFile, the variable naming the CA to trust. It
// is not imported: the client package's tests start nodes, which import
// this package.
const envCAFile = "MCPGW_CA_FILE"

// Client calls a node's admin API.
type Client struct {
	base  string
	token string
	http  *http.Client
	// seen is the highest IndexHeader answered, sent back as
	// MinIndexHeader so each request sees the state earlier ones did.
	seen atomic.Uint64
}

// ClientOptions tune a Client. The zero value is valid.
type ClientOptions struct {
	// Roots are the CAs https:// answers are verified against. Default:
	// the system roots.
	Roots *x509.CertPool
	// Timeout bounds each request but downloads. Default: 30s.
	Timeout time.Duration
}

// NewClient returns a client of the admin API at base (a URL, or host:port
// meaning http://) that sends token.
func NewClient(base, token string, opts *ClientOptions) *Client {
	var o ClientOptions
	if opts != nil {
		o = *opts
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	base = strings.TrimSuffix(base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: o.Roots, MinVersion: tls.VersionTLS12}}
	return &Client{base: base, token: token, http: &http.Client{Timeout: o.Timeout, Transport: tr}}
}

// Base returns the API's base URL.
func (a *Client) Base() string { return a.base }

// unreachable explains a failed request to the admin API.
func (a *Client) unreachable(err error) error {
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		var hostErr x509.HostnameError
		if errors.As(verr.Err, &hostErr) {
			return fmt.Errorf("admin API %s: %v (use a host its certificate names, as issued by `mcpgw init --host`)", a.base, err)
		}
		return fmt.Errorf("admin API %s: %v (trust the cluster CA: --ca-file <data-dir>/tls/cluster/ca.crt of any node, or %s)", a.base, err, envCAFile)
	}
	return fmt.Errorf("admin API %s unreachable: %v (is `mcpgw serve` running? set --admin)", a.base, err)
}

// StatusError is an error answer of the admin API.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// httpError explains an error status from the admin API: the message of
// its ErrorBody, or what the status and body suggest.
func (a *Client) httpError(status int, data []byte) error {
	var e ErrorBody
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &StatusError{Status: status, Message: e.Error}
	}
	if status == http.StatusBadRequest && bytes.Contains(data, []byte("HTTPS server")) {
		return &StatusError{Status: status, Message: fmt.Sprintf("admin API %s serves HTTPS: use --admin https://%s", a.base, strings.TrimPrefix(a.base, "http://"))}
	}
	return &StatusError{Status: status, Message: fmt.Sprintf("admin API answered HTTP %d", status)}
}

// Do sends a request with in (if non-nil) as its JSON body and decodes a
// JSON answer into out (if non-nil).
func (a *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	a.sendSeen(req)
	resp, err := a.http.Do(req)
	if err != nil {
		return a.unreachable(err)
	}
	defer resp.Body.Close()
	a.noteSeen(resp)
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

// Download streams the answer to GET path into w.
func (a *Client) Download(ctx context.Context, path string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	a.sendSeen(req)
	hc := *a.http
	hc.Timeout = 0 // a large state database takes as long as it takes
	resp, err := hc.Do(req)
	if err != nil {
		return 0, a.unreachable(err)
	}
	defer resp.Body.Close()
	a.noteSeen(resp)
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, a.httpError(resp.StatusCode, data)
	}
	return io.Copy(w, resp.Body)
}

// Index returns the highest raft index an answer of this client's
// reflected.
func (a *Client) Index() uint64 { return a.seen.Load() }

func (a *Client) sendSeen(req *http.Request) {
	if n := a.seen.Load(); n > 0 {
		req.Header.Set(MinIndexHeader, strconv.FormatUint(n, 10))
	}
}

func (a *Client) noteSeen(resp *http.Response) {
	n, err := strconv.ParseUint(resp.Header.Get(IndexHeader), 10, 64)
	if err != nil {
		return
	}
	for {
		old := a.seen.Load()
		if n <= old || a.seen.CompareAndSwap(old, n) {
			return
		}
	}
}
