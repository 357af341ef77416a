package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// RegistrationMethod says how a client id was obtained.
type RegistrationMethod string

// Registration methods, in the order Register tries them.
const (
	MethodPreregistered RegistrationMethod = "preregistered"
	MethodCIMD          RegistrationMethod = "client_id_metadata_document"
	MethodDynamic       RegistrationMethod = "dynamic"
)

// Token endpoint client authentication methods (RFC 7591 §2).
const (
	AuthNone              = "none"
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
)

// Registration is the gateway's client at one authorization server. The
// caller stores it keyed by Issuer, seals ClientSecret, and registers again
// when a discovery returns another issuer (Registration.For reports it).
type Registration struct {
	Issuer        string             `json:"issuer"`
	TokenEndpoint string             `json:"token_endpoint"`
	ClientID      string             `json:"client_id"`
	ClientSecret  string             `json:"client_secret,omitempty"` // secret: seal it
	Method        RegistrationMethod `json:"method"`
	// AuthMethod is the token endpoint auth method: none,
	// client_secret_basic or client_secret_post.
	AuthMethod string `json:"token_endpoint_auth_method"`
	// SecretExpiresAt is when a dynamically issued secret expires; zero: never.
	SecretExpiresAt time.Time `json:"client_secret_expires_at,omitzero"`
}

// For reports whether r is usable with the authorization server d found.
func (r Registration) For(d *Discovery) bool {
	return r.ClientID != "" && d != nil && issuersEqual(r.Issuer, d.Issuer)
}

// LogValue keeps the secret out of logs.
func (r Registration) LogValue() slog.Value {
	return slog.GroupValue(slog.String("issuer", r.Issuer), slog.String("client_id", r.ClientID),
		slog.String("method", string(r.Method)), slog.Bool("has_secret", r.ClientSecret != ""))
}

// RegisterOptions says which registration methods the gateway offers.
type RegisterOptions struct {
	// Preregistered is an operator-configured client; used first when set.
	// Its Issuer, if set, must be the discovered one. Its TokenEndpoint is
	// filled from discovery.
	Preregistered *Registration
	// CIMDURL is the https URL under the gateway's public base where it
	// serves CIMDDocument; empty: the gateway does not offer CIMD.
	CIMDURL string
	// RedirectURL is the gateway's OAuth callback. Required for dynamic
	// registration.
	RedirectURL string
	// ClientName is shown to users on consent screens. Default "mcpgw".
	ClientName string
}

// Register picks the client to use with d's authorization server, in the
// MCP specification's order: a pre-registered client, else the gateway's
// Client ID Metadata Document when the server says
// client_id_metadata_document_supported, else RFC 7591 dynamic registration
// at its registration_endpoint.
func (c *Client) Register(ctx context.Context, d *Discovery, o RegisterOptions) (Registration, error) {
	asm := d.AuthServer
	if p := o.Preregistered; p != nil && p.ClientID != "" {
		if p.Issuer != "" && !issuersEqual(p.Issuer, d.Issuer) {
			return Registration{}, fmt.Errorf("register with %s: %w: the pre-registered client is for %s: configure a client for this authorization server", d.Issuer, ErrIssuerMismatch, p.Issuer)
		}
		r := *p
		r.Issuer, r.TokenEndpoint, r.Method = d.Issuer, asm.TokenEndpoint, MethodPreregistered
		if r.AuthMethod == "" {
			r.AuthMethod = chooseAuthMethod(asm.TokenEndpointAuthMethodsSupported, r.ClientSecret != "")
		}
		return r, nil
	}
	if o.CIMDURL != "" && asm.ClientIDMetadataDocumentSupported {
		if err := checkCIMDURL(o.CIMDURL, c.opts.AllowLoopback); err != nil {
			return Registration{}, err
		}
		return Registration{Issuer: d.Issuer, TokenEndpoint: asm.TokenEndpoint, ClientID: o.CIMDURL, Method: MethodCIMD, AuthMethod: AuthNone}, nil
	}
	if asm.RegistrationEndpoint != "" {
		return c.registerDynamic(ctx, d, o)
	}
	return Registration{}, fmt.Errorf("register with %s: %w: no pre-registered client, the server does not support client id metadata documents (or the gateway has no public url for one), and it has no registration_endpoint: configure a pre-registered client for this issuer", d.Issuer, ErrNoRegistration)
}

// chooseAuthMethod prefers client_secret_basic, the RFC 8414 default.
func chooseAuthMethod(supported []string, hasSecret bool) string {
	if !hasSecret {
		return AuthNone
	}
	if len(supported) == 0 || slices.Contains(supported, AuthClientSecretBasic) {
		return AuthClientSecretBasic
	}
	if slices.Contains(supported, AuthClientSecretPost) {
		return AuthClientSecretPost
	}
	return AuthClientSecretBasic
}

// registerDynamic does RFC 7591 with the SDK's types. It does not call
// oauthex.RegisterClient because that puts the response body, which holds
// the issued client secret, into its decode errors.
func (c *Client) registerDynamic(ctx context.Context, d *Discovery, o RegisterOptions) (Registration, error) {
	asm := d.AuthServer
	if o.RedirectURL == "" {
		return Registration{}, fmt.Errorf("register with %s: %w: no redirect url: configure the gateway's public url", d.Issuer, ErrNoRegistration)
	}
	name := o.ClientName
	if name == "" {
		name = "mcpgw"
	}
	method := AuthClientSecretBasic
	if s := asm.TokenEndpointAuthMethodsSupported; len(s) > 0 && !slices.Contains(s, AuthClientSecretBasic) {
		switch {
		case slices.Contains(s, AuthClientSecretPost):
			method = AuthClientSecretPost
		case slices.Contains(s, AuthNone):
			method = AuthNone
		}
	}
	meta := oauthex.ClientRegistrationMetadata{
		RedirectURIs:            []string{o.RedirectURL},
		TokenEndpointAuthMethod: method,
		GrantTypes:              []string{"authorization_code", "refresh_token"},
		ResponseTypes:           []string{"code"},
		ClientName:              name,
		ApplicationType:         "web",
	}
	body, err := json.Marshal(meta)
	if err != nil {
		return Registration{}, fmt.Errorf("register with %s: %w", d.Issuer, err)
	}
	if err := CheckURL(asm.RegistrationEndpoint, c.opts.AllowLoopback); err != nil {
		return Registration{}, fmt.Errorf("register with %s: %w", d.Issuer, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, asm.RegistrationEndpoint, bytes.NewReader(body))
	if err != nil {
		return Registration{}, fmt.Errorf("register with %s: %w: %v", d.Issuer, ErrURLNotAllowed, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := c.http.Do(req)
	if err != nil {
		return Registration{}, fmt.Errorf("register with %s: %w: %w", d.Issuer, ErrRegistration, unwrapURLError(err))
	}
	defer res.Body.Close()
	rb, err := readBody(res, c.opts.MaxResponseBytes)
	if err != nil {
		return Registration{}, fmt.Errorf("register with %s: %w", d.Issuer, err)
	}
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		var e oauthError
		if res.StatusCode == http.StatusBadRequest && json.Unmarshal(rb, &e) == nil && e.Code != "" {
			return Registration{}, &ASError{Kind: ErrRegistration, Op: "register with " + d.Issuer, Code: e.Code, Description: e.Description, URI: e.URI, Status: res.StatusCode}
		}
		return Registration{}, fmt.Errorf("register with %s: %w: status %d: check the authorization server, or pre-register a client", d.Issuer, ErrRegistration, res.StatusCode)
	}
	var rr oauthex.ClientRegistrationResponse
	if err := json.Unmarshal(rb, &rr); err != nil || rr.ClientID == "" {
		return Registration{}, fmt.Errorf("register with %s: %w: response is not a registration (no client_id)", d.Issuer, ErrRegistration)
	}
	auth := rr.TokenEndpointAuthMethod
	if auth == "" {
		auth = method
	}
	if rr.ClientSecret == "" {
		auth = AuthNone
	}
	return Registration{
		Issuer: d.Issuer, TokenEndpoint: asm.TokenEndpoint, ClientID: rr.ClientID, ClientSecret: rr.ClientSecret,
		Method: MethodDynamic, AuthMethod: auth, SecretExpiresAt: rr.ClientSecretExpiresAt,
	}, nil
}

// CIMDConfig describes the gateway's Client ID Metadata Document.
type CIMDConfig struct {
	// URL is where the document is served; it is also the client_id.
	// https with a path (loopback http only in development).
	URL string
	// RedirectURLs are the gateway's OAuth callbacks. At least one.
	RedirectURLs []string
	// ClientName is shown on consent screens. Default "mcpgw".
	ClientName string
	// ClientURI is an optional home page of the deployment.
	ClientURI string
	// AllowLoopback permits an http loopback URL, for development.
	AllowLoopback bool
}

// CIMDDocument renders the JSON the gateway serves at cfg.URL (with
// Content-Type application/json) so authorization servers that support
// client ID metadata documents accept cfg.URL as its client_id. The gateway
// is a public client there (token_endpoint_auth_method "none"): PKCE binds
// the code to the flow.
func CIMDDocument(cfg CIMDConfig) ([]byte, error) {
	if err := checkCIMDURL(cfg.URL, cfg.AllowLoopback); err != nil {
		return nil, err
	}
	if len(cfg.RedirectURLs) == 0 {
		return nil, fmt.Errorf("client metadata document: %w: no redirect urls: configure the gateway's public url", ErrNoRegistration)
	}
	for _, r := range cfg.RedirectURLs {
		if err := CheckURL(r, cfg.AllowLoopback); err != nil {
			return nil, fmt.Errorf("client metadata document: redirect url: %w", err)
		}
	}
	name := cfg.ClientName
	if name == "" {
		name = "mcpgw"
	}
	doc := struct {
		ClientID                string   `json:"client_id"`
		ClientName              string   `json:"client_name"`
		ClientURI               string   `json:"client_uri,omitempty"`
		RedirectURIs            []string `json:"redirect_uris"`
		GrantTypes              []string `json:"grant_types"`
		ResponseTypes           []string `json:"response_types"`
		TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	}{cfg.URL, name, cfg.ClientURI, cfg.RedirectURLs, []string{"authorization_code", "refresh_token"}, []string{"code"}, AuthNone}
	return json.MarshalIndent(doc, "", "  ")
}

func checkCIMDURL(raw string, allowLoopback bool) error {
	if err := CheckURL(raw, allowLoopback); err != nil {
		return fmt.Errorf("client metadata document url: %w", err)
	}
	u, _ := url.Parse(raw)
	if strings.Trim(u.Path, "/") == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("client metadata document url %s: %w: it needs a path and no query or fragment (the specification's rule for a client id url)", redactURL(u), ErrURLNotAllowed)
	}
	return nil
}

func issuersEqual(a, b string) bool { return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/") }
