package vault

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Every way a value can reach a log line, an error or a file without an
// explicit field access goes through the methods in this file: fmt (String,
// GoString, Format), slog (LogValue) and encoding/json (MarshalJSON). They show
// the kind and names, never values.

var (
	_ fmt.Formatter  = Credential{}
	_ fmt.Stringer   = Credential{}
	_ fmt.GoStringer = Credential{}
	_ slog.LogValuer = Credential{}
	_ json.Marshaler = Credential{}
	_ fmt.Formatter  = OAuthToken{}
	_ slog.LogValuer = OAuthToken{}
	_ json.Marshaler = OAuthToken{}
)

const redacted = "REDACTED"

// String describes c without its values, for example
// "Credential(headers: Authorization, X-Api-Key)".
func (c Credential) String() string {
	var b strings.Builder
	b.WriteString("Credential(")
	b.WriteString(c.Kind.safe())
	switch {
	case c.Headers != nil:
		b.WriteString(": ")
		b.WriteString(strings.Join(headerNames(c.Headers), ", "))
	case c.Env != nil:
		b.WriteString(": ")
		b.WriteString(strings.Join(envNames(c.Env), ", "))
	case c.OAuth != nil:
		b.WriteString(", ")
		b.WriteString(c.OAuth.String())
	}
	b.WriteString(")")
	return b.String()
}

// GoString is what %#v prints: the struct shape with every value replaced.
func (c Credential) GoString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vault.Credential{Kind:%q", c.Kind.safe())
	if c.Token != "" {
		b.WriteString(", Token:" + redacted)
	}
	if c.Headers != nil {
		b.WriteString(", Headers:" + redactedMap(headerNames(c.Headers)))
	}
	if c.Env != nil {
		b.WriteString(", Env:" + redactedMap(envNames(c.Env)))
	}
	if c.OAuth != nil {
		b.WriteString(", OAuth:" + c.OAuth.GoString())
	}
	b.WriteString("}")
	return b.String()
}

// Format makes every fmt verb, not only %v and %s, print the redacted form;
// without it %d or %x would print the struct fields.
func (c Credential) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, c.String(), c.GoString())
}

// LogValue logs c as a group of its kind and names.
func (c Credential) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("kind", c.Kind.safe())}
	switch {
	case c.Headers != nil:
		attrs = append(attrs, slog.Any("headers", headerNames(c.Headers)))
	case c.Env != nil:
		attrs = append(attrs, slog.Any("env", envNames(c.Env)))
	case c.OAuth != nil:
		attrs = append(attrs, slog.Any("oauth", c.OAuth.LogValue()))
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON writes the redacted form: {"kind":"headers","headers":["X-Api-Key"]}.
// Credential deliberately has no JSON round trip; Seal is its serialization.
func (c Credential) MarshalJSON() ([]byte, error) {
	v := struct {
		Kind    string      `json:"kind"`
		Headers []string    `json:"headers,omitempty"`
		Env     []string    `json:"env,omitempty"`
		OAuth   *OAuthToken `json:"oauth,omitempty"`
	}{Kind: c.Kind.safe(), OAuth: c.OAuth}
	if c.Headers != nil {
		v.Headers = headerNames(c.Headers)
	}
	if c.Env != nil {
		v.Env = envNames(c.Env)
	}
	return json.Marshal(v)
}

// String describes t by its expiry and whether it can be refreshed.
func (t OAuthToken) String() string {
	var b strings.Builder
	if t.Expiry.IsZero() {
		b.WriteString("no expiry")
	} else {
		b.WriteString("expires " + t.Expiry.UTC().Format(time.RFC3339))
	}
	if t.RefreshToken != "" {
		b.WriteString(", refreshable")
	}
	return b.String()
}

// GoString is what %#v prints: the struct shape with every secret replaced.
func (t OAuthToken) GoString() string {
	return fmt.Sprintf("vault.OAuthToken{AccessToken:%s, RefreshToken:%s, Expiry:%q}",
		redacted, redactedIf(t.RefreshToken != ""), t.Expiry.UTC().Format(time.RFC3339))
}

// Format makes every fmt verb print the redacted form.
func (t OAuthToken) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, t.String(), t.GoString())
}

// LogValue logs t by its expiry and whether it can be refreshed.
func (t OAuthToken) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Bool("refreshable", t.RefreshToken != "")}
	if !t.Expiry.IsZero() {
		attrs = append(attrs, slog.Time("expiry", t.Expiry))
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON writes the redacted form: {"expiry":"...","refreshable":true}.
func (t OAuthToken) MarshalJSON() ([]byte, error) {
	v := struct {
		Expiry      *time.Time `json:"expiry,omitempty"`
		Refreshable bool       `json:"refreshable"`
	}{Refreshable: t.RefreshToken != ""}
	if !t.Expiry.IsZero() {
		v.Expiry = &t.Expiry
	}
	return json.Marshal(v)
}

func formatRedacted(f fmt.State, verb rune, s, gos string) {
	switch {
	case verb == 'v' && f.Flag('#'):
		s = gos
	case verb == 'q':
		s = strconv.Quote(s)
	}
	io.WriteString(f, s)
}

// headerNames and envNames list the names of a map for display. A name that
// is not syntactically a name may be a value pasted in the wrong place, so it
// is shown as "?".
func headerNames(m map[string]string) []string {
	names := sortedKeys(m)
	for i, n := range names {
		if !isHTTPToken(n) {
			names[i] = "?"
		}
	}
	return names
}

func envNames(m map[string]string) []string {
	names := sortedKeys(m)
	for i, n := range names {
		if !isEnvName(n) {
			names[i] = "?"
		}
	}
	return names
}

func redactedMap(names []string) string {
	var b strings.Builder
	b.WriteString("{")
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(n) + ":" + redacted)
	}
	b.WriteString("}")
	return b.String()
}

func redactedIf(set bool) string {
	if set {
		return redacted
	}
	return `""`
}
