package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// AuthorizationURL asks the gateway for a sign-in link that connects
// (org, account) to the OAuth-protected MCP server at target: send the user
// to it; once they approve, the gateway stores the token and sessions for
// (target, org, account) carry it. The service never sees the token. The
// link is valid once, for a few minutes. The gateway must run with
// --public-url.
func AuthorizationURL(ctx context.Context, target, org, account string, opts ...Option) (string, error) {
	var out struct {
		URL string `json:"url"`
	}
	err := oauthCall(ctx, "/v1/oauth/authorize", map[string]string{"target": target, "org": org, "account": account}, &out, opts)
	return out.URL, err
}

// CompleteOAuth finishes a sign-in with the state and code the
// authorization server sent the browser back with, for a deployment whose
// browsers cannot reach the gateway's own callback. A state is accepted
// once. Servers that send an iss parameter (RFC 9207) need it too: use
// CompleteOAuthQuery with the whole query.
func CompleteOAuth(ctx context.Context, state, code string, opts ...Option) error {
	return CompleteOAuthQuery(ctx, url.Values{"state": {state}, "code": {code}}, opts...)
}

// CompleteOAuthQuery is CompleteOAuth with the callback's whole query
// (state, code, iss, or the server's error).
func CompleteOAuthQuery(ctx context.Context, query url.Values, opts ...Option) error {
	return oauthCall(ctx, "/v1/oauth/complete", map[string]string{"query": query.Encode()}, nil, opts)
}

// oauthCall posts in to the gateway's session listener with the service
// token and decodes its answer into out.
func oauthCall(ctx context.Context, path string, in, out any, opts []Option) error {
	o := options{addr: os.Getenv(EnvAddr), token: os.Getenv(EnvToken)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.addr == "" {
		o.addr = DefaultAddr
	}
	addr, _, _ := strings.Cut(o.addr, ",")
	base, err := wsBase(strings.TrimSpace(addr))
	if err != nil {
		return fmt.Errorf("%w (oauth calls need an http(s) or ws(s) gateway address)", err)
	}
	base = "http" + strings.TrimPrefix(base, "ws")
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if o.token != "" {
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	hc := o.httpClient
	if hc == nil {
		// One call, seldom: its own transport, closed after it, leaves no
		// idle connection behind.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		defer tr.CloseIdleConnections()
		if strings.HasPrefix(base, "https://") && (o.rootCAs != nil || o.caFile != "") {
			roots, err := loadRoots(o.rootCAs, o.caFile)
			if err != nil {
				return err
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		}
		hc = &http.Client{Timeout: time.Minute, Transport: tr}
	}
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("mcpgw: %s: %w", path, explainTLS(err))
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("mcpgw: %s: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("mcpgw: %s", e.Error)
		}
		return fmt.Errorf("mcpgw: %s answered HTTP %d (does the gateway run with --public-url?)", base+path, res.StatusCode)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
