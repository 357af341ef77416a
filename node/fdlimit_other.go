//go:build !unix

package node

// openFileLimit returns 0: the limit is unknown here, so the connection
// caps default to twice MaxSessions.
func openFileLimit() int { return 0 }
