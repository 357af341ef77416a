package storage

import (
	"bytes"
	"encoding/binary"
)

// AppliedRequest reports whether the write request id was applied within
// the retention window, and at which raft index.
func (t *Tx) AppliedRequest(id string) (uint64, bool) {
	v := t.tx.Bucket(bucketRequests).Get([]byte(id))
	if len(v) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

// PutAppliedRequest records that the write request id was applied at
// index, and forgets ids applied more than keep indexes earlier. Pruning
// depends only on the indexes, so every node keeps the same ids.
func (t *Tx) PutAppliedRequest(id string, index, keep uint64) error {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], index)
	if err := t.tx.Bucket(bucketRequests).Put([]byte(id), k[:]); err != nil {
		return err
	}
	byIndex := t.tx.Bucket(bucketRequestsByIndex)
	if err := byIndex.Put(k[:], []byte(id)); err != nil {
		return err
	}
	if index <= keep {
		return nil
	}
	var cut [8]byte
	binary.BigEndian.PutUint64(cut[:], index-keep)
	c := byIndex.Cursor()
	for key, old := c.First(); key != nil && bytes.Compare(key, cut[:]) < 0; key, old = c.First() {
		if err := t.tx.Bucket(bucketRequests).Delete(old); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
