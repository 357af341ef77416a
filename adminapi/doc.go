// Package adminapi is the gateway's admin HTTP API: the handlers (decode
// the request, call a use case, encode the answer), the request and
// response types of the wire API, the one mapping from a use case's typed
// error to an HTTP status, the admin-token check, and the Go [Client] the
// CLI uses.
//
// The wire types are the API's own, converted at the boundary from the
// storage and cluster records: renaming a field of a bbolt record or a raft
// command does not change the API, and the other way round.
//
// The package must not hold use cases or touch storage directly: it reaches
// the gateway only through the [UseCases] interface, which *admin.Service
// satisfies, and uses the storage and cluster packages only for the record
// types it converts from.
package adminapi
