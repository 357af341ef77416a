// Package admin holds the gateway's administrative use cases: putting and
// removing routes, sealing credentials, issuing and revoking service
// tokens, rotating the token signing key and the vault key, rules and
// limits, the audit log, cluster membership and backups.
//
// Each use case is a method of [Service]. It checks its input, reads the
// replicated state through the small interfaces declared here and writes
// through the replicated write path as a cluster.Command. Failures are
// [*Error] values wrapping one of the sentinel errors ([ErrInvalid],
// [ErrNotFound], [ErrConflict], [ErrUnavailable], [ErrFailed],
// [ErrInternal]) so that a transport maps them to its own status codes in
// one place; their text says what was wrong and what to do, and never holds
// a secret.
//
// The package must not speak HTTP (that is adminapi), import node, or
// reach the data path other than through the interfaces its [Deps] name.
package admin
