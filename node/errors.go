package node

import (
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/transport"
)

// JSON-RPC error codes the gateway answers with, in the implementation-
// defined server error range, clear of the codes the MCP SDKs use
// (-32000..-32005, -32020..-32042). Callers branch on these.
const (
	CodeUnauthorized     = -32081                      // missing, bad or revoked service token
	CodeForbidden        = -32082                      // a policy rule denies the call
	CodeRateLimited      = -32083                      // a rate limit refused the call; data.retryAfterMs says when to retry
	CodeUpstreamError    = transport.CodeUpstreamError // the upstream could not be reached or failed
	CodeNoRoute          = -32085                      // no route allows the target
	CodeNoCredential     = -32086                      // the account has no credential for the route
	CodeOverloaded       = transport.CodeOverloaded    // a node-wide cap (sessions, in-flight calls) is reached
	CodeCredentialBroken = -32088                      // the stored credential cannot be unsealed
	CodeNodeLost         = transport.CodeNodeLost      // the node went away before answering; the call may be retried
)

// sdkRejectedCode is the code of the go-sdk's "rejected by transport"
// sentinel, which wraps transport failures (connection refused): it is not
// an answer from the upstream.
const sdkRejectedCode = -32005

// rpcError builds a JSON-RPC error with optional structured data.
func rpcError(code int64, msg string, data any) *jsonrpc.Error {
	e := &jsonrpc.Error{Code: code, Message: msg}
	if data != nil {
		if b, err := json.Marshal(data); err == nil {
			e.Data = b
		}
	}
	return e
}
