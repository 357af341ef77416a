package storage

import (
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// AuditCheckpoint is a node's audit chain head as it committed it through
// raft: the record at Seq has hash Hash. Sig is the node's signature over
// the other fields (see cluster.SignCheckpoint), made with the key of the
// cluster certificate Cert (DER).
type AuditCheckpoint struct {
	Node string `json:"node"`
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	Cert []byte `json:"cert"`
	Sig  []byte `json:"sig"`
}

// AuditCheckpointHistory is how many checkpoints of one node the state
// keeps. When it is reached every other one is dropped, except the first
// and the latest: history stays bounded whatever the write rate, and
// always reaches back to the node's first checkpoint, so a chain replaced
// from its start is caught however many checkpoints followed.
const AuditCheckpointHistory = 256

// PutAuditCheckpoint adds cp to its node's checkpoints unless it is not
// further along the chain than the latest one held: a node whose log was
// rewound cannot move its checkpoints back and so hide the rewind.
func (tx *Tx) PutAuditCheckpoint(cp AuditCheckpoint) error {
	var hist []AuditCheckpoint
	if old := tx.tx.Bucket(bucketAuditCheckpoints).Get([]byte(cp.Node)); old != nil {
		if err := json.Unmarshal(old, &hist); err != nil {
			return fmt.Errorf("audit checkpoints of node %s: %w", cp.Node, err)
		}
	}
	if n := len(hist); n > 0 && hist[n-1].Seq >= cp.Seq {
		return nil
	}
	if len(hist) >= AuditCheckpointHistory {
		kept := hist[:0]
		for i, h := range hist {
			if i%2 == 0 || i == len(hist)-1 {
				kept = append(kept, h)
			}
		}
		hist = kept
	}
	hist = append(hist, cp)
	return putJSON(tx.tx, bucketAuditCheckpoints, cp.Node, hist)
}

// AuditCheckpoints returns the checkpoints held for node's audit log,
// oldest first.
func (s *Store) AuditCheckpoints(node string) ([]AuditCheckpoint, error) {
	hist, err := getJSON[[]AuditCheckpoint](s, bucketAuditCheckpoints, node)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return hist, err
}

// AuditHead returns the sequence number and hash of the last record in the
// log (0 and the anchor's hash when it is empty).
func (l *AuditLog) AuditHead() (uint64, string, error) {
	var h chainPoint
	err := l.view(func(tx *bolt.Tx) error {
		h = head(tx.Bucket(bucketAuditMeta))
		return nil
	})
	return h.seq, h.hash, err
}

// RecordHash returns the hash the record at seq holds. pruned is true when
// retention has removed it; found is false when the log has no such record
// although it was never pruned.
func (l *AuditLog) RecordHash(seq uint64) (hash string, pruned, found bool, err error) {
	err = l.view(func(tx *bolt.Tx) error {
		anchor := getPoint(tx.Bucket(bucketAuditMeta), metaAuditAnchorSeq, metaAuditAnchorHash)
		if seq == anchor.seq && seq != 0 {
			hash, found = anchor.hash, true
			return nil
		}
		if seq < anchor.seq {
			pruned = true
			return nil
		}
		v := tx.Bucket(bucketAuditRecords).Get(seqKey(seq))
		if v == nil {
			return nil
		}
		_, _, h, err := chainLink(v)
		if err != nil {
			return fmt.Errorf("record seq %d: %w", seq, err)
		}
		hash, found = h, true
		return nil
	})
	return hash, pruned, found, err
}
