package vault

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cred Credential
		want string // "" for valid
	}{
		{"bearer", Credential{Kind: KindBearer, Token: "abc"}, ""},
		{"empty", Credential{Kind: KindBearer}, "invalid bearer credential: empty"},
		{"zero", Credential{}, "invalid unknown-kind credential: unknown kind (want bearer, headers, env or oauth)"},
		{"unknown kind", Credential{Kind: "s3cr3t-kind", Token: "abc"}, "invalid unknown-kind credential: unknown kind (want bearer, headers, env or oauth)"},
		{"mixed fields", Credential{Kind: KindBearer, Token: "abc", Env: map[string]string{"A": "b"}}, "invalid bearer credential: fields of another kind are set"},
		{"bearer space", Credential{Kind: KindBearer, Token: "ab s3cr3t"}, "invalid bearer credential: token has a space, control or non-ASCII byte at offset 2"},
		{"bearer newline", Credential{Kind: KindBearer, Token: "s3cr3t\n"}, "invalid bearer credential: token has a space, control or non-ASCII byte at offset 6"},
		{"too large", Credential{Kind: KindBearer, Token: strings.Repeat("a", MaxCredentialSize+1)}, "invalid bearer credential: larger than 65536 bytes"},
		{"headers", Credential{Kind: KindHeaders, Headers: map[string]string{"X-Api-Key": "k"}}, ""},
		{"no headers", Credential{Kind: KindHeaders, Headers: map[string]string{}}, "invalid headers credential: no headers"},
		{"host", Credential{Kind: KindHeaders, Headers: map[string]string{"Host": "x"}}, "invalid headers credential: header Host is set by the gateway, not by a credential"},
		{"content-length", Credential{Kind: KindHeaders, Headers: map[string]string{"Content-Length": "1"}}, "invalid headers credential: header Content-Length is set by the gateway, not by a credential"},
		{"hop-by-hop", Credential{Kind: KindHeaders, Headers: map[string]string{"Connection": "close"}}, "invalid headers credential: header Connection is set by the gateway, not by a credential"},
		{"mcp session", Credential{Kind: KindHeaders, Headers: map[string]string{"Mcp-Session-Id": "1"}}, "invalid headers credential: header Mcp-Session-Id is set by the gateway, not by a credential"},
		{"websocket", Credential{Kind: KindHeaders, Headers: map[string]string{"Sec-Websocket-Protocol": "x"}}, "invalid headers credential: header Sec-Websocket-Protocol is set by the gateway, not by a credential"},
		{"not canonical", Credential{Kind: KindHeaders, Headers: map[string]string{"x-api-key": "k"}}, "invalid headers credential: header name not in canonical form (see http.CanonicalHeaderKey)"},
		{"bad header name", Credential{Kind: KindHeaders, Headers: map[string]string{"s3cr3t value": "k"}}, "invalid headers credential: invalid header name (want an HTTP token such as X-Api-Key)"},
		{"header CRLF", Credential{Kind: KindHeaders, Headers: map[string]string{"X-Api-Key": "s3cr3t\r\nX-Evil: 1"}}, "invalid headers credential: header X-Api-Key: value has a control byte at offset 6"},
		{"header padded", Credential{Kind: KindHeaders, Headers: map[string]string{"X-Api-Key": " s3cr3t"}}, "invalid headers credential: header X-Api-Key: value has leading or trailing whitespace"},
		{"header bad utf8", Credential{Kind: KindHeaders, Headers: map[string]string{"X-Api-Key": "s3cr3t\xff"}}, "invalid headers credential: header X-Api-Key: value is not valid UTF-8"},
		{"env", Credential{Kind: KindEnv, Env: map[string]string{"_A1": "multi\nline", "B": ""}}, ""},
		{"no env", Credential{Kind: KindEnv, Env: map[string]string{}}, "invalid env credential: no variables"},
		{"env digit", Credential{Kind: KindEnv, Env: map[string]string{"1A": "x"}}, "invalid env credential: invalid variable name (want [A-Za-z_][A-Za-z0-9_]*)"},
		{"env equals", Credential{Kind: KindEnv, Env: map[string]string{"A=B": "x"}}, "invalid env credential: invalid variable name (want [A-Za-z_][A-Za-z0-9_]*)"},
		{"env loader", Credential{Kind: KindEnv, Env: map[string]string{"LD_PRELOAD": "evil.so"}}, "invalid env credential: variable LD_* is refused: it can change what the upstream process runs, loads, trusts or connects to; an env credential carries data only, so name the variable the server reads its secret from (such as API_TOKEN)"},
		{"env NUL", Credential{Kind: KindEnv, Env: map[string]string{"A": "s3cr3t\x00"}}, "invalid env credential: variable A: value has a NUL byte at offset 6"},
		{"oauth", Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "a"}}, ""},
		{"oauth empty", Credential{Kind: KindOAuth, OAuth: &OAuthToken{}}, "invalid oauth credential: access_token is empty"},
		{"oauth refresh", Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "a", RefreshToken: "s3cr3t\x7f"}}, "invalid oauth credential: refresh_token has a space, control or non-ASCII byte at offset 6"},
		{"oauth type", Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "a", TokenType: "Bear er"}}, "invalid oauth credential: token_type is not an HTTP auth scheme (such as Bearer)"},
		{"oauth scope", Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "a", Scope: "a\nb"}}, "invalid oauth credential: scope has a control or non-ASCII byte at offset 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cred.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Fatalf("Validate()=%q, want %q", got, tt.want)
			}
			if strings.Contains(got, "s3cr3t") {
				t.Fatalf("Validate()=%q leaks a value", got)
			}
		})
	}
	for _, s := range sampleCredentials() {
		if err := s.cred.Validate(); err != nil {
			t.Errorf("%s: Validate()=%v, want nil", s.name, err)
		}
	}
}

func TestHTTPHeaders(t *testing.T) {
	tests := []struct {
		name string
		cred Credential
		want http.Header
	}{
		{"bearer", Credential{Kind: KindBearer, Token: "t1"}, http.Header{"Authorization": {"Bearer t1"}}},
		{"headers", Credential{Kind: KindHeaders, Headers: map[string]string{"X-Api-Key": "k", "Authorization": "Basic x"}},
			http.Header{"X-Api-Key": {"k"}, "Authorization": {"Basic x"}}},
		{"oauth no type", Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "a1"}}, http.Header{"Authorization": {"Bearer a1"}}},
		{"oauth lowercase bearer", Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "a1", TokenType: "bearer"}}, http.Header{"Authorization": {"Bearer a1"}}},
		{"oauth other type", Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "a1", TokenType: "DPoP"}}, http.Header{"Authorization": {"DPoP a1"}}},
		{"env", Credential{Kind: KindEnv, Env: map[string]string{"A": "b"}}, nil},
		{"invalid", Credential{Kind: KindBearer, Token: "a\r\nb"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.cred.HTTPHeaders()); diff != "" {
				t.Fatalf("HTTPHeaders() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnviron(t *testing.T) {
	c := Credential{Kind: KindEnv, Env: map[string]string{"B": "2", "A": "x=y", "C": ""}}
	if diff := cmp.Diff([]string{"A=x=y", "B=2", "C="}, c.Environ()); diff != "" {
		t.Fatalf("Environ() mismatch (-want +got):\n%s", diff)
	}
	if got := (Credential{Kind: KindBearer, Token: "t"}).Environ(); got != nil {
		t.Fatalf("bearer Environ()=%v, want nil", got)
	}
}

func TestCredentialString(t *testing.T) {
	s := sampleCredentials()
	tests := []struct {
		cred           Credential
		str, goString  string
		json, slogJSON string
	}{
		{
			s[0].cred,
			"Credential(bearer)",
			`vault.Credential{Kind:"bearer", Token:REDACTED}`,
			`{"kind":"bearer"}`,
			`{"kind":"bearer"}`,
		},
		{
			s[1].cred,
			"Credential(headers: Authorization, X-Api-Key)",
			`vault.Credential{Kind:"headers", Headers:{"Authorization":REDACTED, "X-Api-Key":REDACTED}}`,
			`{"kind":"headers","headers":["Authorization","X-Api-Key"]}`,
			`{"kind":"headers","headers":["Authorization","X-Api-Key"]}`,
		},
		{
			s[2].cred,
			"Credential(env: API_KEY, EMPTY, SERVICE_PEM)",
			`vault.Credential{Kind:"env", Env:{"API_KEY":REDACTED, "EMPTY":REDACTED, "SERVICE_PEM":REDACTED}}`,
			`{"kind":"env","env":["API_KEY","EMPTY","SERVICE_PEM"]}`,
			`{"kind":"env","env":["API_KEY","EMPTY","SERVICE_PEM"]}`,
		},
		{
			s[3].cred,
			"Credential(oauth, expires 2030-01-02T03:04:05Z, refreshable)",
			`vault.Credential{Kind:"oauth", OAuth:vault.OAuthToken{AccessToken:REDACTED, RefreshToken:REDACTED, Expiry:"2030-01-02T03:04:05Z"}}`,
			`{"kind":"oauth","oauth":{"expiry":"2030-01-02T03:04:05.000000006Z","refreshable":true}}`,
			`{"kind":"oauth","oauth":{"refreshable":true,"expiry":"2030-01-02T03:04:05.000000006Z"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.cred.Kind), func(t *testing.T) {
			if got := tt.cred.String(); got != tt.str {
				t.Errorf("String()=%q, want %q", got, tt.str)
			}
			if got := fmt.Sprintf("%#v", tt.cred); got != tt.goString {
				t.Errorf("%%#v=%q, want %q", got, tt.goString)
			}
			j, err := json.Marshal(tt.cred)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(j); got != tt.json {
				t.Errorf("json.Marshal=%s, want %s", got, tt.json)
			}
			var buf bytes.Buffer
			slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
						return slog.Attr{}
					}
					return a
				},
			})).Info("m", "cred", tt.cred)
			if got, want := strings.TrimSpace(buf.String()), `{"cred":`+tt.slogJSON+`}`; got != want {
				t.Errorf("slog JSON=%s, want %s", got, want)
			}
		})
	}
}

// TestCredentialNeverFormatsSecrets tries every way a Credential commonly
// reaches text and checks no secret comes out.
func TestCredentialNeverFormatsSecrets(t *testing.T) {
	for _, s := range sampleCredentials() {
		t.Run(s.name, func(t *testing.T) {
			c := s.cred
			var outs []string
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10.3v"} {
				outs = append(outs,
					fmt.Sprintf(verb, c),
					fmt.Sprintf(verb, &c),
					fmt.Sprintf(verb, []Credential{c}),
					fmt.Sprintf(verb, map[string]Credential{"k": c}),
					fmt.Sprintf(verb, struct{ C Credential }{c}),
					fmt.Sprintf(verb, struct{ C *Credential }{&c}),
				)
				if c.OAuth != nil {
					outs = append(outs, fmt.Sprintf(verb, c.OAuth), fmt.Sprintf(verb, *c.OAuth))
				}
			}
			outs = append(outs, fmt.Sprint(c), fmt.Sprintln(c), c.String(), c.GoString())
			outs = append(outs, fmt.Errorf("wrapped: %v", c).Error())

			var buf bytes.Buffer
			for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
				l := slog.New(h)
				l.Info("m", "cred", c, "ptr", &c, slog.Any("any", c), slog.Group("g", "cred", c))
				if c.OAuth != nil {
					l.Info("m", "oauth", c.OAuth, "oauthv", *c.OAuth)
				}
			}
			outs = append(outs, buf.String())

			for _, v := range []any{c, &c, []Credential{c}, struct{ C Credential }{c}, c.OAuth} {
				j, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				outs = append(outs, string(j))
			}

			for _, out := range outs {
				for _, secret := range allSecrets {
					if strings.Contains(out, secret) {
						t.Fatalf("output %q contains secret %q", out, secret)
					}
				}
			}
		})
	}
}

func TestIdentityNeverFormatsPrivateKey(t *testing.T) {
	id := mustGenerate(t)
	priv := id.x.String()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "id", id, "v", *id)
	keys := NewKeys(id)
	outs := []string{buf.String(), fmt.Sprintf("%v %+v %#v %s %d", id, id, id, *id, *id), fmt.Sprintf("%v %+v %#v", keys, keys, *keys)}
	for _, out := range outs {
		if strings.Contains(out, priv) || strings.Contains(out, "AGE-SECRET-KEY") {
			t.Fatalf("output %q contains the private key", out)
		}
	}
	if got, want := fmt.Sprint(id), "vault identity "+id.ID(); got != want {
		t.Fatalf("Sprint(id)=%q, want %q", got, want)
	}
	if got, want := len(id.ID()), 16; got != want {
		t.Fatalf("len(ID())=%d, want %d", got, want)
	}
	if !strings.HasPrefix(id.Recipient(), "age1") {
		t.Fatalf("Recipient()=%q, want age1 prefix", id.Recipient())
	}
	if got, want := testKeys(t).Current().ID(), "19aa58571131f8b4"; got != want {
		t.Fatalf("test key ID()=%q, want %q (sha256 of the recipient, 8 bytes hex)", got, want)
	}
}

func TestOAuthTokenZeroExpiryString(t *testing.T) {
	tok := OAuthToken{AccessToken: "a"}
	if got, want := tok.String(), "no expiry"; got != want {
		t.Fatalf("String()=%q, want %q", got, want)
	}
	j, err := json.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(j), `{"refreshable":false}`; got != want {
		t.Fatalf("json=%s, want %s", got, want)
	}
}

// TestEnvNameRule: every variable that decides what the upstream process
// runs, loads, trusts or where it connects is refused, in any case; names
// that only carry data pass.
func TestEnvNameRule(t *testing.T) {
	refused := map[string]string{ // name → the rule entry the refusal names
		"BASH_ENV": "BASH_ENV", "ENV": "ENV", "NODE_OPTIONS": "NODE_*", "NODE_PATH": "NODE_*", "NODE_EXTRA_CA_CERTS": "NODE_*",
		"PYTHONPATH": "PYTHON*", "PYTHONSTARTUP": "PYTHON*", "PYTHONHOME": "PYTHON*", "PERL5OPT": "PERL*", "PERL5LIB": "PERL*",
		"PERLLIB": "PERL*", "RUBYOPT": "RUBY*", "RUBYLIB": "RUBY*", "JAVA_TOOL_OPTIONS": "JAVA_*", "_JAVA_OPTIONS": "_JAVA_OPTIONS",
		"JDK_JAVA_OPTIONS": "JDK_*", "CLASSPATH": "CLASSPATH", "PATH": "PATH", "LD_PRELOAD": "LD_*", "LD_LIBRARY_PATH": "LD_*",
		"LD_AUDIT": "LD_*", "DYLD_INSERT_LIBRARIES": "DYLD_*", "DYLD_LIBRARY_PATH": "DYLD_*", "HOME": "HOME", "SHELL": "SHELL",
		"IFS": "IFS", "CDPATH": "CDPATH", "PROMPT_COMMAND": "PROMPT_COMMAND", "PS4": "PS4", "SHELLOPTS": "SHELLOPTS",
		"BASHOPTS": "BASHOPTS", "EDITOR": "EDITOR", "VISUAL": "VISUAL", "PAGER": "PAGER", "BROWSER": "BROWSER",
		"SSH_ASKPASS": "SSH_ASKPASS", "SUDO_ASKPASS": "SUDO_ASKPASS", "GOFLAGS": "GOFLAGS", "GOENV": "GOENV", "GOROOT": "GOROOT",
		"GOPATH": "GOPATH", "GOTOOLCHAIN": "GOTOOLCHAIN", "PHPRC": "PHPRC", "PHP_INI_SCAN_DIR": "PHP_INI_SCAN_DIR",
		"TCLLIBPATH": "TCLLIBPATH", "GCONV_PATH": "GCONV_PATH", "LOCPATH": "LOCPATH", "NLSPATH": "NLSPATH",
		"GLIBC_TUNABLES": "GLIBC_TUNABLES", "HOSTALIASES": "HOSTALIASES", "RES_OPTIONS": "RES_OPTIONS", "LOCALDOMAIN": "LOCALDOMAIN",
		"SSL_CERT_FILE": "SSL_CERT_FILE", "SSL_CERT_DIR": "SSL_CERT_DIR", "CURL_CA_BUNDLE": "CURL_CA_BUNDLE",
		"REQUESTS_CA_BUNDLE": "REQUESTS_CA_BUNDLE", "HTTP_PROXY": "HTTP_PROXY", "HTTPS_PROXY": "HTTPS_PROXY",
		"ALL_PROXY": "ALL_PROXY", "NO_PROXY": "NO_PROXY", "FTP_PROXY": "FTP_PROXY", "NPM_CONFIG_SCRIPT_SHELL": "NPM_CONFIG_*",
		"GEM_PATH": "GEM_*", "BUNDLE_GEMFILE": "BUNDLE_*", "DOTNET_STARTUP_HOOKS": "DOTNET_*", "CORECLR_PROFILER_PATH": "CORECLR_*",
		"COR_PROFILER_PATH": "COR_*", "LUA_INIT": "LUA_*", "GIT_SSH_COMMAND": "GIT_*", "GIT_EXEC_PATH": "GIT_*",
		"GIT_CONFIG_COUNT": "GIT_*", "BASH_FUNC_X": "BASH_FUNC_*", "PIP_INDEX_URL": "PIP_*", "UV_INDEX_URL": "UV_*",
		// case is ignored: several of these are honoured in lower case
		"http_proxy": "HTTP_PROXY", "ld_preload": "LD_*", "Path": "PATH", "node_options": "NODE_*",
	}
	for name, entry := range refused {
		t.Run(name, func(t *testing.T) {
			err := Credential{Kind: KindEnv, Env: map[string]string{name: "s3cr3t"}}.Validate()
			want := "invalid env credential: variable " + entry + " is refused: it can change what the upstream process runs, loads, trusts or connects to; " +
				"an env credential carries data only, so name the variable the server reads its secret from (such as API_TOKEN)"
			if err == nil || err.Error() != want {
				t.Fatalf("Validate(%s) = %v, want %q", name, err, want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatal("refusal shows the value")
			}
		})
	}
	for _, name := range []string{"API_TOKEN", "GITHUB_TOKEN", "OPENAI_API_KEY", "GOOGLE_API_KEY", "LINEAR_API_KEY", "DATABASE_URL",
		"AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "NODEJS_TOKEN", "PATHWAY_KEY", "HOMER", "_TOKEN", "api_key"} {
		t.Run("allowed "+name, func(t *testing.T) {
			if err := (Credential{Kind: KindEnv, Env: map[string]string{name: "s3cr3t"}}).Validate(); err != nil {
				t.Fatalf("Validate(%s) = %v, want nil", name, err)
			}
		})
	}
}
