package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Pruning deletes at most this many records per write transaction, so a
// large backlog (retention just lowered) never holds the writer for long.
const auditPruneChunk = 4096

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
	l.appendMu.Lock()
	close(l.appended)
	l.appended = make(chan struct{})
	l.appendMu.Unlock()
	return nil
}

// Appended returns a channel closed by the next Append: a reader that
// has seen every record waits on it for more.
func (l *AuditLog) Appended() <-chan struct{} {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.appended
}

// After returns up to limit records with a sequence number above seq, in
// sequence order: an export resumes from the last sequence number it
// delivered. Records retention pruned are skipped.
func (l *AuditLog) After(seq uint64, limit int) ([]AuditRecord, error) {
	var out []AuditRecord
	if seq == math.MaxUint64 {
		return nil, nil
	}
	err := l.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAuditRecords).Cursor()
		for k, v := c.Seek(seqKey(seq + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			r, err := decodeAuditRecord(v)
			if err != nil {
				return fmt.Errorf("record seq %d: %w; run `mcpgw audit verify`", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log %s: %w", l.path, err)
	}
	return out, nil
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
		t, hash, err := pruneLink(v)
		tooMany := l.opts.MaxRecords > 0 && count > uint64(l.opts.MaxRecords)
		tooOld := err == nil && l.opts.MaxAge > 0 && t.Before(cutoff)
		if !tooMany && !tooOld {
			break
		}
		vk := victim{seqKey: bytes.Clone(k)}
		// A record altered before it was pruned leaves an anchor that does
		// not match the next record's Prev: the break still shows.
		anchor = chainPoint{seq: seq}
		if err == nil {
			vk.timeKey = timeKey(t, seq)
			anchor.hash = hash
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

// pruneLink reads what pruning needs of a stored record: its time and its
// hash, checked. It reads the time without decoding the rest of the record
// (decoding every record it deleted was most of an Append's CPU once the
// log was at its retention limit), falling back to decoding when the time
// is not where the canonical form has it. Like chainLink it trusts the
// form of a record whose hash checks: of a record in canonical form it
// reads what decodeAuditRecord does (FuzzAuditDecode checks).
func pruneLink(b []byte) (time.Time, string, error) {
	body, err := checkHash(b)
	if err != nil {
		return time.Time{}, "", err
	}
	hash := string(b[len(body)+len(hashField) : len(b)-2])
	if t, ok := canonicalTime(body); ok {
		return t, hash, nil
	}
	r, err := decodeAuditRecord(b)
	return r.Time, r.Hash, err
}
