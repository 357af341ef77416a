package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrAuditChainBroken is what Verify's *AuditChainError matches with
// errors.Is.
var ErrAuditChainBroken = errors.New("audit chain broken")

// AuditChainError reports the first record at which an audit log's hash
// chain does not hold.
type AuditChainError struct {
	Seq    uint64
	Reason string
}

func (e *AuditChainError) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d: %s", e.Seq, e.Reason)
}

// Is makes errors.Is(err, ErrAuditChainBroken) hold.
func (e *AuditChainError) Is(target error) bool { return target == ErrAuditChainBroken }

// AuditQuery selects audit records. Empty fields match everything.
type AuditQuery struct {
	// Since and Until bound Time, both inclusive; zero means unbounded.
	Since, Until time.Time
	Kind         AuditKind
	Service      string
	Org          string
	Account      string
	Route        string
	Tool         string
	Session      string
	Outcome      string
	// Limit returns at most this many records; 0 means all.
	Limit int
	// OldestFirst orders by ascending time; the default is newest first.
	OldestFirst bool
}

func (q *AuditQuery) match(r *AuditRecord) bool {
	eq := func(want, got string) bool { return want == "" || want == got }
	return (q.Kind == "" || q.Kind == r.Kind) &&
		eq(q.Service, r.Service) && eq(q.Org, r.Org) && eq(q.Account, r.Account) &&
		eq(q.Route, r.Route) && eq(q.Tool, r.Tool) && eq(q.Session, r.SessionID) && eq(q.Outcome, r.Outcome) &&
		(q.Since.IsZero() || !r.Time.Before(q.Since)) && (q.Until.IsZero() || !r.Time.After(q.Until))
}

// needles returns, for each field q filters on, the bytes the stored form
// of a matching record contains: `"org":"acme",` and so on. Every filtered
// field is followed by another field, and JSON escapes quotes inside
// strings, so a record without them cannot match and need not be decoded.
func (q *AuditQuery) needles() [][]byte {
	var out [][]byte
	for _, f := range []struct{ name, value string }{
		{"kind", string(q.Kind)}, {"session_id", q.Session}, {"service", q.Service}, {"org", q.Org},
		{"account", q.Account}, {"route", q.Route}, {"tool", q.Tool}, {"outcome", q.Outcome},
	} {
		if f.value == "" {
			continue
		}
		v, _ := json.Marshal(f.value)
		out = append(out, fmt.Appendf(nil, "%q:%s,", f.name, v))
	}
	return out
}

// Query returns the records q selects, ordered by time (then sequence).
func (l *AuditLog) Query(q AuditQuery) ([]AuditRecord, error) {
	var out []AuditRecord
	err := l.view(func(tx *bolt.Tx) error {
		records := tx.Bucket(bucketAuditRecords)
		c := tx.Bucket(bucketAuditByTime).Cursor()
		var lo, hi []byte
		if !q.Since.IsZero() {
			lo = timeKey(q.Since, 0)
		}
		if !q.Until.IsZero() {
			hi = timeKey(q.Until, math.MaxUint64)
		}
		needles := q.needles()
		var k []byte
		var next func() ([]byte, []byte)
		var inRange func([]byte) bool
		if q.OldestFirst {
			if lo != nil {
				k, _ = c.Seek(lo)
			} else {
				k, _ = c.First()
			}
			next, inRange = c.Next, func(k []byte) bool { return hi == nil || bytes.Compare(k, hi) <= 0 }
		} else {
			if hi != nil {
				if k, _ = c.Seek(hi); k == nil {
					k, _ = c.Last()
				} else if bytes.Compare(k, hi) > 0 {
					k, _ = c.Prev()
				}
			} else {
				k, _ = c.Last()
			}
			next, inRange = c.Prev, func(k []byte) bool { return lo == nil || bytes.Compare(k, lo) >= 0 }
		}
		for ; k != nil && inRange(k); k, _ = next() {
			if len(k) != 16 {
				continue
			}
			seq := binary.BigEndian.Uint64(k[8:])
			v := records.Get(k[8:])
			if v == nil || !containsAll(v, needles) {
				continue
			}
			r, err := decodeAuditRecord(v)
			if err != nil {
				return fmt.Errorf("record seq %d: %w; run `mcpgw audit verify`", seq, err)
			}
			if !q.match(&r) {
				continue
			}
			out = append(out, r)
			if q.Limit > 0 && len(out) >= q.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("query audit log %s: %w", l.path, err)
	}
	return out, nil
}

func containsAll(b []byte, needles [][]byte) bool {
	for _, n := range needles {
		if !bytes.Contains(b, n) {
			return false
		}
	}
	return true
}

// auditVerifyChunk is how many records Verify checks per read
// transaction, so a long verification never pins the file for long.
const auditVerifyChunk = 8192

// Verify walks the whole chain from its anchor and returns how many
// records it checked. A chain that does not hold gives an
// *AuditChainError naming the first record at fault: one whose bytes are
// not a canonical record, whose hash does not match its content, whose
// Prev is not its predecessor's hash, or that is missing.
func (l *AuditLog) Verify() (int, error) {
	checked := 0
	var at chainPoint // last record checked
	started := false
	for {
		var done bool
		err := l.view(func(tx *bolt.Tx) error {
			records, meta := tx.Bucket(bucketAuditRecords), tx.Bucket(bucketAuditMeta)
			// Start at the anchor, and start again there if pruning has
			// overtaken this walk between two chunks.
			if anchor := getPoint(meta, metaAuditAnchorSeq, metaAuditAnchorHash); !started || anchor.seq > at.seq {
				at, started = anchor, true
			}
			c := records.Cursor()
			n := 0
			for k, v := c.Seek(seqKey(at.seq + 1)); ; k, v = c.Next() {
				if k == nil {
					done = true
					break
				}
				if n == auditVerifyChunk {
					break
				}
				seq, want := binary.BigEndian.Uint64(k), at.seq+1
				if seq != want {
					return &AuditChainError{Seq: want, Reason: fmt.Sprintf("record is missing (the next one is seq %d)", seq)}
				}
				claimed, prev, hash, err := chainLink(v)
				if err != nil {
					return &AuditChainError{Seq: seq, Reason: err.Error()}
				}
				if claimed != seq {
					return &AuditChainError{Seq: seq, Reason: fmt.Sprintf("record claims seq %d", claimed)}
				}
				if prev != at.hash {
					return &AuditChainError{Seq: seq, Reason: "prev does not match the hash of the record before it"}
				}
				at = chainPoint{seq: seq, hash: hash}
				checked++
				n++
			}
			if done {
				// Records removed from the end show against the head.
				if h := head(meta); h.seq != at.seq {
					return &AuditChainError{Seq: at.seq + 1, Reason: fmt.Sprintf("record is missing (the log's last record was seq %d)", h.seq)}
				} else if h.hash != at.hash {
					return &AuditChainError{Seq: at.seq, Reason: "the log's head does not match this record"}
				}
			}
			return nil
		})
		if err != nil {
			return checked, err
		}
		if done {
			return checked, nil
		}
	}
}
