package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// AuditOptions configures an audit log's retention. The zero value keeps
// every record.
type AuditOptions struct {
	// MaxRecords keeps at most this many records, dropping the oldest.
	// 0 means no limit.
	MaxRecords int
	// MaxAge drops records older than this. 0 means no limit.
	MaxAge time.Duration
}

// AuditLog is a node's append-only, hash-chained audit log in its own bbolt
// file. It is written by one node and never replicated.
//
// Retention deletes the oldest records; the hash of the last one deleted
// is kept as the anchor the remaining chain starts from, so the log still
// verifies after pruning.
type AuditLog struct {
	path string
	opts AuditOptions

	mu sync.RWMutex // guards db against Close
	db *bolt.DB

	appendMu sync.Mutex    // guards appended
	appended chan struct{} // closed at the next Append, then replaced
}

// OpenAudit opens (creating if needed) the audit log at path, 0600, with
// the given retention.
func OpenAudit(path string, opts AuditOptions) (*AuditLog, error) {
	if opts.MaxRecords < 0 || opts.MaxAge < 0 {
		return nil, fmt.Errorf("open audit log %s: retention must not be negative", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir for %s: %w", path, err)
	}
	db, err := openBolt(path, auditBuckets, bucketAuditMeta, metaAuditVersion, auditVersion,
		"audit log version %v, this build reads %d: use the mcpgw release that wrote it, or move the file aside")
	if err != nil {
		return nil, err
	}
	return &AuditLog{path: path, opts: opts, db: db, appended: make(chan struct{})}, nil
}

// Path returns the audit log's file path.
func (l *AuditLog) Path() string { return l.path }

// Close closes the audit log. It is safe to call more than once.
func (l *AuditLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.db == nil {
		return nil
	}
	err := l.db.Close()
	l.db = nil
	return err
}

var errAuditClosed = errors.New("audit log is closed")

func (l *AuditLog) view(fn func(*bolt.Tx) error) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.db == nil {
		return errAuditClosed
	}
	return l.db.View(fn)
}

func (l *AuditLog) update(fn func(*bolt.Tx) error) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.db == nil {
		return errAuditClosed
	}
	return l.db.Update(fn)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// timeKey is a time-index key: Unix nanoseconds (clamped to the range
// int64 nanoseconds can hold after 1970) then seq.
func timeKey(t time.Time, seq uint64) []byte {
	var ns uint64
	switch {
	case t.Year() < 1970:
	case t.Year() > 2261:
		ns = math.MaxInt64
	default:
		ns = uint64(t.UnixNano())
	}
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), ns)
	return binary.BigEndian.AppendUint64(k, seq)
}

// chainPoint is a position in the chain: a sequence number and the hash
// of the record there.
type chainPoint struct {
	seq  uint64
	hash string
}

func getPoint(meta *bolt.Bucket, seqKey, hashKey []byte) chainPoint {
	var p chainPoint
	if b := meta.Get(seqKey); len(b) == 8 {
		p.seq = binary.BigEndian.Uint64(b)
	}
	p.hash = string(meta.Get(hashKey))
	return p
}

func putPoint(meta *bolt.Bucket, seqKey, hashKey []byte, p chainPoint) error {
	if err := meta.Put(seqKey, binary.BigEndian.AppendUint64(nil, p.seq)); err != nil {
		return err
	}
	return meta.Put(hashKey, []byte(p.hash))
}

// head is the last record appended: the chain continues from it.
func head(meta *bolt.Bucket) chainPoint {
	if h := getPoint(meta, metaAuditHeadSeq, metaAuditHeadHash); h.seq != 0 {
		return h
	}
	return getPoint(meta, metaAuditAnchorSeq, metaAuditAnchorHash)
}
