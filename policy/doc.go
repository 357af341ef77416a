// Package policy decides who may do what through the gateway, and how often.
//
// It owns three things:
//
//   - Service tokens: Ed25519-signed JWTs that prove which service is calling
//     and which orgs it may act for ([Keyring.Issue], [Keyring.Verify]),
//     signing-key rotation and revocation.
//   - Access rules: allow/deny rules over (service, org, account, route, tool),
//     compiled once into an immutable [Rules] and evaluated per session and
//     per tools/call ([Rules.Decide], [Rules.FilterTools]).
//   - Rate limits: cluster-wide token buckets split across live nodes
//     ([Limiter]) and per-node concurrency caps ([Gate]).
//
// The package is pure logic. It must not do I/O: no files, no network, no
// logging, no global mutable state. Decision functions never read the clock;
// callers pass now, which keeps decisions deterministic and testable and lets
// the node use one timestamp per request. The only source of nondeterminism
// is crypto/rand, used when creating signing keys and token IDs.
//
// Inputs come from the replicated state (keys, revocations, rules, limits);
// the node compiles a new [Keyring], [Rules] or limit set whenever that state
// changes and swaps it in. Compiled values are immutable and safe for
// concurrent use; [Limiter] and [Gate] carry mutable counters and are safe
// for concurrent use too.
package policy
