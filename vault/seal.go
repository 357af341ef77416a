package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"filippo.io/age"
)

// AAD names the record a sealed credential belongs to. It is sealed inside
// the ciphertext and compared on Unseal, so an envelope copied or moved to
// another (org, account, route) does not open there.
type AAD struct {
	Org     string
	Account string
	Route   string
}

// maxAADField bounds each AAD field; they are ids, not documents.
const maxAADField = 1024

func (a AAD) validate() error {
	for _, f := range [...]struct{ name, v string }{{"org", a.Org}, {"account", a.Account}, {"route", a.Route}} {
		if len(f.v) > maxAADField {
			return fmt.Errorf("aad %s is longer than %d bytes", f.name, maxAADField)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("aad %s is not valid UTF-8", f.name)
		}
	}
	return nil
}

// Seal encrypts c for the current identity of k, bound to aad, and returns
// the envelope to store. c must pass Validate.
func (k *Keys) Seal(c Credential, aad AAD) ([]byte, error) {
	if k.obs == nil {
		return k.seal(c, aad)
	}
	start := time.Now()
	out, err := k.seal(c, aad)
	k.obs(OpSeal, time.Since(start), err)
	return out, err
}

func (k *Keys) seal(c Credential, aad AAD) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if err := aad.validate(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	pt := appendPlaintext(make([]byte, 0, plaintextCap(c, aad)), c, aad)
	defer clear(pt)

	id := k.Current()
	// Room for the age header (about 200 bytes), the 16 byte nonce and one
	// 16 byte tag per 64 KiB chunk; a Buffer that grows leaves copies behind,
	// but those hold only ciphertext.
	buf := bytes.NewBuffer(make([]byte, envelopeHdrLen, envelopeHdrLen+256+len(pt)+16*(len(pt)/(64<<10)+1)))
	w, err := age.Encrypt(buf, id.recipient)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if _, err := w.Write(pt); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	out := buf.Bytes()
	if len(out) > MaxEnvelopeSize {
		return nil, fmt.Errorf("seal: envelope of %d bytes is over the %d byte limit", len(out), MaxEnvelopeSize)
	}
	appendEnvelopeHeader(out[:0], id.rawID, len(out)-envelopeHdrLen)
	return out, nil
}

// Unseal decrypts an envelope made by Seal with any identity of k and checks
// that it was sealed for aad. Errors wrap ErrCorrupt, ErrUnknownVersion,
// ErrUnknownKey or ErrAADMismatch.
func (k *Keys) Unseal(sealed []byte, aad AAD) (Credential, error) {
	if k.obs == nil {
		return k.unseal(sealed, aad)
	}
	start := time.Now()
	c, err := k.unseal(sealed, aad)
	k.obs(OpUnseal, time.Since(start), err)
	return c, err
}

func (k *Keys) unseal(sealed []byte, aad AAD) (Credential, error) {
	env, err := DecodeEnvelope(sealed)
	if err != nil {
		return Credential{}, err
	}
	id := k.lookup(env.rawKeyID)
	if id == nil {
		return Credential{}, fmt.Errorf("%w (key id %s): run `mcpgw vault status` against this node: if the key is a data key it cannot open, copy the current vault key file to it; otherwise restore the key file that sealed it, or put the credential again", ErrUnknownKey, env.KeyID)
	}
	r, err := age.Decrypt(bytes.NewReader(env.Ciphertext), singleStanzaIdentity{id.x})
	if err != nil {
		// age's messages quote header lines; they carry no plaintext but are
		// not useful to an operator either.
		return Credential{}, fmt.Errorf("%w: age header does not open with key %s", ErrCorrupt, id.id)
	}
	// The plaintext is shorter than the ciphertext, so this buffer never
	// grows and leaves no copy of it behind.
	pt := make([]byte, len(env.Ciphertext))
	defer clear(pt)
	n, err := readAll(r, pt)
	if err != nil {
		return Credential{}, fmt.Errorf("%w: payload does not authenticate", ErrCorrupt)
	}
	var rec sealedRecord
	if err := json.Unmarshal(pt[:n], &rec); err != nil {
		return Credential{}, fmt.Errorf("%w: sealed record is not valid JSON", ErrCorrupt)
	}
	if rec.AAD != sealedAAD(aad) {
		return Credential{}, ErrAADMismatch
	}
	c, err := rec.credential()
	if err != nil {
		return Credential{}, err
	}
	if err := c.Validate(); err != nil {
		return Credential{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return c, nil
}

// Reseal opens sealed with k and seals it again for to.Current(), for key
// rotation. The credential stays bound to aad.
func (k *Keys) Reseal(sealed []byte, aad AAD, to *Keys) ([]byte, error) {
	c, err := k.Unseal(sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("reseal: %w", err)
	}
	out, err := to.Seal(c, aad)
	if err != nil {
		return nil, fmt.Errorf("reseal: %w", err)
	}
	return out, nil
}

// singleStanzaIdentity accepts only what Seal writes, one X25519 stanza. It
// keeps a crafted envelope from making Unseal do one X25519 operation per
// stanza, which age would otherwise allow up to its own stanza limit.
type singleStanzaIdentity struct{ x *age.X25519Identity }

var errStanzas = errors.New("want exactly one X25519 stanza")

func (s singleStanzaIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	if len(stanzas) != 1 || stanzas[0].Type != "X25519" {
		return nil, errStanzas
	}
	return s.x.Unwrap(stanzas)
}

// readAll reads r to EOF into buf and fails if buf fills first.
func readAll(r io.Reader, buf []byte) (int, error) {
	n := 0
	for {
		if n == len(buf) {
			return n, errors.New("plaintext longer than ciphertext")
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// The sealed plaintext is this JSON object, members in this order, empty ones
// omitted:
//
//	{"aad":{"org":..,"account":..,"route":..},"kind":..,"token":..,
//	 "headers":{..},"env":{..},"oauth":{"access_token":..,"refresh_token":..,
//	 "token_type":..,"expiry":RFC 3339,"scope":..}}
//
// It is written by appendPlaintext rather than encoding/json because
// json.Marshal builds its output in a pooled buffer that keeps a copy of the
// secret after Seal returns, out of reach of clear.
type sealedRecord struct {
	AAD     sealedAAD         `json:"aad"`
	Kind    Kind              `json:"kind"`
	Token   string            `json:"token"`
	Headers map[string]string `json:"headers"`
	Env     map[string]string `json:"env"`
	OAuth   *sealedOAuth      `json:"oauth"`
}

type sealedAAD struct {
	Org     string `json:"org"`
	Account string `json:"account"`
	Route   string `json:"route"`
}

type sealedOAuth struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	Expiry       string `json:"expiry"`
	Scope        string `json:"scope"`
}

func (r *sealedRecord) credential() (Credential, error) {
	c := Credential{Kind: r.Kind, Token: r.Token, Headers: r.Headers, Env: r.Env}
	if o := r.OAuth; o != nil {
		c.OAuth = &OAuthToken{AccessToken: o.AccessToken, RefreshToken: o.RefreshToken, TokenType: o.TokenType, Scope: o.Scope}
		if o.Expiry != "" {
			exp, err := time.Parse(time.RFC3339Nano, o.Expiry)
			if err != nil {
				return Credential{}, fmt.Errorf("%w: bad oauth expiry", ErrCorrupt)
			}
			c.OAuth.Expiry = exp
		}
	}
	return c, nil
}

// plaintextCap bounds the length appendPlaintext produces, so the buffer is
// allocated once: a string grows at most sixfold when escaped (\u00XX).
func plaintextCap(c Credential, aad AAD) int {
	const perField = 32 // key, quotes, separators
	n := 128 + 6*(len(aad.Org)+len(aad.Account)+len(aad.Route))
	n += perField + 6*len(c.Token)
	for k, v := range c.Headers {
		n += perField + 6*(len(k)+len(v))
	}
	for k, v := range c.Env {
		n += perField + 6*(len(k)+len(v))
	}
	if t := c.OAuth; t != nil {
		n += 6*perField + 6*(len(t.AccessToken)+len(t.RefreshToken)+len(t.TokenType)+len(t.Scope)) + len(time.RFC3339Nano) + 8
	}
	return n
}

func appendPlaintext(b []byte, c Credential, aad AAD) []byte {
	b = append(b, `{"aad":{"org":`...)
	b = appendJSONString(b, aad.Org)
	b = append(b, `,"account":`...)
	b = appendJSONString(b, aad.Account)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, aad.Route)
	b = append(b, `},"kind":`...)
	b = appendJSONString(b, string(c.Kind))
	if c.Token != "" {
		b = append(b, `,"token":`...)
		b = appendJSONString(b, c.Token)
	}
	if c.Headers != nil {
		b = append(b, `,"headers":`...)
		b = appendJSONObject(b, c.Headers)
	}
	if c.Env != nil {
		b = append(b, `,"env":`...)
		b = appendJSONObject(b, c.Env)
	}
	if t := c.OAuth; t != nil {
		b = append(b, `,"oauth":{"access_token":`...)
		b = appendJSONString(b, t.AccessToken)
		b = append(b, `,"refresh_token":`...)
		b = appendJSONString(b, t.RefreshToken)
		b = append(b, `,"token_type":`...)
		b = appendJSONString(b, t.TokenType)
		b = append(b, `,"expiry":`...)
		if t.Expiry.IsZero() {
			b = append(b, `""`...)
		} else {
			b = append(b, '"')
			b = t.Expiry.AppendFormat(b, time.RFC3339Nano)
			b = append(b, '"')
		}
		b = append(b, `,"scope":`...)
		b = appendJSONString(b, t.Scope)
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendJSONObject(b []byte, m map[string]string) []byte {
	b = append(b, '{')
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. s must be valid UTF-8, which
// Validate and AAD.validate guarantee.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
