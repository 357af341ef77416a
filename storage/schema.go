package storage

// Every bbolt bucket the state database holds. Declared in one place so a
// reader sees the whole layout at a glance.
var (
	bucketMeta        = []byte("meta")
	bucketRoutes      = []byte("routes")
	bucketCredentials = []byte("credentials")
	bucketRules       = []byte("rules")
	bucketLimits      = []byte("limits")
	bucketTokenKeys   = []byte("token_keys")
	bucketRevocations = []byte("revocations")
	bucketTokens      = []byte("tokens")
)

// allBuckets lists every bucket Open creates.
var allBuckets = [][]byte{
	bucketMeta,
	bucketRoutes,
	bucketCredentials,
	bucketRules,
	bucketLimits,
	bucketTokenKeys,
	bucketRevocations,
	bucketTokens,
}

// Keys inside bucketMeta.
var (
	// metaSchemaVersion holds the layout version as one byte.
	metaSchemaVersion = []byte("schema_version")
	// metaAppliedIndex holds the last raft index applied to this database,
	// 8 bytes big-endian, so a restarted node knows where it stands.
	metaAppliedIndex = []byte("applied_index")
)

// schemaVersion is the layout version this code writes and reads.
const schemaVersion = 1

// File names under the data directory.
const (
	// StateFile is the replicated state database.
	StateFile = "state.db"
)
