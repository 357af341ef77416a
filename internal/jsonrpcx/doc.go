// Package jsonrpcx owns the strict reading of every JSON field the gateway
// decides on: the JSON-RPC envelope (jsonrpc, id, method, params, result,
// error), params.name of tools/call, params.requestId of
// notifications/cancelled, params._meta.progressToken, the tool names of a
// tools/list result, isError of a tools/call result, and the members of a
// framed stream's open frame.
//
// The gateway must decide on exactly the bytes the upstream will act on.
// JSON leaves room for disagreement: encoding/json matches keys
// case-insensitively and keeps the last of duplicate keys, while the go-sdk
// (segmentio/encoding with case-insensitive matching turned off) and the
// TypeScript and Python SDKs match keys exactly. So {"name":"a","Name":"b"}
// is "b" to one reader and "a" to another. This package refuses instead of
// guessing: in an object it inspects, a key the gateway reads must appear
// once, spelled exactly (no case variant, no escape sequence in the key),
// and a string it reads must be valid UTF-8 with no replacement character
// (invalid bytes and lone surrogate escapes both turn into U+FFFD, which
// readers need not agree on). Keys are compared after JSON unescaping, so
// "n\u0061me" counts as a second "name".
//
// It reads and refuses; it does not decide policy and it never rewrites a
// message it accepts. Refusals are *Error values whose text names the field
// and says what to send instead; callers answer them with JSON-RPC -32600
// (Invalid Request).
package jsonrpcx
