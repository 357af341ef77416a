// Package oauth is the upstream OAuth client core of the gateway: it discovers
// an MCP server's authorization server (RFC 9728 protected resource metadata,
// RFC 8414 and OpenID Connect discovery), registers the gateway as a client
// (pre-registered, Client ID Metadata Document, then RFC 7591 dynamic
// registration), runs the authorization-code flow with PKCE S256 split in two
// halves ([Client.Begin] issues the consent URL, [Client.Complete] finishes on
// the callback, possibly on another node), exchanges and refreshes tokens with
// the RFC 8707 resource indicator, and fetches every URL an upstream names
// through an SSRF-guarded HTTP client ([NewHTTPClient]).
//
// Everything it returns ([Pending], [Registration], [Token]) is a plain value
// that marshals to JSON, so the caller can seal the secret fields with the
// vault and replicate them. The package does no storage, no raft and no HTTP
// serving: single use of a pending flow across a cluster, keying registrations
// by issuer and refreshing once cluster-wide are the caller's job; this package
// gives it the values and the checks to do so.
//
// No error or log value produced here contains an access token, refresh
// token, client secret, PKCE verifier or authorization code.
package oauth
