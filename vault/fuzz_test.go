package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpora in testdata/fuzz")

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(nil))
	f.Add([]byte("MGVE"))
	f.Add([]byte("MGVE\x02"))
	f.Add(append(appendEnvelopeHeader(nil, [keyIDLen]byte{}, len(ageIntro)), ageIntro...))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := DecodeEnvelope(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("DecodeEnvelope error=%v, want ErrCorrupt or ErrUnknownVersion", err)
			}
			return
		}
		// A decoded envelope is exactly its parts: nothing ignored, nothing left over.
		re := append(appendEnvelopeHeader(nil, env.rawKeyID, len(env.Ciphertext)), env.Ciphertext...)
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoded envelope differs from input")
		}
		if len(b) > MaxEnvelopeSize {
			t.Fatalf("accepted %d bytes, over MaxEnvelopeSize", len(b))
		}
	})
}

func FuzzUnseal(f *testing.F) {
	keys := testKeys(f)
	f.Add([]byte("MGVE\x01"))
	f.Add(append(appendEnvelopeHeader(nil, keys.Current().rawID, len(ageIntro)), ageIntro...))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := keys.Unseal(b, testAAD)
		if err != nil {
			for _, want := range []error{ErrCorrupt, ErrUnknownVersion, ErrUnknownKey, ErrAADMismatch} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("Unseal error=%v, want one of the sentinel errors", err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Unseal returned an invalid credential: %v", err)
		}
		// Whatever opens must seal and open again to the same credential.
		sealed, err := keys.Seal(c, testAAD)
		if err != nil {
			t.Fatalf("Seal(unsealed): %v", err)
		}
		again, err := keys.Unseal(sealed, testAAD)
		if err != nil {
			t.Fatalf("Unseal(Seal(unsealed)): %v", err)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}

func FuzzParseCredential(f *testing.F) {
	for _, k := range []Kind{KindBearer, KindHeaders, KindEnv, KindOAuth} {
		f.Add(string(k), []byte(""))
	}
	f.Fuzz(func(t *testing.T, kind string, secret []byte) {
		c, err := ParseCredential(Kind(kind), secret)
		if err != nil {
			checkErrorHidesInput(t, err, secret)
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseCredential result fails Validate: %v", err)
		}
		checkRedactionHidesValues(t, c)

		// The hand-written plaintext encoder must agree with encoding/json.
		pt := appendPlaintext(make([]byte, 0, plaintextCap(c, testAAD)), c, testAAD)
		var rec sealedRecord
		if err := json.Unmarshal(pt, &rec); err != nil {
			t.Fatalf("plaintext is not JSON: %v", err)
		}
		got, err := rec.credential()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Fatalf("plaintext round trip mismatch (-want +got):\n%s", diff)
		}
	})
}

// errorVocabulary holds every word of at least 12 bytes that a parse error
// may legitimately contain.
var errorVocabulary = strings.Join(append(append([]string{}, oauthFields...),
	"unknown-kind", "2006-01-02T15:04:05Z", "[A-Za-z_][A-Za-z0-9_]*", "Sec-Websocket-",
	"Mcp-Protocol-Version", "Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection",
	"Transfer-Encoding", "Content-Encoding", "Accept-Encoding", "Content-Length"), " ")

// checkErrorHidesInput fails if err quotes a word of the input long enough
// to be a secret rather than a coincidence.
func checkErrorHidesInput(t *testing.T, err error, input []byte) {
	t.Helper()
	msg := err.Error()
	for _, w := range strings.FieldsFunc(string(input), func(r rune) bool {
		return strings.ContainsRune(" \t\r\n:=\"{},[]\\", r)
	}) {
		if len(w) >= 12 && !strings.Contains(errorVocabulary, w) && strings.Contains(msg, w) {
			t.Fatalf("error %q quotes input %q", msg, w)
		}
	}
}

// checkRedactionHidesValues compares every redacted rendering of c with that
// of a credential with the same shape and every secret replaced: if they
// differ, a value reached the output.
func checkRedactionHidesValues(t *testing.T, c Credential) {
	t.Helper()
	shape := Credential{Kind: c.Kind}
	if c.Token != "" {
		shape.Token = "x"
	}
	if c.Headers != nil {
		shape.Headers = make(map[string]string)
		for k := range c.Headers {
			shape.Headers[k] = "x"
		}
	}
	if c.Env != nil {
		shape.Env = make(map[string]string)
		for k := range c.Env {
			shape.Env[k] = "x"
		}
	}
	if c.OAuth != nil {
		shape.OAuth = &OAuthToken{AccessToken: "x", Expiry: c.OAuth.Expiry}
		if c.OAuth.RefreshToken != "" {
			shape.OAuth.RefreshToken = "x"
		}
	}
	render := func(c Credential) string {
		var b bytes.Buffer
		fmt.Fprintf(&b, "%v|%+v|%#v|%s|%d|%x|", c, c, c, c, c, c)
		j, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			},
		})).Info("m", "c", c)
		return b.String()
	}
	if got, want := render(c), render(shape); got != want {
		t.Fatalf("redacted output depends on values:\n got %s\nwant %s", got, want)
	}
}

// TestUpdateFuzzSeeds rewrites testdata/fuzz/<Fuzz target>/ with
// `go test -run TestUpdateFuzzSeeds -update-fuzz-seeds ./vault`.
func TestUpdateFuzzSeeds(t *testing.T) {
	if !*updateFuzzSeeds {
		t.Skip("run with -update-fuzz-seeds to rewrite the seed corpora")
	}
	keys := testKeys(t)
	sealed := map[string][]byte{}
	for _, s := range sampleCredentials() {
		b, err := keys.Seal(s.cred, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		sealed[s.name] = b
	}
	retired, err := NewKeys(keys.Retired()[0]).Seal(sampleCredentials()[0].cred, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	otherAAD, err := keys.Seal(sampleCredentials()[0].cred, AAD{Org: "org_1"})
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := NewKeys(mustGenerate(t)).Seal(sampleCredentials()[0].cred, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	b := sealed["bearer"]
	envelopes := map[string][]byte{
		"bearer":          b,
		"headers":         sealed["headers"],
		"env":             sealed["env"],
		"oauth":           sealed["oauth"],
		"retired-key":     retired,
		"other-aad":       otherAAD,
		"unknown-key":     unknown,
		"truncated":       b[:len(b)-5],
		"header-only":     b[:envelopeHdrLen],
		"version-2":       append([]byte("MGVE\x02"), b[5:]...),
		"trailing-byte":   append(bytes.Clone(b), 0),
		"flipped-payload": func() []byte { c := bytes.Clone(b); c[len(c)-1] ^= 1; return c }(),
	}
	for name, b := range envelopes {
		writeSeed(t, "FuzzUnseal", name, b)
		writeSeed(t, "FuzzDecodeEnvelope", name, b)
	}

	for name, in := range map[string]struct {
		kind   Kind
		secret string
	}{
		"bearer":            {KindBearer, "tok-123\n"},
		"bearer-crlf":       {KindBearer, "tok-123\r\n"},
		"bearer-scheme":     {KindBearer, "Bearer tok-123"},
		"headers-lines":     {KindHeaders, "Authorization: Basic dXNlcjpwYXNz\r\nX-Api-Key:  key-1 \n\n"},
		"headers-json":      {KindHeaders, `{"x-api-key": "key-1", "X-Tenant": "t"}`},
		"headers-forbidden": {KindHeaders, "Host: example.com\nContent-Length: 3"},
		"headers-dup":       {KindHeaders, "X-A: 1\nx-a: 2"},
		"env-lines":         {KindEnv, "# comment\nAPI_KEY=abc=def\nEMPTY=\n"},
		"env-json":          {KindEnv, `{"PEM": "-----BEGIN-----\nabc\n\u0001", "B": ""}`},
		"env-loader":        {KindEnv, "LD_PRELOAD=/x.so"},
		"oauth-full":        {KindOAuth, `{"access_token":"a","refresh_token":"r","token_type":"bearer","expiry":"2030-01-02T03:04:05.123+02:00","scope":"read write"}`},
		"oauth-unknown":     {KindOAuth, `{"access_token":"a","expires_in":3600}`},
		"oauth-nested":      {KindOAuth, `{"access_token":{"a":[1,{"b":null}]}}`},
		"unknown-kind":      {"basic", "user:pass"},
	} {
		writeSeed(t, "FuzzParseCredential", name, string(in.kind), []byte(in.secret))
	}
}

func writeSeed(t *testing.T, target, name string, vals ...any) {
	t.Helper()
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		default:
			t.Fatalf("writeSeed: unsupported type %T", v)
		}
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
