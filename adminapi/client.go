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
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// envCAFile is client.EnvCAFile, the variable naming the CA to trust. It
// is not imported: the client package's tests start nodes, which import
// this package.
const envCAFile = "MCPGW_CA_FILE"

// Client calls a node's admin API. Given several addresses, it sends each
// request to the one that last answered and moves on to the next when a
// connection cannot be opened (refused, timed out, no route), or when the
// node refuses the request because it cannot confirm its copy is current
// (ConsistencyUnconfirmed: it knows no leader): either way the request
// did nothing there, so trying another is safe even for writes.
type Client struct {
	bases     []string
	preferred atomic.Int32 // index into bases of the last address that answered
	token     string
	http      *http.Client
	startWait time.Duration
	waiting   func(base string)
	waitOnce  sync.Once
	// seen is the highest IndexHeader answered, sent back as
	// MinIndexHeader so each request sees the state earlier ones did.
	// Raft indexes are cluster-wide, so it holds whichever node answers.
	seen atomic.Uint64
	// stale asks reads for the answering node's local copy.
	stale bool
	// lastStale records whether the latest answer was a local read.
	lastStale atomic.Bool
}

// ClientOptions tune a Client. The zero value is valid.
type ClientOptions struct {
	// Roots are the CAs https:// answers are verified against. Default:
	// the system roots.
	Roots *x509.CertPool
	// Timeout bounds each request but downloads. Default: 30s.
	Timeout time.Duration
	// StartWait is how long a request keeps retrying while no address
	// accepts a connection, as when the node is still starting. Default:
	// 0, fail at once.
	StartWait time.Duration
	// Waiting, if set, is called once, when a request starts waiting.
	Waiting func(base string)
	// Stale makes every GET ask for the answering node's local copy as
	// it is (ConsistencyHeader: ConsistencyStale), without the read
	// barrier: it answers on a node cut off from the leader, and may miss
	// recent writes. Default false: reads reflect every acknowledged write
	// or are refused.
	Stale bool
}

// NewClient returns a client of the admin API at base (a URL, or host:port
// meaning http://; several comma-separated, of nodes of one cluster) that
// sends token.
func NewClient(base, token string, opts *ClientOptions) *Client {
	var o ClientOptions
	if opts != nil {
		o = *opts
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	var bases []string
	for _, b := range strings.Split(base, ",") {
		if b = strings.TrimSuffix(strings.TrimSpace(b), "/"); b == "" {
			continue
		}
		if !strings.Contains(b, "://") {
			b = "http://" + b
		}
		bases = append(bases, b)
	}
	if len(bases) == 0 {
		bases = []string{"http://127.0.0.1:7422"}
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: o.Roots, MinVersion: tls.VersionTLS12}}
	return &Client{bases: bases, token: token, http: &http.Client{Timeout: o.Timeout, Transport: tr}, startWait: o.StartWait, waiting: o.Waiting, stale: o.Stale}
}

// Base returns the base URL of the address the client uses now.
func (a *Client) Base() string { return a.bases[a.preferred.Load()] }

// unreachable explains a failed request to the admin API at base.
func (a *Client) unreachable(base string, err error) error {
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		var hostErr x509.HostnameError
		if errors.As(verr.Err, &hostErr) {
			return fmt.Errorf("admin API %s: %v (use a host its certificate names, as issued by `mcpgw init --host`)", base, verr)
		}
		return fmt.Errorf("admin API %s: %v (trust the cluster CA: --ca-file <data-dir>/tls/cluster/ca.crt of any node, or %s)", base, verr, envCAFile)
	}
	where := base
	if len(a.bases) > 1 {
		where = strings.Join(a.bases, ", ")
	}
	return fmt.Errorf("admin API unreachable at %s: %v (is `mcpgw serve` running? set --admin or MCPGW_ADMIN)", where, dialCause(err))
}

// dialCause drops the method and URL net/http puts around a dial error:
// the message names the address once.
func dialCause(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	var oerr *net.OpError
	if errors.As(err, &oerr) && oerr.Err != nil {
		return oerr.Err
	}
	return err
}

// isDialError reports whether err means no connection was made, so the
// request was not delivered.
func isDialError(err error) bool {
	var oerr *net.OpError
	return errors.As(err, &oerr) && oerr.Op == "dial"
}

// send sends one request, moving on to the next address when a connection
// cannot be opened, and waiting up to startWait while none can.
func (a *Client) send(ctx context.Context, hc *http.Client, method, path string, body []byte, stale bool) (*http.Response, error) {
	deadline := time.Now().Add(a.startWait)
	pause := 50 * time.Millisecond
	for {
		first := int(a.preferred.Load())
		var lastErr error
		lastBase := a.bases[first]
		for i := range a.bases {
			idx := (first + i) % len(a.bases)
			var rd io.Reader
			if body != nil {
				rd = bytes.NewReader(body)
			}
			req, err := http.NewRequestWithContext(ctx, method, a.bases[idx]+path, rd)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", "Bearer "+a.token)
			if body != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			a.sendSeen(req)
			if stale && method == http.MethodGet {
				req.Header.Set(ConsistencyHeader, ConsistencyStale)
			}
			resp, err := hc.Do(req)
			if err == nil && i < len(a.bases)-1 && unconfirmed(resp) {
				// Refused before doing anything: the next node may
				// know the leader.
				io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
				resp.Body.Close()
				continue
			}
			if err == nil {
				if !unconfirmed(resp) {
					a.preferred.Store(int32(idx))
				}
				a.lastStale.Store(resp.Header.Get(ConsistencyHeader) == ConsistencyStale)
				return resp, nil
			}
			lastErr, lastBase = err, a.bases[idx]
			if !isDialError(err) {
				return nil, a.unreachable(lastBase, err)
			}
		}
		if ctx.Err() != nil || !time.Now().Add(pause).Before(deadline) {
			return nil, a.unreachable(lastBase, lastErr)
		}
		if a.waiting != nil {
			a.waitOnce.Do(func() { a.waiting(strings.Join(a.bases, ", ")) })
		}
		// A retry interval, not synchronisation: the node gives no signal
		// when its listener opens.
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, a.unreachable(lastBase, ctx.Err())
		case <-t.C:
		}
		pause = min(pause*2, time.Second)
	}
}

// unconfirmed reports whether resp refuses a request because the node
// could not confirm its copy is current.
func unconfirmed(resp *http.Response) bool {
	return resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(ConsistencyHeader) == ConsistencyUnconfirmed
}

// AnsweredStale reports whether the latest answer came from a node's local
// copy without the read barrier (asked for with ClientOptions.Stale), so
// it may miss recent writes.
func (a *Client) AnsweredStale() bool { return a.lastStale.Load() }

// StatusError is an error answer of the admin API.
type StatusError struct {
	Status  int
	Message string
	// Code is the ErrorBody's code: CodeNotCurrent, or empty.
	Code string
}

func (e *StatusError) Error() string { return e.Message }

// httpError explains an error status from the admin API: the message of
// its ErrorBody, or what the status and body suggest.
func (a *Client) httpError(status int, data []byte) error {
	var e ErrorBody
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &StatusError{Status: status, Message: e.Error, Code: e.Code}
	}
	base := a.Base()
	if status == http.StatusBadRequest && bytes.Contains(data, []byte("HTTPS server")) {
		return &StatusError{Status: status, Message: fmt.Sprintf("admin API %s serves HTTPS: use --admin https://%s", base, strings.TrimPrefix(base, "http://"))}
	}
	msg := fmt.Sprintf("%s answered HTTP %d", base, status)
	if b := strings.TrimSpace(string(data)); b != "" {
		msg += fmt.Sprintf(": %.300q", b)
	}
	if status == http.StatusNotFound {
		msg += " (not an mcpgw admin API: is --admin the node's admin listener, default port 7422, not its session port?)"
	}
	return &StatusError{Status: status, Message: msg}
}

// Do sends a request with in (if non-nil) as its JSON body and decodes a
// JSON answer into out (if non-nil).
func (a *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return a.do(ctx, method, path, in, out, a.stale)
}

// DoStale is Do that asks a GET for the answering node's local copy, as
// ClientOptions.Stale does for every request: for a node's own summary,
// which must answer while the node knows no leader.
func (a *Client) DoStale(ctx context.Context, method, path string, in, out any) error {
	return a.do(ctx, method, path, in, out, true)
}

func (a *Client) do(ctx context.Context, method, path string, in, out any, stale bool) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	resp, err := a.send(ctx, a.http, method, path, body, stale)
	if err != nil {
		return err
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
	hc := *a.http
	hc.Timeout = 0 // a large state database takes as long as it takes
	resp, err := a.send(ctx, &hc, http.MethodGet, path, nil, a.stale)
	if err != nil {
		return 0, err
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
