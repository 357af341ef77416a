package jsonrpcx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// CodeInvalidRequest is the JSON-RPC error code a refusal is answered with.
const CodeInvalidRequest = jsonrpc.CodeInvalidRequest

// Problem is what made an inspected field ambiguous.
type Problem int

// The problems an *Error reports.
const (
	Duplicate   Problem = iota + 1 // the key appears more than once
	CaseVariant                    // a key differs from the inspected one only in case
	Escaped                        // the key is written with escape sequences
	BadKey                         // a key of the object is not valid UTF-8
	BadString                      // the string value is not valid UTF-8 or holds U+FFFD
)

// Error is a refusal: an inspected field that readers could disagree on.
type Error struct {
	Key     string // the inspected key, as the protocol spells it
	Where   string // the object it is in, e.g. "params of tools/call"
	Problem Problem
	Seen    string // the spelling found, for CaseVariant
	// ID is the id of the refused message when it could be read without
	// ambiguity, so that the refusal can answer it; Response says whether
	// the message was a response. Set by DecodeMessage only.
	ID       jsonrpc.ID
	Response bool
}

func (e *Error) Error() string {
	const fix = "send each key once, spelled exactly"
	switch e.Problem {
	case Duplicate:
		return fmt.Sprintf("duplicate key %q in %s refused; %s", e.Key, e.Where, fix)
	case CaseVariant:
		return fmt.Sprintf("key %q in %s is a case variant of %q and refused; %s", clip(e.Seen), e.Where, e.Key, fix)
	case Escaped:
		return fmt.Sprintf("key %q in %s is written with escape sequences and refused; %s", e.Key, e.Where, fix)
	case BadKey:
		return fmt.Sprintf("a key in %s is not valid UTF-8 and refused; send keys as valid UTF-8, spelled exactly", e.Where)
	default:
		return fmt.Sprintf("%q in %s is not valid UTF-8 or holds U+FFFD and is refused; send it as valid UTF-8", e.Key, e.Where)
	}
}

// clip bounds a key echoed in an error.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}

// ErrNotObject is returned when the value to inspect is not a JSON object.
var ErrNotObject = errors.New("not a JSON object")

// ErrSyntax is returned when the bytes to inspect are not one valid JSON
// value (with nothing after it but white space).
var ErrSyntax = errors.New("not valid JSON")

// Members returns the raw value of each of keys in the JSON object data,
// nil for a key that is absent. where names the object in errors. Every
// key of data is checked against keys: a duplicate, a case variant or an
// escaped spelling of one of them is an *Error, as is a key that is not
// valid UTF-8. Other keys are ignored.
func Members(data []byte, where string, keys ...string) ([]json.RawMessage, error) {
	if !json.Valid(data) {
		return nil, ErrSyntax
	}
	return members(data, where, keys)
}

// ValidMembers is Members on data the caller has already checked is valid
// JSON (with json.Valid, or as a value Members returned), sparing a second
// validation on a hot path. On data that is not valid JSON it may panic.
func ValidMembers(data []byte, where string, keys ...string) ([]json.RawMessage, error) {
	return members(data, where, keys)
}

// ValidMembersInto is ValidMembers writing the value of keys[n] to
// vals[n] (len(vals) must be len(keys)) instead of into a new slice, so a
// caller on a hot path can keep vals on its stack. vals is cleared first.
func ValidMembersInto(data []byte, where string, keys []string, vals []json.RawMessage) error {
	clear(vals)
	return membersInto(data, where, keys, vals)
}

// members is Members on data already known to be valid JSON.
func members(data []byte, where string, keys []string) ([]json.RawMessage, error) {
	vals := make([]json.RawMessage, len(keys))
	if err := membersInto(data, where, keys, vals); err != nil {
		return nil, err
	}
	return vals, nil
}

// membersInto is members recording the values in vals.
func membersInto(data []byte, where string, keys []string, vals []json.RawMessage) error {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return ErrNotObject
	}
	i = skipSpace(data, i+1)
	if data[i] == '}' {
		return nil
	}
	for {
		kend := skipString(data, i)
		rawKey := data[i+1 : kend-1]
		i = skipSpace(data, kend)
		i = skipSpace(data, i+1) // the colon
		vend := skipValue(data, i)
		if err := checkKey(rawKey, data[i:vend], where, keys, vals); err != nil {
			return err
		}
		i = skipSpace(data, vend)
		if data[i] == '}' {
			return nil
		}
		i = skipSpace(data, i+1) // the comma
	}
}

// checkKey matches one member against the inspected keys, recording its
// value in vals.
func checkKey(rawKey, val []byte, where string, keys []string, vals []json.RawMessage) error {
	if !utf8.Valid(rawKey) {
		return &Error{Where: where, Problem: BadKey}
	}
	if bytes.IndexByte(rawKey, '\\') < 0 {
		return matchKey(rawKey, false, where, keys, vals, val)
	}
	quoted := make([]byte, 0, len(rawKey)+2)
	quoted = append(append(append(quoted, '"'), rawKey...), '"')
	var key string
	if err := json.Unmarshal(quoted, &key); err != nil {
		return ErrSyntax
	}
	return matchKey([]byte(key), true, where, keys, vals, val)
}

// matchKey checks the decoded key against the inspected keys.
func matchKey(key []byte, escaped bool, where string, keys []string, vals []json.RawMessage, val []byte) error {
	for n, k := range keys {
		if len(key) < len(k) || len(key) > 3*len(k) {
			// Inspected keys are ASCII, and a rune that folds to an ASCII
			// letter (K, ſ) is at most 3 bytes long: no match possible.
			continue
		}
		same := string(key) == k
		switch {
		case same && escaped:
			return &Error{Key: k, Where: where, Problem: Escaped}
		case same && vals[n] != nil:
			return &Error{Key: k, Where: where, Problem: Duplicate}
		case same:
			vals[n] = val
			return nil
		case bytes.EqualFold(key, []byte(k)):
			return &Error{Key: k, Where: where, Problem: CaseVariant, Seen: string(key)}
		}
	}
	return nil
}

// Elements returns the raw elements of the JSON array data.
func Elements(data []byte) ([]json.RawMessage, error) {
	if !json.Valid(data) {
		return nil, ErrSyntax
	}
	return elements(data)
}

func elements(data []byte) ([]json.RawMessage, error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, errors.New("not a JSON array")
	}
	var out []json.RawMessage
	i = skipSpace(data, i+1)
	if data[i] == ']' {
		return out, nil
	}
	for {
		end := skipValue(data, i)
		out = append(out, data[i:end])
		i = skipSpace(data, end)
		if data[i] == ']' {
			return out, nil
		}
		i = skipSpace(data, i+1)
	}
}

// String decodes raw, the value of key in where, as a JSON string. It
// reports false when raw is absent or not a string; a string that is not
// valid UTF-8 or holds U+FFFD is an *Error.
func String(raw json.RawMessage, key, where string) (string, bool, error) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '"' {
		return "", false, nil
	}
	var s string
	if body := raw[i+1 : len(bytes.TrimRight(raw, " \t\r\n"))-1]; bytes.IndexByte(body, '\\') < 0 {
		s = string(body) // nothing to unescape
	} else if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, ErrSyntax
	}
	if !utf8.Valid(raw) || strings.ContainsRune(s, utf8.RuneError) {
		return "", false, &Error{Key: key, Where: where, Problem: BadString}
	}
	return s, true, nil
}

// The scanners below run on input json.Valid accepted, so they only find
// where things end.

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string that starts at data[i].
func skipString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the value that starts at data[i].
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				i = skipString(data, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(data) {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}
