package oauth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// probeBody is the request a client without a token opens an MCP session
// with; a protected server answers it 401 with its challenge.
const probeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcpgw","version":"oauth-discovery"}}}`

// Probe sends the MCP server at serverURL the unauthenticated initialize a
// client opens a session with, and returns the challenge of its 401 (or
// 403) answer: where the server's protected resource metadata is
// (resource_metadata) and which scopes it wants. Only the challenge tells
// a client about metadata at a non-well-known URL and about a scope
// narrower than scopes_supported, so discovery starts from it, as the MCP
// authorization specification says. Any other answer gives a zero
// Challenge: discovery then tries the well-known URLs. Servers not spoken to
// over HTTP POST (ws, wss) are not probed.
func (c *Client) Probe(ctx context.Context, serverURL string) (Challenge, error) {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return Challenge{}, nil
	}
	if err := CheckURL(serverURL, c.opts.AllowLoopback); err != nil {
		return Challenge{}, fmt.Errorf("probe %s: %w", redactURL(u), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, serverURL, bytes.NewReader([]byte(probeBody)))
	if err != nil {
		return Challenge{}, fmt.Errorf("probe %s: %w: %v", redactURL(u), ErrURLNotAllowed, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	res, err := c.http.Do(req)
	if err != nil {
		return Challenge{}, fmt.Errorf("probe %s: %w: check that the route's server is up", redactURL(u), unwrapURLError(err))
	}
	// A server that let the probe in may stream its answer; only the status
	// and headers matter.
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized && res.StatusCode != http.StatusForbidden {
		return Challenge{}, nil
	}
	ch, err := ParseChallenge(res.Header)
	if err != nil {
		return Challenge{}, fmt.Errorf("probe %s: %w", redactURL(u), err)
	}
	return ch, nil
}
