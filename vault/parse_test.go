package vault

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseCredential(t *testing.T) {
	tests := []struct {
		name    string
		kind    Kind
		in      string
		want    Credential
		wantErr string
	}{
		// bearer
		{name: "bearer", kind: KindBearer, in: "s3cr3t-tok", want: Credential{Kind: KindBearer, Token: "s3cr3t-tok"}},
		{name: "bearer LF", kind: KindBearer, in: "s3cr3t-tok\n", want: Credential{Kind: KindBearer, Token: "s3cr3t-tok"}},
		{name: "bearer CRLF", kind: KindBearer, in: "s3cr3t-tok\r\n", want: Credential{Kind: KindBearer, Token: "s3cr3t-tok"}},
		{name: "bearer two newlines", kind: KindBearer, in: "s3cr3t-tok\n\n",
			wantErr: "parse bearer credential: token has a space, control or non-ASCII byte at offset 10"},
		{name: "bearer empty", kind: KindBearer, in: "\n", wantErr: "parse bearer credential: token is empty"},
		{name: "bearer with scheme", kind: KindBearer, in: "Bearer s3cr3t-tok\n",
			wantErr: `parse bearer credential: input starts with "Bearer ": pipe the token alone`},
		{name: "bearer space", kind: KindBearer, in: "s3cr3t tok",
			wantErr: "parse bearer credential: token has a space, control or non-ASCII byte at offset 6"},
		{name: "too large", kind: KindBearer, in: strings.Repeat("s", MaxCredentialSize+1),
			wantErr: "parse bearer credential: input is larger than 65536 bytes"},

		// headers
		{name: "header lines", kind: KindHeaders, in: "Authorization: Basic s3cr3t\r\nx-api-key:\t s3cr3t-2 \n\n",
			want: Credential{Kind: KindHeaders, Headers: map[string]string{"Authorization": "Basic s3cr3t", "X-Api-Key": "s3cr3t-2"}}},
		{name: "header value with colon", kind: KindHeaders, in: "X-Auth: s3cr3t:tok",
			want: Credential{Kind: KindHeaders, Headers: map[string]string{"X-Auth": "s3cr3t:tok"}}},
		{name: "header JSON", kind: KindHeaders, in: ` {"x-api-key": "s3cr3t", "X-Other": "s3cr3t-2"}` + "\n",
			want: Credential{Kind: KindHeaders, Headers: map[string]string{"X-Api-Key": "s3cr3t", "X-Other": "s3cr3t-2"}}},
		{name: "header no colon", kind: KindHeaders, in: "X-Ok: v\ns3cr3t",
			wantErr: `parse headers credential: line 2: want "Name: value"`},
		{name: "header bad name", kind: KindHeaders, in: "s3cr3t tok: v",
			wantErr: "parse headers credential: line 1: invalid header name (want an HTTP token such as X-Api-Key)"},
		{name: "header space before colon", kind: KindHeaders, in: "X-Api-Key : s3cr3t",
			wantErr: "parse headers credential: line 1: invalid header name (want an HTTP token such as X-Api-Key)"},
		{name: "header duplicate", kind: KindHeaders, in: "X-S3cr3t: a\n\nx-s3cr3t: b",
			wantErr: "parse headers credential: line 3: duplicate header (first at line 1)"},
		{name: "header host", kind: KindHeaders, in: "host: s3cr3t.example",
			wantErr: "parse headers credential: line 1: header Host is set by the gateway, not by a credential"},
		{name: "header transfer-encoding", kind: KindHeaders, in: "Transfer-Encoding: chunked",
			wantErr: "parse headers credential: line 1: header Transfer-Encoding is set by the gateway, not by a credential"},
		{name: "header empty value", kind: KindHeaders, in: "X-Api-Key:  ",
			wantErr: "parse headers credential: line 1: empty value"},
		{name: "header control byte", kind: KindHeaders, in: "X-Api-Key: s3cr3t\x00tok",
			wantErr: "parse headers credential: line 1: value has a control byte at offset 6"},
		{name: "header nothing", kind: KindHeaders, in: "\n  \n", wantErr: "parse headers credential: no headers"},
		{name: "header JSON empty", kind: KindHeaders, in: "{}", wantErr: "parse headers credential: no headers"},
		{name: "header JSON number", kind: KindHeaders, in: `{"X-A": "s3cr3t", "X-B": 12345}`,
			wantErr: "parse headers credential: entry 2: value is not a string"},
		{name: "header JSON nested", kind: KindHeaders, in: `{"X-A": {"s3cr3t": ["x"]}}`,
			wantErr: "parse headers credential: entry 1: value is not a string"},
		{name: "header JSON duplicate", kind: KindHeaders, in: `{"X-A": "s3cr3t", "x-a": "s3cr3t"}`,
			wantErr: "parse headers credential: entry 2: duplicate header (first at entry 1)"},
		{name: "header JSON truncated", kind: KindHeaders, in: `{"X-A": "s3cr3t",`,
			wantErr: "parse headers credential: malformed JSON near byte 17 (want an object of strings)"},
		{name: "header JSON bad token", kind: KindHeaders, in: `{"X-A": s3cr3t}`,
			wantErr: "parse headers credential: malformed JSON near byte 8 (want an object of strings)"},
		{name: "header JSON trailing", kind: KindHeaders, in: `{"X-A": "v"} s3cr3t`,
			wantErr: "parse headers credential: unexpected data after the JSON object near byte 13"},

		// env
		{name: "env lines", kind: KindEnv, in: "# comment\nAPI_KEY=s3cr3t=x\r\n\nEMPTY=\n_x1= spaced \n",
			want: Credential{Kind: KindEnv, Env: map[string]string{"API_KEY": "s3cr3t=x", "EMPTY": "", "_x1": " spaced "}}},
		{name: "env JSON multiline", kind: KindEnv, in: `{"PEM": "-----BEGIN-----\ns3cr3t\n"}`,
			want: Credential{Kind: KindEnv, Env: map[string]string{"PEM": "-----BEGIN-----\ns3cr3t\n"}}},
		{name: "env no equals", kind: KindEnv, in: "s3cr3t",
			wantErr: "parse env credential: line 1: want NAME=value"},
		{name: "env bad name", kind: KindEnv, in: "OK=1\n9S3CR3T=x",
			wantErr: "parse env credential: line 2: invalid variable name (want [A-Za-z_][A-Za-z0-9_]*)"},
		{name: "env export", kind: KindEnv, in: "export API_KEY=s3cr3t",
			wantErr: "parse env credential: line 1: invalid variable name (want [A-Za-z_][A-Za-z0-9_]*)"},
		{name: "env loader", kind: KindEnv, in: "DYLD_INSERT_LIBRARIES=s3cr3t.dylib",
			wantErr: "parse env credential: line 1: variable DYLD_* is refused: it can change what the upstream process runs, loads, trusts or connects to; an env credential carries data only, so name the variable the server reads its secret from (such as API_TOKEN)"},
		{name: "env duplicate", kind: KindEnv, in: "A=s3cr3t\nA=s3cr3t",
			wantErr: "parse env credential: line 2: duplicate variable (first at line 1)"},
		{name: "env JSON NUL", kind: KindEnv, in: `{"A": "s3cr3t\u0000"}`,
			wantErr: "parse env credential: entry 1: value has a NUL byte at offset 6"},
		{name: "env nothing", kind: KindEnv, in: "# only a comment\n", wantErr: "parse env credential: no variables"},

		// oauth
		{name: "oauth full", kind: KindOAuth,
			in: `{"access_token":"s3cr3t-a","refresh_token":"s3cr3t-r","token_type":"Bearer","expiry":"2030-01-02T03:04:05+02:00","scope":"read write"}`,
			want: Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "s3cr3t-a", RefreshToken: "s3cr3t-r", TokenType: "Bearer",
				Expiry: time.Date(2030, 1, 2, 1, 4, 5, 0, time.UTC), Scope: "read write"}}},
		{name: "oauth minimal", kind: KindOAuth, in: `{"access_token":"s3cr3t-a","expiry":""}` + "\n",
			want: Credential{Kind: KindOAuth, OAuth: &OAuthToken{AccessToken: "s3cr3t-a"}}},
		{name: "oauth unknown field", kind: KindOAuth, in: `{"access_token":"s3cr3t-a","expires_in":3600}`,
			wantErr: "parse oauth credential: entry 2: unknown field (want access_token, refresh_token, token_type, expiry, scope)"},
		{name: "oauth missing access", kind: KindOAuth, in: `{"refresh_token":"s3cr3t-r"}`,
			wantErr: `parse oauth credential: field "access_token": missing`},
		{name: "oauth empty access", kind: KindOAuth, in: `{"access_token":""}`,
			wantErr: "parse oauth credential: access_token is empty"},
		{name: "oauth access not string", kind: KindOAuth, in: `{"access_token":12345}`,
			wantErr: `parse oauth credential: field "access_token": value is not a string`},
		{name: "oauth duplicate", kind: KindOAuth, in: `{"access_token":"s3cr3t-a","access_token":"s3cr3t-b"}`,
			wantErr: `parse oauth credential: field "access_token": duplicate`},
		{name: "oauth bad expiry", kind: KindOAuth, in: `{"access_token":"s3cr3t-a","expiry":"s3cr3t"}`,
			wantErr: `parse oauth credential: field "expiry": not an RFC 3339 time such as 2006-01-02T15:04:05Z`},
		{name: "oauth space in token", kind: KindOAuth, in: `{"access_token":"s3cr3t a"}`,
			wantErr: "parse oauth credential: access_token has a space, control or non-ASCII byte at offset 6"},
		{name: "oauth bad type", kind: KindOAuth, in: `{"access_token":"a","token_type":"s3cr3t type"}`,
			wantErr: "parse oauth credential: token_type is not an HTTP auth scheme (such as Bearer)"},
		{name: "oauth not JSON", kind: KindOAuth, in: `s3cr3t`,
			wantErr: "parse oauth credential: malformed JSON near byte 0 (want an object of strings)"},
		{name: "oauth array", kind: KindOAuth, in: `["s3cr3t"]`,
			wantErr: "parse oauth credential: malformed JSON near byte 1 (want an object of strings)"},

		{name: "unknown kind", kind: "s3cr3t", in: "x",
			wantErr: "parse unknown-kind credential: unknown kind (want bearer, headers, env or oauth)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCredential(tt.kind, []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseCredential()=%v, want error %q", got, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("ParseCredential() error=%q, want %q", err, tt.wantErr)
				}
				// Every value in the inputs above contains "s3cr3t" (any case).
				if strings.Contains(strings.ToLower(err.Error()), "s3cr3t") {
					t.Fatalf("error %q leaks input", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCredential() error=%v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseCredential() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
