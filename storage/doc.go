// Package storage owns the node's bbolt files: the replicated state database
// (routes, sealed credentials, policies, limits, token keys, revocations) and
// its typed records, consistent snapshots and atomic restore; and the node's
// own hash-chained audit log.
//
// Storage stores what it is given. It never encrypts or decrypts (credentials
// arrive already sealed by the vault) and never decides policy.
package storage
