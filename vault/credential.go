package vault

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind says how a credential is presented to its upstream.
type Kind string

// The credential kinds.
const (
	// KindBearer is a single token sent as "Authorization: Bearer <token>".
	KindBearer Kind = "bearer"
	// KindHeaders is a set of HTTP request headers sent as they are.
	KindHeaders Kind = "headers"
	// KindEnv is a set of environment variables for a stdio upstream.
	KindEnv Kind = "env"
	// KindOAuth is an OAuth 2.0 token set the gateway obtained and refreshes.
	KindOAuth Kind = "oauth"
)

// MaxCredentialSize bounds a credential: the input to ParseCredential, and
// the sum of the lengths of every name and value in a Credential. It keeps any
// sealed credential well under MaxEnvelopeSize.
const MaxCredentialSize = 64 << 10

// Credential is one upstream credential in plaintext. Only the field that
// matches Kind is set.
//
// Credential redacts itself when formatted with any fmt verb, logged with
// slog, or marshaled to JSON: those show the kind and header or variable names,
// never a value. Seal is the only way to serialize one. A Credential stored in
// an unexported field of another struct is out of reach of that protection:
// fmt prints unexported fields without calling their methods.
type Credential struct {
	Kind    Kind
	Token   string            // KindBearer
	Headers map[string]string // KindHeaders, keys in canonical form (http.CanonicalHeaderKey)
	Env     map[string]string // KindEnv
	OAuth   *OAuthToken       // KindOAuth
}

// OAuthToken is the part of an OAuth 2.0 token response the gateway keeps.
// Like Credential, it redacts itself when formatted, logged or marshaled.
type OAuthToken struct {
	AccessToken  string
	RefreshToken string    // empty when the server issued none
	TokenType    string    // empty means Bearer
	Expiry       time.Time // zero when the server gave no lifetime
	Scope        string
}

// managedHeaders are set by the gateway or its transports, or only mean
// something to one hop; a credential that set them would break framing,
// session tracking or content negotiation with the upstream.
var managedHeaders = map[string]bool{
	"Accept":               true,
	"Accept-Encoding":      true,
	"Connection":           true,
	"Content-Encoding":     true,
	"Content-Length":       true,
	"Content-Type":         true,
	"Expect":               true,
	"Host":                 true,
	"Keep-Alive":           true,
	"Last-Event-Id":        true,
	"Mcp-Protocol-Version": true,
	"Mcp-Session-Id":       true,
	"Proxy-Authenticate":   true,
	"Proxy-Authorization":  true,
	"Proxy-Connection":     true,
	"Te":                   true,
	"Trailer":              true,
	"Transfer-Encoding":    true,
	"Upgrade":              true,
}

// managedHeaderPrefix covers the WebSocket handshake headers, which the
// WebSocket dialer owns.
const managedHeaderPrefix = "Sec-Websocket-"

var errInvalidHeaderName = errors.New("invalid header name (want an HTTP token such as X-Api-Key)")
var errInvalidEnvName = errors.New("invalid variable name (want [A-Za-z_][A-Za-z0-9_]*)")

// Validate reports whether c is well formed: a known kind, only that kind's
// field set, names and values that are safe to put on the wire or into a
// process environment, and at most MaxCredentialSize bytes in total. Its
// errors never contain a value.
func (c Credential) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("invalid %s credential: %w", c.Kind.safe(), err)
	}
	return nil
}

func (c Credential) validate() error {
	if !c.Kind.valid() {
		return errors.New("unknown kind (want bearer, headers, env or oauth)")
	}
	if (c.Token != "") != (c.Kind == KindBearer) ||
		(c.Headers != nil) != (c.Kind == KindHeaders) ||
		(c.Env != nil) != (c.Kind == KindEnv) ||
		(c.OAuth != nil) != (c.Kind == KindOAuth) {
		if c.Token == "" && c.Headers == nil && c.Env == nil && c.OAuth == nil {
			return errors.New("empty")
		}
		return errors.New("fields of another kind are set")
	}
	if c.size() > MaxCredentialSize {
		return fmt.Errorf("larger than %d bytes", MaxCredentialSize)
	}
	switch c.Kind {
	case KindBearer:
		return checkToken("token", c.Token)
	case KindHeaders:
		if len(c.Headers) == 0 {
			return errors.New("no headers")
		}
		for _, name := range sortedKeys(c.Headers) {
			if err := checkHeaderName(name); err != nil {
				return err
			}
			if name != http.CanonicalHeaderKey(name) {
				return errors.New("header name not in canonical form (see http.CanonicalHeaderKey)")
			}
			if err := checkHeaderValue(c.Headers[name]); err != nil {
				return fmt.Errorf("header %s: %w", name, err)
			}
		}
	case KindEnv:
		if len(c.Env) == 0 {
			return errors.New("no variables")
		}
		for _, name := range sortedKeys(c.Env) {
			if err := checkEnvName(name); err != nil {
				return err
			}
			if err := checkEnvValue(c.Env[name]); err != nil {
				return fmt.Errorf("variable %s: %w", name, err)
			}
		}
	case KindOAuth:
		return c.OAuth.validate()
	}
	return nil
}

func (t *OAuthToken) validate() error {
	if t.AccessToken == "" {
		return errors.New("access_token is empty")
	}
	if err := checkToken("access_token", t.AccessToken); err != nil {
		return err
	}
	if t.RefreshToken != "" {
		if err := checkToken("refresh_token", t.RefreshToken); err != nil {
			return err
		}
	}
	if t.TokenType != "" && !isHTTPToken(t.TokenType) {
		return errors.New("token_type is not an HTTP auth scheme (such as Bearer)")
	}
	for i := 0; i < len(t.Scope); i++ {
		if b := t.Scope[i]; b < 0x20 || b > 0x7e {
			return fmt.Errorf("scope has a control or non-ASCII byte at offset %d", i)
		}
	}
	return nil
}

// size is the sum of the lengths of every name and value in c.
func (c Credential) size() int {
	n := len(c.Token)
	for k, v := range c.Headers {
		n += len(k) + len(v)
	}
	for k, v := range c.Env {
		n += len(k) + len(v)
	}
	if t := c.OAuth; t != nil {
		n += len(t.AccessToken) + len(t.RefreshToken) + len(t.TokenType) + len(t.Scope)
	}
	return n
}

// HTTPHeaders returns the request headers that present c to an HTTP or
// WebSocket upstream, in a fresh map the caller may change. It returns nil for
// KindEnv and for a credential that fails Validate.
func (c Credential) HTTPHeaders() http.Header {
	if c.Validate() != nil {
		return nil
	}
	switch c.Kind {
	case KindBearer:
		return http.Header{"Authorization": {"Bearer " + c.Token}}
	case KindHeaders:
		h := make(http.Header, len(c.Headers))
		for k, v := range c.Headers {
			h[k] = []string{v}
		}
		return h
	case KindOAuth:
		scheme := c.OAuth.TokenType
		// Token endpoints often answer "bearer"; some resource servers only
		// accept the scheme spelled as in RFC 6750.
		if scheme == "" || strings.EqualFold(scheme, "bearer") {
			scheme = "Bearer"
		}
		return http.Header{"Authorization": {scheme + " " + c.OAuth.AccessToken}}
	}
	return nil
}

// Environ returns the NAME=value pairs that present c to a stdio upstream,
// sorted by name, for exec.Cmd.Env. It returns nil for every kind but KindEnv
// and for a credential that fails Validate.
func (c Credential) Environ() []string {
	if c.Kind != KindEnv || c.Validate() != nil {
		return nil
	}
	env := make([]string, 0, len(c.Env))
	for _, name := range sortedKeys(c.Env) {
		env = append(env, name+"="+c.Env[name])
	}
	return env
}

func (k Kind) valid() bool {
	switch k {
	case KindBearer, KindHeaders, KindEnv, KindOAuth:
		return true
	}
	return false
}

// safe returns k for messages: a caller that put a secret in Kind by mistake
// must not see it echoed.
func (k Kind) safe() string {
	if k.valid() {
		return string(k)
	}
	return "unknown-kind"
}

// checkToken accepts visible ASCII only: tokens travel in an Authorization
// header, where a space would split the value and a control byte could
// inject another header.
func checkToken(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", field)
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b <= ' ' || b > '~' {
			return fmt.Errorf("%s has a space, control or non-ASCII byte at offset %d", field, i)
		}
	}
	return nil
}

func checkHeaderName(name string) error {
	if !isHTTPToken(name) {
		return errInvalidHeaderName
	}
	canon := http.CanonicalHeaderKey(name)
	if managedHeaders[canon] || strings.HasPrefix(canon, managedHeaderPrefix) {
		return fmt.Errorf("header %s is set by the gateway, not by a credential", canon)
	}
	return nil
}

func checkHeaderValue(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	if v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t' {
		return errors.New("value has leading or trailing whitespace")
	}
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return fmt.Errorf("value has a control byte at offset %d", i)
		}
	}
	if !utf8.ValidString(v) {
		return errors.New("value is not valid UTF-8")
	}
	return nil
}

func checkEnvName(name string) error {
	if !isEnvName(name) {
		return errInvalidEnvName
	}
	// A credential must not be able to load code into the upstream process.
	if strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "DYLD_") {
		return errors.New("dynamic loader variables (LD_*, DYLD_*) are refused")
	}
	return nil
}

func checkEnvValue(v string) error {
	if i := strings.IndexByte(v, 0); i >= 0 {
		return fmt.Errorf("value has a NUL byte at offset %d", i)
	}
	if !utf8.ValidString(v) {
		return errors.New("value is not valid UTF-8")
	}
	return nil
}

// isHTTPToken reports whether s is a token (RFC 9110 section 5.6.2).
func isHTTPToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return true
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b == '_', 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z':
		case '0' <= b && b <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
