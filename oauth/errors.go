package oauth

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on. Every error this package returns wraps
// one of them (test with errors.Is) and adds what was wrong and what to do.
var (
	// ErrURLNotAllowed: a URL is not https (or not http to loopback with
	// FetchOptions.AllowLoopback), or is malformed.
	ErrURLNotAllowed = errors.New("url not allowed")
	// ErrAddressNotAllowed: a host resolved to an address the gateway never
	// connects to (link-local, cloud metadata, unspecified, multicast, or
	// loopback without FetchOptions.AllowLoopback).
	ErrAddressNotAllowed = errors.New("address not allowed")
	// ErrResponseTooLarge: an upstream response exceeded FetchOptions.MaxResponseBytes.
	ErrResponseTooLarge = errors.New("response too large")
	// ErrDiscovery: protected resource or authorization server metadata could
	// not be found or is invalid.
	ErrDiscovery = errors.New("oauth discovery failed")
	// ErrResourceMismatch: protected resource metadata names another resource
	// than the MCP server it was fetched for.
	ErrResourceMismatch = errors.New("protected resource metadata is for another resource")
	// ErrIssuerMismatch: an issuer differs from the one expected (metadata
	// issuer, RFC 9207 iss parameter, or a registration for another issuer).
	ErrIssuerMismatch = errors.New("issuer mismatch")
	// ErrPKCEUnsupported: the authorization server does not advertise S256.
	ErrPKCEUnsupported = errors.New("authorization server does not support pkce s256")
	// ErrNoRegistration: no way to register a client with the authorization server.
	ErrNoRegistration = errors.New("no client registration method available")
	// ErrRegistration: dynamic client registration was refused or failed.
	ErrRegistration = errors.New("client registration failed")
	// ErrStateMismatch: the callback's state is not the pending flow's.
	ErrStateMismatch = errors.New("oauth state mismatch")
	// ErrFlowExpired: the pending flow is past its expiry.
	ErrFlowExpired = errors.New("oauth flow expired")
	// ErrFlowUsed: the pending flow was already completed once (replay).
	ErrFlowUsed = errors.New("oauth flow already used")
	// ErrBadCallback: the callback lacks a code or is otherwise malformed.
	ErrBadCallback = errors.New("bad oauth callback")
	// ErrAuthorizationDenied: the authorization server answered the
	// authorization request with an error (the user declined, bad scope...).
	ErrAuthorizationDenied = errors.New("authorization denied")
	// ErrTokenEndpoint: the token endpoint failed for a reason other than an
	// invalid grant (network, 5xx, malformed response, invalid_client...).
	ErrTokenEndpoint = errors.New("token endpoint failed")
	// ErrNeedsConsent: the credential cannot be refreshed (invalid_grant, or
	// no refresh token): the user must consent again through a new flow.
	ErrNeedsConsent = errors.New("credential needs consent")
)

// ASError is an OAuth error response from the authorization server (RFC 6749
// §4.1.2.1 and §5.2). It unwraps to Kind (ErrAuthorizationDenied,
// ErrTokenEndpoint, ErrNeedsConsent or ErrRegistration) so callers can branch
// with errors.Is and still read the AS's code and description with errors.As.
// It never carries the response body, which may hold secrets.
type ASError struct {
	Kind        error  // sentinel this error unwraps to
	Op          string // what was being done, e.g. "refresh token"
	Code        string // the AS's error code, e.g. "invalid_grant"
	Description string // the AS's error_description, may be empty
	URI         string // the AS's error_uri, may be empty
	Status      int    // HTTP status of the response, 0 for redirect responses
}

func (e *ASError) Error() string {
	msg := fmt.Sprintf("%s: %v: authorization server said %q", e.Op, e.Kind, e.Code)
	if e.Description != "" {
		msg += fmt.Sprintf(" (%s)", truncate(e.Description, 200))
	}
	switch e.Kind {
	case ErrNeedsConsent:
		msg += ": start a new authorization flow so the user consents again"
	case ErrAuthorizationDenied:
		msg += ": ask the user to retry the consent, or check the client's scopes and redirect uri"
	case ErrRegistration:
		msg += ": check the client metadata, or pre-register a client with this authorization server"
	default:
		msg += ": check the client registration with this authorization server"
	}
	return msg
}

func (e *ASError) Unwrap() error { return e.Kind }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
