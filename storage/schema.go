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
	// bucketKeyring maps a vault data key's id to its DataKey record: the
	// key wrapped (sealed) to each key-encryption key, never in the clear.
	bucketKeyring = []byte("vault_keyring")
	// bucketRequests maps the id of an applied write request to the raft
	// index it was applied at (8 bytes big-endian), so a write sent again
	// after a leader change is applied once.
	bucketRequests = []byte("requests")
	// bucketRequestsByIndex maps that index back to the request id, oldest
	// first, so ids past the retention window are dropped in order.
	bucketRequestsByIndex = []byte("requests_by_index")
	// bucketOAuthPending maps OAuthStateHash(state) to an OAuthPending.
	// The state itself is never stored: it is the bearer of the callback.
	bucketOAuthPending = []byte("oauth_pending")
	// bucketOAuthClients maps an authorization server's issuer to the
	// gateway's OAuthClient registration there.
	bucketOAuthClients = []byte("oauth_clients")
	// bucketAuditCheckpoints maps a node id to the latest signed head of
	// that node's audit chain (an AuditCheckpoint), replicated so every
	// node can check every other node's audit log against it.
	bucketAuditCheckpoints = []byte("audit_checkpoints")
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
	bucketKeyring,
	bucketRequests,
	bucketRequestsByIndex,
	bucketOAuthPending,
	bucketOAuthClients,
	bucketAuditCheckpoints,
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
	// AuditFile is the node's own audit log; it is never replicated.
	AuditFile = "audit.db"
)

// Every bbolt bucket of the audit log (AuditFile).
var (
	// bucketAuditRecords maps a record's sequence number (8 bytes
	// big-endian) to its canonical JSON encoding.
	bucketAuditRecords = []byte("audit_records")
	// bucketAuditByTime indexes records by time: the key is the record's
	// time in Unix nanoseconds then its sequence number (8 bytes big-endian
	// each); the value is empty.
	bucketAuditByTime = []byte("audit_by_time")
	// bucketAuditMeta holds the keys below.
	bucketAuditMeta = []byte("audit_meta")
)

// auditBuckets lists every bucket OpenAudit creates.
var auditBuckets = [][]byte{bucketAuditRecords, bucketAuditByTime, bucketAuditMeta}

// Keys inside bucketAuditMeta.
var (
	// metaAuditVersion holds the audit log's layout version as one byte.
	metaAuditVersion = []byte("schema_version")
	// metaAuditAnchorSeq and metaAuditAnchorHash describe the last record
	// retention pruned (8 bytes big-endian; hex SHA-256): the chain of the
	// records that remain starts from them.
	metaAuditAnchorSeq  = []byte("anchor_seq")
	metaAuditAnchorHash = []byte("anchor_hash")
	// metaAuditHeadSeq and metaAuditHeadHash describe the last record
	// appended, so records removed from the end of the log show.
	metaAuditHeadSeq  = []byte("head_seq")
	metaAuditHeadHash = []byte("head_hash")
	// metaAuditSinkCursorPrefix, then a sink's name (syslog), holds the
	// sequence number (8 bytes big-endian) up to which that sink has
	// delivered the log, so it resumes there after a restart. Not part of
	// the chain: a cursor says what was shipped, not what happened.
	metaAuditSinkCursorPrefix = []byte("sink_cursor:")
)

// auditVersion is the audit log layout version this code writes and reads.
const auditVersion = 1
