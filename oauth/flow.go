package oauth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Pending is one authorization flow between Begin and Complete. It marshals
// to JSON so the caller can replicate it; Verifier and
// Registration.ClientSecret are secrets the caller seals. The caller keys it
// by State, deletes it (or stores Used) atomically when a callback takes it,
// and so refuses a replay cluster-wide; Complete also refuses a Pending whose
// Used is set and sets it itself.
type Pending struct {
	Binding               Binding      `json:"binding"`
	State                 string       `json:"state"`
	Verifier              string       `json:"verifier"` // secret: seal it
	Nonce                 string       `json:"nonce,omitempty"`
	Issuer                string       `json:"issuer"`
	IssParameterSupported bool         `json:"iss_parameter_supported,omitempty"`
	Registration          Registration `json:"registration"`
	Resource              string       `json:"resource"`
	RedirectURL           string       `json:"redirect_url"`
	Scopes                []string     `json:"scopes,omitempty"`
	CreatedAt             time.Time    `json:"created_at"`
	ExpiresAt             time.Time    `json:"expires_at"`
	Used                  bool         `json:"used,omitempty"`
}

// LogValue keeps the verifier, state and secret out of logs.
func (p Pending) LogValue() slog.Value {
	return slog.GroupValue(slog.String("issuer", p.Issuer), slog.String("resource", p.Resource),
		slog.Time("expires_at", p.ExpiresAt), slog.Bool("used", p.Used))
}

// Binding is whom a flow is for. It is opaque to this package: Begin copies
// it into the Pending so the node that takes the callback knows where the
// token belongs, and the flow cannot be completed for anyone else.
type Binding struct {
	Org     string `json:"org"`
	Account string `json:"account"`
	Route   string `json:"route"`
}

// Token is an upstream token set. AccessToken and RefreshToken are secrets.
type Token struct {
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"` // zero: the AS gave no lifetime
	Scopes       []string  `json:"scopes,omitempty"`
	Issuer       string    `json:"issuer"`
	Resource     string    `json:"resource"`
	IDToken      string    `json:"id_token,omitempty"`
}

// LogValue keeps the tokens out of logs.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("issuer", t.Issuer), slog.String("resource", t.Resource),
		slog.Time("expiry", t.Expiry), slog.Bool("has_refresh", t.RefreshToken != ""))
}

// BeginRequest is what Begin needs to start a flow.
type BeginRequest struct {
	Binding      Binding
	Discovery    *Discovery
	Registration Registration
	// RedirectURL is the gateway's callback, registered with the client.
	RedirectURL string
	// Scopes overrides the specification's scope selection (the challenge's
	// scope, else the resource metadata's scopes_supported, else none); set
	// it to StepUpScopes' result for step-up.
	Scopes []string
	// RequestRefreshToken adds offline_access to the scopes when the
	// authorization server lists it in scopes_supported (SEP-2207).
	RequestRefreshToken bool
}

// Begin starts an authorization flow: it makes an unguessable state (256
// bits), a PKCE S256 verifier, a nonce when the openid scope is asked of an
// OpenID provider, and returns the Pending to store and the consent URL to
// send the user to. It does no I/O.
func (c *Client) Begin(_ context.Context, r BeginRequest) (Pending, string, error) {
	d := r.Discovery
	if d == nil || d.AuthServer == nil {
		return Pending{}, "", fmt.Errorf("begin authorization: %w: no discovery: call Discover first", ErrDiscovery)
	}
	if !r.Registration.For(d) {
		return Pending{}, "", fmt.Errorf("begin authorization with %s: %w: the client registration is for %q: register again with this authorization server", d.Issuer, ErrIssuerMismatch, r.Registration.Issuer)
	}
	if err := CheckURL(d.AuthServer.AuthorizationEndpoint, c.opts.AllowLoopback); err != nil {
		return Pending{}, "", fmt.Errorf("begin authorization: authorization_endpoint: %w", err)
	}
	if r.RedirectURL == "" {
		return Pending{}, "", fmt.Errorf("begin authorization: %w: no redirect url: configure the gateway's public url", ErrBadCallback)
	}
	scopes := r.Scopes
	if scopes == nil {
		scopes = SelectScopes(d)
	}
	if r.RequestRefreshToken && slices.Contains(d.AuthServer.ScopesSupported, "offline_access") {
		scopes = unionScopes(scopes, []string{"offline_access"})
	}
	now := c.now()
	p := Pending{
		Binding:               r.Binding,
		State:                 randomToken(32),
		Verifier:              oauth2.GenerateVerifier(),
		Issuer:                d.Issuer,
		IssParameterSupported: d.AuthServer.AuthorizationResponseIssParameterSupported,
		Registration:          r.Registration,
		Resource:              d.Resource,
		RedirectURL:           r.RedirectURL,
		Scopes:                slices.Clone(scopes),
		CreatedAt:             now,
		ExpiresAt:             now.Add(c.pendingTTL),
	}
	cfg := oauth2.Config{
		ClientID:    r.Registration.ClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: d.AuthServer.AuthorizationEndpoint},
		RedirectURL: r.RedirectURL,
		Scopes:      scopes,
	}
	opts := []oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(p.Verifier),
		oauth2.SetAuthURLParam("resource", p.Resource),
	}
	if d.OIDC && slices.Contains(scopes, "openid") {
		p.Nonce = randomToken(16)
		opts = append(opts, oauth2.SetAuthURLParam("nonce", p.Nonce))
	}
	return p, cfg.AuthCodeURL(p.State, opts...), nil
}

// SelectScopes is the MCP specification's scope selection: the scope of the
// server's challenge, else the protected resource metadata's
// scopes_supported, else none (the scope parameter is omitted).
func SelectScopes(d *Discovery) []string {
	if len(d.Challenge.Scopes) > 0 {
		return slices.Clone(d.Challenge.Scopes)
	}
	if d.ResourceMetadata != nil && len(d.ResourceMetadata.ScopesSupported) > 0 {
		return slices.Clone(d.ResourceMetadata.ScopesSupported)
	}
	return nil
}

func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand documents it)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Complete finishes the flow p on the callback's query: it checks the state
// (constant time), the expiry, the RFC 9207 iss parameter (required and equal
// when the server advertises it, equal when present), turns an error response
// into an *ASError wrapping ErrAuthorizationDenied, marks p used, and
// exchanges the code with the PKCE verifier and resource indicator. The
// caller persists p.Used (or deletes p) before calling, so a replay on
// another node is refused.
func (c *Client) Complete(ctx context.Context, p *Pending, q url.Values) (Token, error) {
	if p.Used {
		return Token{}, fmt.Errorf("complete authorization: %w: this callback was already handled: start a new authorization", ErrFlowUsed)
	}
	st := q.Get("state")
	if st == "" || subtle.ConstantTimeCompare([]byte(st), []byte(p.State)) != 1 {
		return Token{}, fmt.Errorf("complete authorization: %w: the callback is not for this flow: start a new authorization from the gateway", ErrStateMismatch)
	}
	if !c.now().Before(p.ExpiresAt) {
		return Token{}, fmt.Errorf("complete authorization: %w: it expired at %s: start a new authorization", ErrFlowExpired, p.ExpiresAt.UTC().Format(time.RFC3339))
	}
	iss, hasIss := q["iss"]
	switch {
	case hasIss && (len(iss) != 1 || iss[0] != p.Issuer):
		return Token{}, fmt.Errorf("complete authorization: %w: the response's iss is %q, the flow's issuer is %q: possible mix-up attack, refusing it; start a new authorization", ErrIssuerMismatch, truncate(strings.Join(iss, ","), 200), p.Issuer)
	case !hasIss && p.IssParameterSupported:
		return Token{}, fmt.Errorf("complete authorization: %w: the authorization server advertises the RFC 9207 iss parameter but the response has none: refusing it; start a new authorization", ErrIssuerMismatch)
	}
	if e := q.Get("error"); e != "" {
		p.Used = true
		return Token{}, &ASError{Kind: ErrAuthorizationDenied, Op: "complete authorization", Code: e, Description: q.Get("error_description"), URI: q.Get("error_uri")}
	}
	code := q.Get("code")
	if code == "" {
		return Token{}, fmt.Errorf("complete authorization: %w: no code in the callback: start a new authorization", ErrBadCallback)
	}
	p.Used = true
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {p.RedirectURL},
		"code_verifier": {p.Verifier},
		"resource":      {p.Resource},
	}
	tok, err := c.tokenRequest(ctx, p.Registration, "exchange authorization code", form)
	if err != nil {
		return Token{}, err
	}
	if tok.Scopes == nil {
		tok.Scopes = slices.Clone(p.Scopes) // RFC 6749 §5.1: omitted means as requested
	}
	tok.Issuer, tok.Resource = p.Issuer, p.Resource
	return tok, nil
}

// Refresh exchanges tok's refresh token at reg's token endpoint with tok's
// resource indicator; it sends no scope, so the grant keeps its original
// scopes (RFC 6749 §6). A rotated refresh token replaces the old one; if the
// server returns none, the old one is kept. An OAuth error answer
// (invalid_grant, invalid_client...) or a missing refresh token gives an
// error wrapping ErrNeedsConsent, with the server's code as an *ASError;
// network and 5xx failures wrap ErrTokenEndpoint and may be retried.
// The caller runs it once cluster-wide and stores the result.
func (c *Client) Refresh(ctx context.Context, reg Registration, tok Token) (Token, error) {
	if tok.RefreshToken == "" {
		return Token{}, fmt.Errorf("refresh token for %s: %w: the authorization server issued no refresh token: start a new authorization", tok.Issuer, ErrNeedsConsent)
	}
	if !issuersEqual(reg.Issuer, tok.Issuer) {
		return Token{}, fmt.Errorf("refresh token: %w: the token is from %q, the client registration for %q: use the registration of the token's issuer", ErrIssuerMismatch, tok.Issuer, reg.Issuer)
	}
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {tok.RefreshToken},
	}
	if tok.Resource != "" {
		form.Set("resource", tok.Resource)
	}
	nt, err := c.tokenRequest(ctx, reg, "refresh token for "+tok.Issuer, form)
	if err != nil {
		return Token{}, err
	}
	if nt.RefreshToken == "" {
		nt.RefreshToken = tok.RefreshToken
	}
	if nt.Scopes == nil {
		nt.Scopes = slices.Clone(tok.Scopes)
	}
	nt.Issuer, nt.Resource = tok.Issuer, tok.Resource
	return nt, nil
}

type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
	URI         string `json:"error_uri"`
}

func (c *Client) tokenRequest(ctx context.Context, reg Registration, op string, form url.Values) (Token, error) {
	if err := CheckURL(reg.TokenEndpoint, c.opts.AllowLoopback); err != nil {
		return Token{}, fmt.Errorf("%s: token_endpoint: %w", op, err)
	}
	switch reg.AuthMethod {
	case AuthClientSecretPost:
		form.Set("client_id", reg.ClientID)
		form.Set("client_secret", reg.ClientSecret)
	case AuthClientSecretBasic:
	default:
		form.Set("client_id", reg.ClientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, reg.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w: %v", op, ErrURLNotAllowed, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if reg.AuthMethod == AuthClientSecretBasic {
		// RFC 6749 §2.3.1: form-encode before base64.
		req.SetBasicAuth(url.QueryEscape(reg.ClientID), url.QueryEscape(reg.ClientSecret))
	}
	res, err := c.http.Do(req)
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w: %w: retry later", op, ErrTokenEndpoint, unwrapURLError(err))
	}
	defer res.Body.Close()
	body, err := readBody(res, c.opts.MaxResponseBytes)
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w: %w", op, ErrTokenEndpoint, err)
	}
	if res.StatusCode != http.StatusOK {
		var e oauthError
		if res.StatusCode >= 400 && res.StatusCode < 500 && json.Unmarshal(body, &e) == nil && e.Code != "" {
			kind := ErrTokenEndpoint
			if form.Get("grant_type") == "refresh_token" {
				kind = ErrNeedsConsent
			}
			return Token{}, &ASError{Kind: kind, Op: op, Code: e.Code, Description: e.Description, URI: e.URI, Status: res.StatusCode}
		}
		return Token{}, fmt.Errorf("%s: %w: status %d: retry later", op, ErrTokenEndpoint, res.StatusCode)
	}
	tok, err := parseTokenResponse(body, c.now())
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	return tok, nil
}

// parseTokenResponse decodes an RFC 6749 §5.1 token response. expires_in is
// accepted as a number or a numeric string, as deployed servers send both.
func parseTokenResponse(body []byte, now time.Time) (Token, error) {
	var raw struct {
		AccessToken  string          `json:"access_token"`
		TokenType    string          `json:"token_type"`
		RefreshToken string          `json:"refresh_token"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
		Scope        *string         `json:"scope"`
		IDToken      string          `json:"id_token"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Token{}, fmt.Errorf("%w: the token response is not a json object", ErrTokenEndpoint)
	}
	if raw.AccessToken == "" {
		return Token{}, fmt.Errorf("%w: the token response has no access_token", ErrTokenEndpoint)
	}
	tt := raw.TokenType
	if tt == "" || strings.EqualFold(tt, "bearer") {
		tt = "Bearer"
	} else {
		return Token{}, fmt.Errorf("%w: token_type %q is not Bearer: the gateway sends bearer tokens only; configure the authorization server to issue bearer tokens", ErrTokenEndpoint, truncate(tt, 40))
	}
	t := Token{AccessToken: raw.AccessToken, TokenType: tt, RefreshToken: raw.RefreshToken, IDToken: raw.IDToken}
	if len(raw.ExpiresIn) > 0 && string(raw.ExpiresIn) != "null" {
		s := strings.Trim(string(raw.ExpiresIn), `"`)
		secs, err := strconv.ParseInt(s, 10, 64)
		if err != nil || secs < 0 || secs > 10*365*24*3600 {
			return Token{}, fmt.Errorf("%w: the token response's expires_in is not a number of seconds", ErrTokenEndpoint)
		}
		t.Expiry = now.Add(time.Duration(secs) * time.Second)
	}
	if raw.Scope != nil {
		t.Scopes = strings.Fields(*raw.Scope)
		if t.Scopes == nil {
			t.Scopes = []string{}
		}
	}
	return t, nil
}
