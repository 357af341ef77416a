package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// AuditKind says what an audit record describes.
type AuditKind string

// Audit record kinds.
const (
	AuditSessionOpen  AuditKind = "session_open"
	AuditSessionClose AuditKind = "session_close"
	AuditToolCall     AuditKind = "tool_call"
	// AuditRefusal is a session refused before it opened: no or bad service
	// token, a forbidden org, no route, no credential, upstream unreachable.
	AuditRefusal AuditKind = "refusal"
)

// Valid reports whether k is one of the kinds above.
func (k AuditKind) Valid() bool {
	switch k {
	case AuditSessionOpen, AuditSessionClose, AuditToolCall, AuditRefusal:
		return true
	}
	return false
}

// Audit record outcomes. A refusal or an error also carries a short reason
// code (rate_limited, no_route, upstream_error…) in AuditRecord.Reason.
const (
	AuditOK      = "ok"
	AuditError   = "error"
	AuditRefused = "refused"
)

// AuditRecord is one entry of a node's audit log. It holds identities and
// outcomes only: never a credential, a service token, or the arguments or
// results of a call.
type AuditRecord struct {
	// Seq numbers the node's records from 1 without gaps; Append sets it.
	Seq uint64 `json:"seq"`
	// Time is when the record was made: when a session opened or closed, or
	// a call was answered or refused.
	Time time.Time `json:"time"`
	// Node names the node that wrote the record.
	Node string    `json:"node"`
	Kind AuditKind `json:"kind"`
	// SessionID is the gateway's id of the session, empty for refusals.
	SessionID string `json:"session_id,omitempty"`
	// Service and TokenID identify the caller by its service token; empty
	// when the refusal came before the token was verified.
	Service string `json:"service,omitempty"`
	TokenID string `json:"token_id,omitempty"`
	// Remote is the downstream network address.
	Remote  string `json:"remote,omitempty"`
	Org     string `json:"org,omitempty"`
	Account string `json:"account,omitempty"`
	Route   string `json:"route,omitempty"`
	Tool    string `json:"tool,omitempty"`
	// CredentialKeyID is the id of the vault key that sealed the credential
	// injected into the upstream connection, empty when none was.
	CredentialKeyID string `json:"credential_key_id,omitempty"`
	// Outcome is AuditOK, AuditError or AuditRefused.
	Outcome string `json:"outcome"`
	// Reason is a short code saying why a call or session was refused or
	// failed, e.g. rate_limited, rule_denied, no_route, upstream_error.
	Reason string `json:"reason,omitempty"`
	// Code is the JSON-RPC error code the caller got, if any.
	Code int64 `json:"code,omitempty"`
	// Error is the message of a refusal the gateway itself wrote; errors
	// that came from an upstream are recorded by Code only.
	Error string `json:"error,omitempty"`
	// LatencyMicros is how long a call took, or a session lasted.
	LatencyMicros int64 `json:"latency_us,omitempty"`
	// Prev is the Hash of the record before this one (or the pruning
	// anchor); empty for the node's first record.
	Prev string `json:"prev"`
	// Hash is the hex SHA-256 of the record's canonical encoding without
	// Hash. Since that includes Prev, each record commits to every record
	// before it, and changing, removing or reordering one shows.
	//
	// The canonical encoding is encoding/json's, fields in the order above;
	// a record is stored as that encoding with Hash, the last field, added,
	// so the hash covers every stored byte but its own.
	Hash string `json:"hash,omitempty"`
}

// AuditHash returns the hash r's Hash field must hold: the hex SHA-256 of
// the canonical JSON encoding of r without Hash.
func AuditHash(r AuditRecord) (string, error) {
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

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

// AuditOptions configures an audit log's retention. The zero value keeps
// every record.
type AuditOptions struct {
	// MaxRecords keeps at most this many records, dropping the oldest.
	// 0 means no limit.
	MaxRecords int
	// MaxAge drops records older than this. 0 means no limit.
	MaxAge time.Duration
}

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

// Pruning deletes at most this many records per write transaction, so a
// large backlog (retention just lowered) never holds the writer for long.
const auditPruneChunk = 4096

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
	return &AuditLog{path: path, opts: opts, db: db}, nil
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

// validUTF8 replaces invalid UTF-8 in r's strings, which JSON would
// otherwise encode in a form that does not survive a round trip.
func validUTF8(r *AuditRecord) {
	for _, s := range []*string{&r.Node, &r.SessionID, &r.Service, &r.TokenID, &r.Remote, &r.Org, &r.Account,
		&r.Route, &r.Tool, &r.CredentialKeyID, &r.Outcome, &r.Reason, &r.Error} {
		*s = strings.ToValidUTF8(*s, "\uFFFD")
	}
	r.Kind = AuditKind(strings.ToValidUTF8(string(r.Kind), "\uFFFD"))
}

// hashField starts the last field of a stored record; 64 hex digits and
// `"}` follow.
var hashField = []byte(`,"hash":"`)

const hashTailLen = len(`,"hash":""}`) + 2*sha256.Size

// encodeAuditRecord sets r.Hash and returns r's stored form.
func encodeAuditRecord(r *AuditRecord) ([]byte, error) {
	r.Hash = ""
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	r.Hash = hex.EncodeToString(sum[:])
	out := make([]byte, 0, len(body)-1+hashTailLen)
	out = append(append(out, body[:len(body)-1]...), hashField...)
	return append(append(out, r.Hash...), '"', '}'), nil
}

// errAuditAltered is what decodeAuditRecord says of bytes whose hash does
// not match.
var errAuditAltered = errors.New("hash does not match the record's content: it was altered")

// checkHash checks the hash at the end of a stored record covers the rest
// of it, so no stored byte can change without the change showing, and
// returns the record without its hash field (and without its closing
// brace).
func checkHash(b []byte) ([]byte, error) {
	n := len(b) - hashTailLen
	if n < 1 || !bytes.Equal(b[n:n+len(hashField)], hashField) || !bytes.HasSuffix(b, []byte(`"}`)) {
		return nil, errors.New("not an audit record: no hash at its end")
	}
	sum := sha256.Sum256(append(b[:n:n], '}'))
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], b[n+len(hashField):len(b)-2]); err != nil || want != sum {
		return nil, errAuditAltered
	}
	return b[:n], nil
}

// chainLink reads what Verify needs of a stored record without decoding
// all of it: its seq, which the encoder writes first, its prev, which it
// writes just before the hash, and its hash, checked.
func chainLink(b []byte) (seq uint64, prev, hash string, err error) {
	body, err := checkHash(b)
	if err != nil {
		return 0, "", "", err
	}
	rest, ok := bytes.CutPrefix(body, []byte(`{"seq":`))
	i := bytes.IndexByte(rest, ',')
	// JSON escapes every quote inside a string, so `,"prev":"` only
	// occurs as the prev field itself.
	j := bytes.LastIndex(body, []byte(`,"prev":"`))
	if !ok || i < 1 || j < 0 || body[len(body)-1] != '"' || j+len(`,"prev":"`) > len(body)-1 {
		return 0, "", "", errors.New("not an audit record in canonical form")
	}
	if seq, err = strconv.ParseUint(string(rest[:i]), 10, 64); err != nil {
		return 0, "", "", errors.New("not an audit record in canonical form")
	}
	return seq, string(body[j+len(`,"prev":"`) : len(body)-1]), string(b[len(body)+len(hashField) : len(b)-2]), nil
}

// decodeAuditRecord parses a stored record after checking its hash.
func decodeAuditRecord(b []byte) (AuditRecord, error) {
	if _, err := checkHash(b); err != nil {
		return AuditRecord{}, err
	}
	var r AuditRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return AuditRecord{}, fmt.Errorf("not an audit record: %v", err)
	}
	if dec.More() {
		return AuditRecord{}, errors.New("not an audit record: data after it")
	}
	return r, nil
}

// Append adds records to the end of the log in one write transaction,
// setting each one's Seq, Prev and Hash in place (and Time, when zero, to
// now). Times are stored in UTC. On error nothing is written. Records past
// the retention limits are pruned in the same transaction.
func (l *AuditLog) Append(recs []AuditRecord) error {
	if len(recs) == 0 {
		return nil
	}
	now := time.Now().UTC()
	err := l.update(func(tx *bolt.Tx) error {
		records, index, meta := tx.Bucket(bucketAuditRecords), tx.Bucket(bucketAuditByTime), tx.Bucket(bucketAuditMeta)
		// Keys only ever grow: full pages halve the file.
		records.FillPercent = 1.0
		index.FillPercent = 0.9
		h := head(meta)
		for i := range recs {
			r := &recs[i]
			if r.Time.IsZero() {
				r.Time = now
			}
			r.Time = r.Time.UTC().Round(0)
			validUTF8(r)
			r.Seq, r.Prev = h.seq+1, h.hash
			b, err := encodeAuditRecord(r)
			if err != nil {
				return fmt.Errorf("encode audit record: %w", err)
			}
			if err := records.Put(seqKey(r.Seq), b); err != nil {
				return err
			}
			if err := index.Put(timeKey(r.Time, r.Seq), nil); err != nil {
				return err
			}
			h = chainPoint{seq: r.Seq, hash: r.Hash}
		}
		if err := putPoint(meta, metaAuditHeadSeq, metaAuditHeadHash, h); err != nil {
			return err
		}
		_, err := l.pruneTx(tx, now, auditPruneChunk)
		return err
	})
	if err != nil {
		return fmt.Errorf("append to audit log %s: %w", l.path, err)
	}
	return nil
}

// Prune deletes the records the retention limits no longer keep, judging
// age against now, and returns how many it deleted. Append prunes as it
// goes; Prune is for a log that is not being written to.
func (l *AuditLog) Prune(now time.Time) (int, error) {
	total := 0
	for {
		var n int
		err := l.update(func(tx *bolt.Tx) error {
			var err error
			n, err = l.pruneTx(tx, now, auditPruneChunk)
			return err
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("prune audit log %s: %w", l.path, err)
		}
		if n < auditPruneChunk {
			return total, nil
		}
	}
}

// pruneTx deletes up to max of the oldest records past the retention
// limits and moves the chain anchor to the last one deleted.
func (l *AuditLog) pruneTx(tx *bolt.Tx, now time.Time, max int) (int, error) {
	if l.opts.MaxRecords <= 0 && l.opts.MaxAge <= 0 {
		return 0, nil
	}
	records, index, meta := tx.Bucket(bucketAuditRecords), tx.Bucket(bucketAuditByTime), tx.Bucket(bucketAuditMeta)
	c := records.Cursor()
	first, _ := c.First()
	last, _ := c.Last()
	if first == nil {
		return 0, nil
	}
	count := binary.BigEndian.Uint64(last) - binary.BigEndian.Uint64(first) + 1
	cutoff := now.Add(-l.opts.MaxAge)
	type victim struct{ seqKey, timeKey []byte }
	var victims []victim
	var anchor chainPoint
	for k, v := c.First(); k != nil && len(victims) < max; k, v = c.Next() {
		seq := binary.BigEndian.Uint64(k)
		r, err := decodeAuditRecord(v)
		tooMany := l.opts.MaxRecords > 0 && count > uint64(l.opts.MaxRecords)
		tooOld := err == nil && l.opts.MaxAge > 0 && r.Time.Before(cutoff)
		if !tooMany && !tooOld {
			break
		}
		vk := victim{seqKey: bytes.Clone(k)}
		// A record altered before it was pruned leaves an anchor that does
		// not match the next record's Prev: the break still shows.
		anchor = chainPoint{seq: seq}
		if err == nil {
			vk.timeKey = timeKey(r.Time, seq)
			anchor.hash = r.Hash
		} else {
			sum := sha256.Sum256(v)
			anchor.hash = "unreadable:" + hex.EncodeToString(sum[:])
		}
		victims = append(victims, vk)
		count--
	}
	for _, v := range victims {
		if err := records.Delete(v.seqKey); err != nil {
			return 0, err
		}
		if v.timeKey != nil {
			if err := index.Delete(v.timeKey); err != nil {
				return 0, err
			}
		}
	}
	if len(victims) > 0 {
		if err := putPoint(meta, metaAuditAnchorSeq, metaAuditAnchorHash, anchor); err != nil {
			return 0, err
		}
	}
	return len(victims), nil
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
