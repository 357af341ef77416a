package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ParseCredential builds a credential of the given kind from what an operator
// pipes on stdin:
//
//   - bearer: the token; one trailing newline (LF or CRLF) is dropped.
//   - headers: lines "Name: value" (blank lines skipped, value trimmed of
//     surrounding spaces), or a JSON object of name to value. Names are
//     canonicalized.
//   - env: lines NAME=value (blank lines and lines starting with # skipped;
//     the value is everything after the first "=", taken literally), or a JSON
//     object of name to value.
//   - oauth: a JSON object with string fields access_token (required),
//     refresh_token, token_type, expiry (RFC 3339) and scope.
//
// Errors name the kind and the line, entry or field at fault, never a value.
// The result passes Validate.
func ParseCredential(kind Kind, secret []byte) (Credential, error) {
	c, err := parseCredential(kind, secret)
	if err != nil {
		return Credential{}, fmt.Errorf("parse %s credential: %w", kind.safe(), err)
	}
	if err := c.Validate(); err != nil {
		return Credential{}, err
	}
	return c, nil
}

func parseCredential(kind Kind, secret []byte) (Credential, error) {
	if len(secret) > MaxCredentialSize {
		return Credential{}, fmt.Errorf("input is larger than %d bytes", MaxCredentialSize)
	}
	switch kind {
	case KindBearer:
		return parseBearer(secret)
	case KindHeaders:
		m, err := parseNamedValues(secret, headerSyntax)
		return Credential{Kind: KindHeaders, Headers: m}, err
	case KindEnv:
		m, err := parseNamedValues(secret, envSyntax)
		return Credential{Kind: KindEnv, Env: m}, err
	case KindOAuth:
		t, err := parseOAuth(secret)
		return Credential{Kind: KindOAuth, OAuth: t}, err
	}
	return Credential{}, errors.New("unknown kind (want bearer, headers, env or oauth)")
}

func parseBearer(secret []byte) (Credential, error) {
	s := string(secret)
	if strings.HasSuffix(s, "\r\n") {
		s = s[:len(s)-2]
	} else if strings.HasSuffix(s, "\n") {
		s = s[:len(s)-1]
	}
	if len(s) > 7 && strings.EqualFold(s[:7], "bearer ") {
		return Credential{}, errors.New(`input starts with "Bearer ": pipe the token alone`)
	}
	if err := checkToken("token", s); err != nil {
		return Credential{}, err
	}
	return Credential{Kind: KindBearer, Token: s}, nil
}

// namedValueSyntax is what differs between the headers and env inputs.
type namedValueSyntax struct {
	what      string // "header" or "variable"
	sep       byte   // between name and value on a line
	trim      bool   // trim spaces and tabs around the value
	comments  bool   // skip lines starting with #
	checkName func(string) error
	checkVal  func(string) error
	canonical func(string) string
}

var headerSyntax = namedValueSyntax{
	what:      "header",
	sep:       ':',
	trim:      true,
	checkName: checkHeaderName,
	checkVal:  checkHeaderValue,
	canonical: http.CanonicalHeaderKey,
}

var envSyntax = namedValueSyntax{
	what:      "variable",
	sep:       '=',
	comments:  true,
	checkName: checkEnvName,
	checkVal:  checkEnvValue,
	canonical: func(s string) string { return s },
}

func parseNamedValues(secret []byte, syn namedValueSyntax) (map[string]string, error) {
	if t := bytes.TrimLeft(secret, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return parseJSONNamedValues(secret, syn)
	}
	m := make(map[string]string)
	first := make(map[string]int)
	lines := strings.Split(string(secret), "\n")
	for i, line := range lines {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" || (syn.comments && line[0] == '#') {
			continue
		}
		name, value, ok := strings.Cut(line, string(syn.sep))
		if !ok {
			if syn.sep == ':' {
				return nil, fmt.Errorf(`line %d: want "Name: value"`, n)
			}
			return nil, fmt.Errorf("line %d: want NAME=value", n)
		}
		if syn.trim {
			value = strings.Trim(value, " \t")
		}
		if err := addNamedValue(m, first, n, "line", name, value, syn); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no %ss", syn.what)
	}
	return m, nil
}

// addNamedValue checks one entry and adds it to m. first remembers on which
// line or entry each name appeared, so a duplicate is reported by position
// rather than by name.
func addNamedValue(m map[string]string, first map[string]int, pos int, posWord, name, value string, syn namedValueSyntax) error {
	if err := syn.checkName(name); err != nil {
		return err
	}
	name = syn.canonical(name)
	if p, dup := first[name]; dup {
		return fmt.Errorf("duplicate %s (first at %s %d)", syn.what, posWord, p)
	}
	if err := syn.checkVal(value); err != nil {
		return err
	}
	first[name] = pos
	m[name] = value
	return nil
}

func parseJSONNamedValues(secret []byte, syn namedValueSyntax) (map[string]string, error) {
	m := make(map[string]string)
	first := make(map[string]int)
	err := decodeStringObject(secret, func(entry int, key string, val *string) error {
		if val == nil {
			return fmt.Errorf("entry %d: value is not a string", entry)
		}
		if err := addNamedValue(m, first, entry, "entry", key, *val, syn); err != nil {
			return fmt.Errorf("entry %d: %w", entry, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no %ss", syn.what)
	}
	return m, nil
}

// oauthFields are the members of the oauth input object, in the order they
// are documented.
var oauthFields = []string{"access_token", "refresh_token", "token_type", "expiry", "scope"}

func parseOAuth(secret []byte) (*OAuthToken, error) {
	t := new(OAuthToken)
	seen := make(map[string]bool)
	err := decodeStringObject(secret, func(entry int, key string, val *string) error {
		field := ""
		for _, f := range oauthFields {
			if key == f {
				field = f
			}
		}
		if field == "" {
			return fmt.Errorf("entry %d: unknown field (want %s)", entry, strings.Join(oauthFields, ", "))
		}
		if seen[field] {
			return fmt.Errorf("field %q: duplicate", field)
		}
		seen[field] = true
		if val == nil {
			return fmt.Errorf("field %q: value is not a string", field)
		}
		switch field {
		case "access_token":
			t.AccessToken = *val
		case "refresh_token":
			t.RefreshToken = *val
		case "token_type":
			t.TokenType = *val
		case "scope":
			t.Scope = *val
		case "expiry":
			if *val == "" {
				return nil
			}
			exp, err := time.Parse(time.RFC3339Nano, *val)
			if err != nil {
				// time.ParseError quotes its input; do not pass it on.
				return fmt.Errorf("field %q: not an RFC 3339 time such as 2006-01-02T15:04:05Z", field)
			}
			t.Expiry = exp
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !seen["access_token"] {
		return nil, errors.New(`field "access_token": missing`)
	}
	if err := t.validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// decodeStringObject walks one JSON object, calling fn for each member in
// input order with its 1-based position; val is nil when the value is not a
// string. It exists because encoding/json's own errors quote the input (a
// syntax error names the offending character, a type error the number), while
// these errors must not carry any part of a secret: they give byte offsets.
func decodeStringObject(data []byte, fn func(entry int, key string, val *string) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	malformed := func() error {
		return fmt.Errorf("malformed JSON near byte %d (want an object of strings)", dec.InputOffset())
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return malformed()
	}
	for entry := 1; dec.More(); entry++ {
		tok, err := dec.Token()
		if err != nil {
			return malformed()
		}
		key, ok := tok.(string)
		if !ok {
			return malformed()
		}
		tok, err = dec.Token()
		if err != nil {
			return malformed()
		}
		var val *string
		switch v := tok.(type) {
		case string:
			val = &v
		case json.Delim:
			// Skip a nested array or object so fn can report the entry.
			for depth := 1; depth > 0; {
				t, err := dec.Token()
				if err != nil {
					return malformed()
				}
				switch t {
				case json.Delim('{'), json.Delim('['):
					depth++
				case json.Delim('}'), json.Delim(']'):
					depth--
				}
			}
		}
		if err := fn(entry, key, val); err != nil {
			return err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return malformed()
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("unexpected data after the JSON object near byte %d", dec.InputOffset())
	}
	return nil
}
