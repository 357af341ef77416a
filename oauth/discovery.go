package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// Discovery is what the client learnt about an MCP server's authorization.
type Discovery struct {
	// ServerURL is the MCP server URL discovery started from.
	ServerURL string `json:"server_url"`
	// Resource is the RFC 8707 resource indicator sent on authorization and
	// token requests: the protected resource metadata's resource.
	Resource string `json:"resource"`
	// ResourceMetadata is the RFC 9728 document; nil for a legacy server
	// (2025-03-26) that serves none.
	ResourceMetadata *oauthex.ProtectedResourceMetadata `json:"resource_metadata,omitempty"`
	// Issuer is the authorization server's issuer, the key for its registration.
	Issuer string `json:"issuer"`
	// AuthServer is the RFC 8414 / OIDC metadata.
	AuthServer *oauthex.AuthServerMeta `json:"auth_server"`
	// OIDC is true when the metadata came from an OpenID configuration URL;
	// then Begin asks for a nonce if the openid scope is requested.
	OIDC bool `json:"oidc,omitempty"`
	// Challenge is the challenge discovery started from, if any.
	Challenge Challenge `json:"challenge"`
}

// Discover finds the authorization server of the MCP server at serverURL. ch
// is the parsed WWW-Authenticate of the server's 401 (zero if none). It reads
// protected resource metadata from ch.ResourceMetadata, then the path-aware
// well-known URL, then the root one (RFC 9728 §3, MCP 2025-11-25); it checks
// the document names serverURL as its resource. It then reads authorization
// server metadata from the RFC 8414 and OpenID well-known URLs in the order
// the MCP specification gives, checks the issuer and that PKCE S256 is
// supported. A server with no protected resource metadata at all is treated
// as a 2025-03-26 server: its origin is the authorization server.
func (c *Client) Discover(ctx context.Context, serverURL string, ch Challenge) (*Discovery, error) {
	if err := CheckURL(serverURL, c.opts.AllowLoopback); err != nil {
		return nil, fmt.Errorf("discover %s: %w", serverURL, err)
	}
	d := &Discovery{ServerURL: serverURL, Challenge: ch}
	prm, err := c.resourceMetadata(ctx, serverURL, ch.ResourceMetadata)
	var issuer string
	switch {
	case errors.Is(err, errNotFound):
		su, _ := url.Parse(serverURL)
		issuer = (&url.URL{Scheme: su.Scheme, Host: su.Host}).String()
		d.Resource = serverURL
	case err != nil:
		return nil, err
	default:
		if len(prm.AuthorizationServers) == 0 {
			return nil, fmt.Errorf("discover %s: %w: protected resource metadata lists no authorization_servers: the MCP server must name its authorization server", serverURL, ErrDiscovery)
		}
		d.ResourceMetadata = prm
		d.Resource = prm.Resource
		issuer = prm.AuthorizationServers[0]
	}
	asm, oidc, err := c.authServerMetadata(ctx, issuer, prm == nil)
	if errors.Is(err, errNotFound) && prm == nil {
		// 2025-03-26 fallback: default endpoints at the server's origin.
		asm = &oauthex.AuthServerMeta{
			Issuer:                        issuer,
			AuthorizationEndpoint:         issuer + "/authorize",
			TokenEndpoint:                 issuer + "/token",
			RegistrationEndpoint:          issuer + "/register",
			CodeChallengeMethodsSupported: []string{"S256"},
		}
	} else if errors.Is(err, errNotFound) {
		return nil, fmt.Errorf("discover %s: %w: no authorization server metadata for issuer %s at its RFC 8414 or OpenID well-known urls: check the authorization server", serverURL, ErrDiscovery, issuer)
	} else if err != nil {
		return nil, fmt.Errorf("discover %s: %w", serverURL, err)
	}
	d.AuthServer, d.OIDC, d.Issuer = asm, oidc, asm.Issuer
	return d, nil
}

// resourceMetadataURLs lists where protected resource metadata may be, each
// with the resource it must name.
func resourceMetadataURLs(serverURL, fromChallenge string) []string {
	var urls []string
	if fromChallenge != "" {
		urls = append(urls, fromChallenge)
	}
	su, err := url.Parse(serverURL)
	if err != nil {
		return urls
	}
	if p := strings.Trim(su.Path, "/"); p != "" {
		urls = append(urls, (&url.URL{Scheme: su.Scheme, Host: su.Host, Path: "/.well-known/oauth-protected-resource/" + p}).String())
	}
	return append(urls, (&url.URL{Scheme: su.Scheme, Host: su.Host, Path: "/.well-known/oauth-protected-resource"}).String())
}

func (c *Client) resourceMetadata(ctx context.Context, serverURL, fromChallenge string) (*oauthex.ProtectedResourceMetadata, error) {
	su, _ := url.Parse(serverURL)
	origin := (&url.URL{Scheme: su.Scheme, Host: su.Host}).String()
	for _, mu := range resourceMetadataURLs(serverURL, fromChallenge) {
		var prm oauthex.ProtectedResourceMetadata
		err := c.getJSON(ctx, mu, &prm)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("discover %s: protected resource metadata: %w", serverURL, err)
		}
		// The resource must be the MCP server (RFC 9728 §3.3); a root document
		// may name the origin. A trailing slash on an empty path is tolerated.
		if !oauthex.MatchesResource([]string{prm.Resource}, serverURL) && !oauthex.MatchesResource([]string{prm.Resource}, origin) {
			return nil, fmt.Errorf("discover %s: %w: %s names resource %q: the MCP server's metadata must name its own url; refusing it", serverURL, ErrResourceMismatch, mu, truncate(prm.Resource, 200))
		}
		for i, as := range prm.AuthorizationServers {
			if err := CheckURL(as, c.opts.AllowLoopback); err != nil {
				return nil, fmt.Errorf("discover %s: authorization_servers[%d]: %w", serverURL, i, err)
			}
		}
		return &prm, nil
	}
	return nil, errNotFound
}

// authServerMetadataURLs lists the well-known URLs for issuer in the order of
// the MCP 2025-11-25 specification (§ Authorization Server Metadata
// Discovery), with whether each is an OpenID one.
func authServerMetadataURLs(issuer string) (urls []string, oidc []bool) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, nil
	}
	at := func(p string, o bool) {
		urls = append(urls, (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: p}).String())
		oidc = append(oidc, o)
	}
	p := strings.Trim(u.Path, "/")
	if p == "" {
		at("/.well-known/oauth-authorization-server", false)
		at("/.well-known/openid-configuration", true)
		return urls, oidc
	}
	at("/.well-known/oauth-authorization-server/"+p, false)
	at("/.well-known/openid-configuration/"+p, true)
	at("/"+p+"/.well-known/openid-configuration", true)
	return urls, oidc
}

// legacy relaxes the issuer check for a 2025-03-26 server (no protected
// resource metadata): its metadata sits at the origin's well-known URL and may
// name an issuer with a path on that same origin.
func (c *Client) authServerMetadata(ctx context.Context, issuer string, legacy bool) (*oauthex.AuthServerMeta, bool, error) {
	urls, oidc := authServerMetadataURLs(issuer)
	for i, mu := range urls {
		var asm oauthex.AuthServerMeta
		err := c.getJSON(ctx, mu, &asm)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("authorization server metadata: %w", err)
		}
		if legacy && sameOrigin(asm.Issuer, issuer) {
			issuer = asm.Issuer
		}
		if err := c.checkAuthServerMeta(&asm, issuer, mu); err != nil {
			return nil, false, err
		}
		return &asm, oidc[i], nil
	}
	return nil, false, errNotFound
}

func (c *Client) checkAuthServerMeta(asm *oauthex.AuthServerMeta, issuer, from string) error {
	if strings.TrimSuffix(asm.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
		return fmt.Errorf("authorization server metadata at %s: %w: it says issuer %q, expected %q: the authorization server is misconfigured or impersonated; refusing it", from, ErrIssuerMismatch, truncate(asm.Issuer, 200), issuer)
	}
	if !slices.Contains(asm.CodeChallengeMethodsSupported, "S256") {
		return fmt.Errorf("authorization server %s: %w: code_challenge_methods_supported lacks S256: the MCP specification requires PKCE; enable S256 on the authorization server", issuer, ErrPKCEUnsupported)
	}
	if asm.AuthorizationEndpoint == "" || asm.TokenEndpoint == "" {
		return fmt.Errorf("authorization server %s: %w: metadata lacks authorization_endpoint or token_endpoint", issuer, ErrDiscovery)
	}
	for name, v := range map[string]string{
		"authorization_endpoint": asm.AuthorizationEndpoint,
		"token_endpoint":         asm.TokenEndpoint,
		"registration_endpoint":  asm.RegistrationEndpoint,
	} {
		if v == "" {
			continue
		}
		if err := CheckURL(v, c.opts.AllowLoopback); err != nil {
			return fmt.Errorf("authorization server %s: %s: %w", issuer, name, err)
		}
	}
	return nil
}

// getJSON GETs a JSON document into v. A 404 or other 4xx gives errNotFound so
// discovery can try the next URL; anything else that is not a 200 JSON
// document is an error.
func (c *Client) getJSON(ctx context.Context, raw string, v any) error {
	if err := CheckURL(raw, c.opts.AllowLoopback); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrURLNotAllowed, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", redactURL(req.URL), unwrapURLError(err))
	}
	defer res.Body.Close()
	if res.StatusCode >= 400 && res.StatusCode < 500 {
		return errNotFound
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %w: status %d: the upstream is failing, retry later", redactURL(req.URL), ErrDiscovery, res.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(res.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return fmt.Errorf("fetch %s: %w: content type %q, want application/json", redactURL(req.URL), ErrDiscovery, truncate(res.Header.Get("Content-Type"), 100))
	}
	body, err := readBody(res, c.opts.MaxResponseBytes)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", redactURL(req.URL), err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("fetch %s: %w: invalid json document", redactURL(req.URL), ErrDiscovery)
	}
	return nil
}

// unwrapURLError strips *url.Error, whose text repeats the full URL with its
// query; our wrap names the redacted URL instead.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host)
}
