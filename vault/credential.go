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

// The rule for env credential names: a credential's variables carry data
// (tokens, keys, passwords) to the upstream process, never configuration
// that decides what that process runs, loads, trusts or where it connects.
// A name is refused when, ignoring case, it is one of refusedEnvNames or
// starts with one of refusedEnvPrefixes: the dynamic loaders, the shells,
// the language runtimes (Python, Node.js, Perl, Ruby, Java, .NET, Go, PHP,
// Lua, Tcl), git, the C library's locale and resolver files, TLS trust
// stores and proxies, and programs other programs launch. Case is ignored
// because some of these are honoured in lower case (http_proxy).
var refusedEnvNames = map[string]bool{
	// what runs, and the shell's startup and word splitting
	"PATH": true, "HOME": true, "SHELL": true, "ENV": true, "BASH_ENV": true, "IFS": true,
	"CDPATH": true, "PROMPT_COMMAND": true, "PS4": true, "SHELLOPTS": true, "BASHOPTS": true,
	"EDITOR": true, "VISUAL": true, "PAGER": true, "BROWSER": true, "SSH_ASKPASS": true, "SUDO_ASKPASS": true,
	// language runtimes whose variables have no common prefix
	"CLASSPATH": true, "_JAVA_OPTIONS": true, "GOFLAGS": true, "GOENV": true, "GOROOT": true, "GOPATH": true,
	"GOTOOLCHAIN": true, "PHPRC": true, "PHP_INI_SCAN_DIR": true, "TCLLIBPATH": true,
	// C library: code loaded through locale and character set files, tunables
	"GCONV_PATH": true, "LOCPATH": true, "NLSPATH": true, "GLIBC_TUNABLES": true,
	"HOSTALIASES": true, "RES_OPTIONS": true, "LOCALDOMAIN": true,
	// whom the process trusts and how it reaches the network
	"SSL_CERT_FILE": true, "SSL_CERT_DIR": true, "CURL_CA_BUNDLE": true, "REQUESTS_CA_BUNDLE": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "ALL_PROXY": true, "NO_PROXY": true, "FTP_PROXY": true,
}

// refusedEnvPrefixes are the name prefixes of refusedEnvNames's rule.
var refusedEnvPrefixes = []string{
	"LD_", "DYLD_", // dynamic loaders
	"PYTHON",               // PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, ...
	"NODE_", "NPM_CONFIG_", // NODE_OPTIONS, NODE_PATH, NODE_EXTRA_CA_CERTS, npm settings
	"PERL",                    // PERL5OPT, PERL5LIB, PERLLIB, PERL5DB
	"RUBY", "GEM_", "BUNDLE_", // RUBYOPT, RUBYLIB, gem and bundler paths
	"JAVA_", "JDK_", // JAVA_TOOL_OPTIONS, JDK_JAVA_OPTIONS
	"DOTNET_", "CORECLR_", "COR_", // startup hooks and profilers
	"LUA_",        // LUA_INIT, LUA_PATH, LUA_CPATH
	"GIT_",        // GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_*
	"BASH_FUNC_",  // exported shell functions
	"PIP_", "UV_", // package installers' indexes and hooks
}

func checkEnvName(name string) error {
	if !isEnvName(name) {
		return errInvalidEnvName
	}
	// The refusal names the rule's entry, not the variable: a prefix match
	// could carry anything after the prefix.
	upper := strings.ToUpper(name)
	if refusedEnvNames[upper] {
		return refusedEnvName(upper)
	}
	for _, p := range refusedEnvPrefixes {
		if strings.HasPrefix(upper, p) {
			return refusedEnvName(p + "*")
		}
	}
	return nil
}

func refusedEnvName(entry string) error {
	return fmt.Errorf("variable %s is refused: it can change what the upstream process runs, loads, trusts or connects to; "+
		"an env credential carries data only, so name the variable the server reads its secret from (such as API_TOKEN)", entry)
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
