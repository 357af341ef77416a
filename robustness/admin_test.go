package robustness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/mcpgw/mcpgw/adminapi"
)

// The admin API's bodies as a client sees them: only the fields the test
// reads or writes.
type route struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

type issueRequest struct {
	Service string   `json:"service"`
	Orgs    []string `json:"orgs"`
	TTL     string   `json:"ttl"`
}

type issuedToken struct {
	ID string `json:"id"`
}

type tokenInfo struct {
	ID      string `json:"id"`
	Revoked bool   `json:"revoked"`
}

// outcome is what a client learned of a write.
type outcome int

const (
	// unknown: no answer, or an answer that does not say whether the
	// write was applied (timeouts, 5xx): it may take effect at any time.
	unknown outcome = iota
	ok
	// notFound: refused with 404 after a local lookup found no record;
	// nothing was applied.
	notFound
	// failed: never sent (the node was down, or nothing accepted the
	// connection), refused as invalid, or refused because the node could
	// not confirm its copy is current: nothing was applied.
	failed
)

func (o outcome) String() string {
	return [...]string{"unknown", "ok", "notfound", "failed"}[o]
}

// do sends one admin request to g and decodes a 2xx answer into out. It
// returns the status code, 0 if no answer came.
func (g *gateway) do(ctx context.Context, method, path string, in, out any) (int, error) {
	url, token, up := g.endpoint()
	if !up {
		return 0, errDown
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(adminapi.ConsistencyHeader) == adminapi.ConsistencyUnconfirmed {
		return resp.StatusCode, fmt.Errorf("%s %s: %w: %s", method, path, errUnconfirmed, bytes.TrimSpace(b))
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// writeOutcome classifies the answer to a write.
func writeOutcome(status int, err error) outcome {
	var op *net.OpError
	switch {
	case err == nil:
		return ok
	case status == http.StatusNotFound:
		return notFound
	case status == http.StatusBadRequest, errors.Is(err, errDown), errors.Is(err, errUnconfirmed), errors.As(err, &op) && op.Op == "dial":
		return failed
	}
	return unknown
}

func (g *gateway) putRoute(ctx context.Context, name, url string) outcome {
	return writeOutcome(g.do(ctx, http.MethodPost, "/v1/routes", route{Name: name, URL: url}, nil))
}

func (g *gateway) deleteRoute(ctx context.Context, name string) outcome {
	return writeOutcome(g.do(ctx, http.MethodDelete, "/v1/routes/"+name, nil, nil))
}

// issueToken returns the new token's id when the write was acknowledged.
func (g *gateway) issueToken(ctx context.Context) (string, outcome) {
	var tok issuedToken
	o := writeOutcome(g.do(ctx, http.MethodPost, "/v1/tokens", issueRequest{Service: "svc", Orgs: []string{"acme"}, TTL: "24h"}, &tok))
	return tok.ID, o
}

func (g *gateway) revokeToken(ctx context.Context, id string) outcome {
	return writeOutcome(g.do(ctx, http.MethodPost, "/v1/tokens/"+id+"/revoke", nil, nil))
}

// routes reads g's local routes as name → URL.
func (g *gateway) routes(ctx context.Context) (map[string]string, error) {
	var list []route
	if _, err := g.do(ctx, http.MethodGet, "/v1/routes", nil, &list); err != nil {
		return nil, err
	}
	m := make(map[string]string, len(list))
	for _, r := range list {
		m[r.Name] = r.URL
	}
	return m, nil
}

// tokens reads g's local tokens as id → "active" or "revoked".
func (g *gateway) tokens(ctx context.Context) (map[string]string, error) {
	var list []tokenInfo
	if _, err := g.do(ctx, http.MethodGet, "/v1/tokens", nil, &list); err != nil {
		return nil, err
	}
	m := make(map[string]string, len(list))
	for _, t := range list {
		m[t.ID] = tokenState(t.Revoked)
	}
	return m, nil
}

func tokenState(revoked bool) string {
	if revoked {
		return "revoked"
	}
	return "active"
}
