package oauth

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// Challenge is what an MCP server's 401 or 403 WWW-Authenticate header tells
// the client (RFC 6750 §3, RFC 9728 §5.1).
type Challenge struct {
	// ResourceMetadata is the resource_metadata URL, empty if absent.
	ResourceMetadata string
	// Scopes is the scope parameter split on spaces, nil if absent.
	Scopes []string
	// Error is the error parameter, e.g. "invalid_token" or "insufficient_scope".
	Error string
	// ErrorDescription is the error_description parameter.
	ErrorDescription string
}

// maxChallengeHeaderBytes bounds the header values parsed; a real challenge is
// a few hundred bytes.
const maxChallengeHeaderBytes = 16 << 10

// ParseChallenge parses the WWW-Authenticate values of h. The Bearer
// challenge's parameters win; resource_metadata is taken from any challenge.
// A response with no WWW-Authenticate gives a zero Challenge and no error.
func ParseChallenge(h http.Header) (Challenge, error) {
	return ParseChallengeValues(h.Values("WWW-Authenticate"))
}

// ParseChallengeValues is ParseChallenge over raw header values.
func ParseChallengeValues(values []string) (Challenge, error) {
	total := 0
	for _, v := range values {
		total += len(v)
	}
	if total > maxChallengeHeaderBytes {
		return Challenge{}, fmt.Errorf("parse WWW-Authenticate: %w: header is %d bytes, limit %d", ErrDiscovery, total, maxChallengeHeaderBytes)
	}
	cs, err := oauthex.ParseWWWAuthenticate(values)
	if err != nil {
		return Challenge{}, fmt.Errorf("parse WWW-Authenticate: %w: malformed header: the MCP server must send an RFC 9110 challenge", ErrDiscovery)
	}
	var out Challenge
	bearer := false
	for _, c := range cs {
		if out.ResourceMetadata == "" {
			out.ResourceMetadata = c.Params["resource_metadata"]
		}
		if c.Scheme != "bearer" || bearer {
			continue
		}
		bearer = true
		if c.Params["resource_metadata"] != "" {
			out.ResourceMetadata = c.Params["resource_metadata"]
		}
		if s := strings.Fields(c.Params["scope"]); len(s) > 0 {
			out.Scopes = s
		}
		out.Error = c.Params["error"]
		out.ErrorDescription = c.Params["error_description"]
	}
	return out, nil
}

// InsufficientScope reports whether the challenge asks for step-up
// authorization (a 403 with error="insufficient_scope").
func (c Challenge) InsufficientScope() bool { return c.Error == "insufficient_scope" }

// StepUpScopes returns the scopes a new authorization must request after a
// 403 insufficient_scope challenge: the granted scopes followed by the
// challenged ones not already granted, so step-up never loses a permission
// granted earlier. ok is false when the challenge is not a step-up request;
// then the caller must not start a new flow.
func StepUpScopes(c Challenge, granted []string) (scopes []string, ok bool) {
	if !c.InsufficientScope() {
		return nil, false
	}
	return unionScopes(granted, c.Scopes), true
}

func unionScopes(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	for _, s := range slices.Concat(a, b) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
