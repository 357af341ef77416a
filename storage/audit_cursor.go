package storage

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// SinkCursor returns the sequence number up to which the sink called name
// has delivered this log (0: nothing yet). It lives in the log's own file,
// so a log that is replaced or moved aside takes its cursor with it.
func (l *AuditLog) SinkCursor(name string) (uint64, error) {
	var seq uint64
	err := l.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketAuditMeta).Get(sinkCursorKey(name)); len(b) == 8 {
			seq = binary.BigEndian.Uint64(b)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read %s cursor of audit log %s: %w", name, l.path, err)
	}
	return seq, nil
}

// SetSinkCursor records, committed and synced, that the sink called name
// has delivered this log up to seq.
func (l *AuditLog) SetSinkCursor(name string, seq uint64) error {
	err := l.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAuditMeta).Put(sinkCursorKey(name), binary.BigEndian.AppendUint64(nil, seq))
	})
	if err != nil {
		return fmt.Errorf("write %s cursor of audit log %s: %w", name, l.path, err)
	}
	return nil
}

func sinkCursorKey(name string) []byte {
	return append(append([]byte(nil), metaAuditSinkCursorPrefix...), name...)
}
