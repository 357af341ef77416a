package cluster

import (
	"bytes"
	"testing"
)

// FuzzDecodeCommand feeds arbitrary log entries to the decoder and the
// apply path, as a follower would receive them from a faulty or hostile
// leader: neither may panic, and what decodes must re-encode stably.
func FuzzDecodeCommand(f *testing.F) {
	for _, cmd := range []Command{
		putRoute("r"),
		{Op: OpDeleteRoute, Name: "r"},
		{Op: OpDeleteCredential, Org: "o", Account: "a", RouteName: "r"},
		{Op: OpBatch, Batch: []Command{putRoute("a"), {Op: OpDeleteRoute, Name: "b"}}},
	} {
		b, err := cmd.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	store := openStore(f)
	var index uint64
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := DecodeCommand(data)
		if err != nil {
			return
		}
		index++
		Apply(store, index, cmd)
		once, err := cmd.Encode()
		if err != nil {
			return // e.g. a rate that JSON cannot carry
		}
		again, err := DecodeCommand(once)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", once, err)
		}
		twice, err := again.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("encoding is not stable:\n%s\n%s", once, twice)
		}
	})
}
