package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	bolt "go.etcd.io/bbolt"
)

var auditT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openTestAudit(t testing.TB, opts AuditOptions) *AuditLog {
	t.Helper()
	l, err := OpenAudit(filepath.Join(t.TempDir(), AuditFile), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// testRecord is a tool call at auditT0 plus i seconds.
func testRecord(i int) AuditRecord {
	return AuditRecord{
		Time: auditT0.Add(time.Duration(i) * time.Second), Node: "n1", Kind: AuditToolCall,
		SessionID: "s1", Service: "svc", TokenID: "tok-1", Org: "acme", Account: "alice", Route: "gh", Tool: "echo",
		CredentialKeyID: "age1key", Outcome: AuditOK, LatencyMicros: int64(100 + i),
	}
}

func appendN(t testing.TB, l *AuditLog, from, n, batch int) {
	t.Helper()
	for i := from; i < from+n; i += batch {
		var recs []AuditRecord
		for j := i; j < min(i+batch, from+n); j++ {
			recs = append(recs, testRecord(j))
		}
		if err := l.Append(recs); err != nil {
			t.Fatal(err)
		}
	}
}

func seqs(recs []AuditRecord) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func TestAuditAppendSetsChain(t *testing.T) {
	l := openTestAudit(t, AuditOptions{})
	recs := []AuditRecord{testRecord(0), testRecord(1), testRecord(2)}
	recs[1].Time = recs[1].Time.In(time.FixedZone("CET", 3600))
	// Strings hold what callers sent, which need not be UTF-8.
	recs[2].Org, recs[2].Account, recs[2].Error = "bad\xffutf8", "<x>&\"y", "<b>\u2028\x00</b>"
	if err := l.Append(recs); err != nil {
		t.Fatal(err)
	}
	if got, want := seqs(recs), []uint64{1, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("seqs = %v, want %v", got, want)
	}
	if recs[0].Prev != "" || recs[1].Prev != recs[0].Hash || len(recs[0].Hash) != 64 {
		t.Fatalf("chain: prev0=%q hash0=%q prev1=%q", recs[0].Prev, recs[0].Hash, recs[1].Prev)
	}
	if loc := recs[1].Time.Location(); loc != time.UTC {
		t.Fatalf("time stored in %v, want UTC", loc)
	}
	got, err := l.Query(AuditQuery{OldestFirst: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(recs, got); diff != "" {
		t.Fatalf("Query differs from what Append returned (-appended +queried):\n%s", diff)
	}
	// Filters match what Append stored, escapes and all.
	if got, err := l.Query(AuditQuery{Org: recs[2].Org, Account: recs[2].Account}); err != nil || len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("Query by org %q, account %q = %v, %v; want seq 3", recs[2].Org, recs[2].Account, seqs(got), err)
	}
	if n, err := l.Verify(); n != 3 || err != nil {
		t.Fatalf("Verify() = %d, %v; want 3, nil", n, err)
	}
	fi, err := os.Stat(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Fatalf("audit file mode %v, want %v", got, want)
	}
}

func TestAuditQuery(t *testing.T) {
	l := openTestAudit(t, AuditOptions{})
	// Ten records, one second apart; every third in org globex, the last
	// two refusals on another route. Times are appended out of order once
	// to show the result is ordered by time, not sequence.
	var recs []AuditRecord
	for i := range 10 {
		r := testRecord(i)
		if i%3 == 0 {
			r.Org = "globex"
		}
		if i >= 8 {
			r.Kind, r.Route, r.Outcome, r.Reason = AuditRefusal, "jira", AuditRefused, "no_credential"
		}
		recs = append(recs, r)
	}
	recs[4].Time, recs[5].Time = recs[5].Time, recs[4].Time // seq 5 is at +5s, seq 6 at +4s
	if err := l.Append(recs); err != nil {
		t.Fatal(err)
	}
	at := func(i int) time.Time { return auditT0.Add(time.Duration(i) * time.Second) }
	cases := []struct {
		name string
		q    AuditQuery
		want []uint64
	}{
		{"all newest first", AuditQuery{}, []uint64{10, 9, 8, 7, 5, 6, 4, 3, 2, 1}},
		{"all oldest first", AuditQuery{OldestFirst: true}, []uint64{1, 2, 3, 4, 6, 5, 7, 8, 9, 10}},
		{"limit", AuditQuery{Limit: 3}, []uint64{10, 9, 8}},
		{"limit oldest first", AuditQuery{Limit: 3, OldestFirst: true}, []uint64{1, 2, 3}},
		{"since inclusive", AuditQuery{Since: at(7)}, []uint64{10, 9, 8}},
		{"until inclusive", AuditQuery{Until: at(2), OldestFirst: true}, []uint64{1, 2, 3}},
		{"until newest first", AuditQuery{Until: at(2)}, []uint64{3, 2, 1}},
		{"window", AuditQuery{Since: at(3), Until: at(5)}, []uint64{5, 6, 4}},
		{"window past the end", AuditQuery{Since: at(8), Until: at(99)}, []uint64{10, 9}},
		{"window before the start", AuditQuery{Until: auditT0.Add(-time.Second)}, nil},
		{"org", AuditQuery{Org: "globex"}, []uint64{10, 7, 4, 1}},
		{"org and limit", AuditQuery{Org: "globex", Limit: 2, OldestFirst: true}, []uint64{1, 4}},
		{"kind", AuditQuery{Kind: AuditRefusal}, []uint64{10, 9}},
		{"route", AuditQuery{Route: "gh", Since: at(6)}, []uint64{8, 7}},
		{"outcome", AuditQuery{Outcome: AuditRefused, Org: "acme"}, []uint64{9}},
		{"service", AuditQuery{Service: "svc", Limit: 1}, []uint64{10}},
		{"other service", AuditQuery{Service: "other"}, nil},
		{"account", AuditQuery{Account: "bob"}, nil},
		{"tool and session", AuditQuery{Tool: "echo", Session: "s1", Limit: 2}, []uint64{10, 9}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.Query(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, seqs(got), cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("Query(%+v) seqs (-want +got):\n%s", tc.q, diff)
			}
		})
	}
}

func TestAuditVerifyAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), AuditFile)
	l, err := OpenAudit(path, AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := l.Verify(); n != 0 || err != nil {
		t.Fatalf("empty log: Verify() = %d, %v; want 0, nil", n, err)
	}
	appendN(t, l, 0, 100, 7)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Query(AuditQuery{}); err == nil {
		t.Fatal("Query on a closed log succeeded")
	}
	l, err = OpenAudit(path, AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendN(t, l, 100, 20000, 64) // more than one verification chunk
	if got, err := l.Verify(); got != 20100 || err != nil {
		t.Fatalf("Verify() = %d, %v; want 20100, nil", got, err)
	}
}

// rawUpdate changes the stored bytes directly, as someone with the file
// could.
func rawUpdate(t *testing.T, l *AuditLog, fn func(records *bolt.Bucket) error) {
	t.Helper()
	if err := l.db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketAuditRecords)) }); err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerifyFindsTampering(t *testing.T) {
	flip := func(seq uint64, field string) func(*bolt.Bucket) error {
		return func(b *bolt.Bucket) error {
			v := bytes.Clone(b.Get(seqKey(seq)))
			i := bytes.Index(v, []byte(field))
			if i < 0 {
				return fmt.Errorf("no %s in record %d", field, seq)
			}
			v[i+len(field)] ^= 0x01 // first byte of the value
			return b.Put(seqKey(seq), v)
		}
	}
	cases := []struct {
		name    string
		tamper  func(records *bolt.Bucket) error
		wantSeq uint64
	}{
		{"org changed", flip(17, `"org":"`), 17},
		{"account changed in the first record", flip(1, `"account":"`), 1},
		{"latency changed in the last record", flip(40, `"latency_us":`), 40},
		{"hash changed", flip(23, `"hash":"`), 23},
		{"prev changed", flip(5, `"prev":"`), 5},
		{"seq changed", flip(9, `"seq":`), 9},
		{"record deleted", func(b *bolt.Bucket) error { return b.Delete(seqKey(12)) }, 12},
		{"last record deleted", func(b *bolt.Bucket) error { return b.Delete(seqKey(40)) }, 40},
		{"field added", func(b *bolt.Bucket) error {
			v := b.Get(seqKey(30))
			return b.Put(seqKey(30), append([]byte(`{"extra":1,`), v[1:]...))
		}, 30},
		{"records swapped", func(b *bolt.Bucket) error {
			v3, v4 := bytes.Clone(b.Get(seqKey(3))), bytes.Clone(b.Get(seqKey(4)))
			if err := b.Put(seqKey(3), v4); err != nil {
				return err
			}
			return b.Put(seqKey(4), v3)
		}, 3},
		{"record replaced with a recomputed one", func(b *bolt.Bucket) error {
			r, err := decodeAuditRecord(b.Get(seqKey(8)))
			if err != nil {
				return err
			}
			r.Outcome = AuditError
			r.Hash, _ = AuditHash(r)
			v, _ := encodeAuditRecord(&r)
			return b.Put(seqKey(8), v)
		}, 9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := openTestAudit(t, AuditOptions{})
			appendN(t, l, 0, 40, 8)
			rawUpdate(t, l, tc.tamper)
			checked, err := l.Verify()
			var ce *AuditChainError
			if !errors.As(err, &ce) || !errors.Is(err, ErrAuditChainBroken) {
				t.Fatalf("Verify() = %d, %v; want an *AuditChainError", checked, err)
			}
			if ce.Seq != tc.wantSeq {
				t.Fatalf("Verify reports seq %d (%v), want %d", ce.Seq, err, tc.wantSeq)
			}
			if got, want := checked, int(tc.wantSeq-1); got != want {
				t.Fatalf("Verify checked %d records before the break, want %d", got, want)
			}
		})
	}
}

func TestAuditRetention(t *testing.T) {
	t.Run("max records", func(t *testing.T) {
		l := openTestAudit(t, AuditOptions{MaxRecords: 10})
		appendN(t, l, 0, 25, 4)
		got, err := l.Query(AuditQuery{OldestFirst: true})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]uint64{16, 17, 18, 19, 20, 21, 22, 23, 24, 25}, seqs(got)); diff != "" {
			t.Fatalf("kept seqs (-want +got):\n%s", diff)
		}
		if n, err := l.Verify(); n != 10 || err != nil {
			t.Fatalf("Verify() after pruning = %d, %v; want 10, nil", n, err)
		}
		// The time index was pruned with the records.
		var indexed int
		l.db.View(func(tx *bolt.Tx) error { indexed = tx.Bucket(bucketAuditByTime).Stats().KeyN; return nil })
		if indexed != 10 {
			t.Fatalf("time index holds %d keys, want 10", indexed)
		}
	})
	t.Run("max age", func(t *testing.T) {
		l := openTestAudit(t, AuditOptions{MaxAge: time.Hour})
		// Append prunes against the wall clock; these records are from
		// auditT0, so judge them with Prune at a chosen instant instead.
		l.opts.MaxAge = 0
		appendN(t, l, 0, 20, 5)
		l.opts.MaxAge = time.Hour
		n, err := l.Prune(auditT0.Add(time.Hour + 12*time.Second + time.Millisecond))
		if err != nil || n != 13 {
			t.Fatalf("Prune = %d, %v; want 13 (records older than an hour), nil", n, err)
		}
		if n, err := l.Verify(); n != 7 || err != nil {
			t.Fatalf("Verify() after pruning = %d, %v; want 7, nil", n, err)
		}
		// Everything pruned: the chain continues from the anchor.
		if n, err := l.Prune(auditT0.Add(48 * time.Hour)); err != nil || n != 7 {
			t.Fatalf("Prune all = %d, %v; want 7, nil", n, err)
		}
		if n, err := l.Verify(); n != 0 || err != nil {
			t.Fatalf("Verify() of an emptied log = %d, %v; want 0, nil", n, err)
		}
		recs := []AuditRecord{testRecord(0)}
		recs[0].Time = time.Now()
		if err := l.Append(recs); err != nil {
			t.Fatal(err)
		}
		if recs[0].Seq != 21 {
			t.Fatalf("after pruning everything the next seq is %d, want 21", recs[0].Seq)
		}
		if n, err := l.Verify(); n != 1 || err != nil {
			t.Fatalf("Verify() = %d, %v; want 1, nil", n, err)
		}
	})
	t.Run("tampering survives pruning", func(t *testing.T) {
		l := openTestAudit(t, AuditOptions{})
		appendN(t, l, 0, 20, 20)
		rawUpdate(t, l, func(b *bolt.Bucket) error {
			v := bytes.Clone(b.Get(seqKey(5)))
			v[bytes.Index(v, []byte(`"org":"`))+7] = 'X'
			return b.Put(seqKey(5), v)
		})
		l.opts.MaxRecords = 15 // prunes 1-5, the altered record last
		if _, err := l.Prune(time.Now()); err != nil {
			t.Fatal(err)
		}
		var ce *AuditChainError
		if _, err := l.Verify(); !errors.As(err, &ce) || ce.Seq != 6 {
			t.Fatalf("Verify() = %v, want the break to show at seq 6, the first record kept", err)
		}
	})
}

func TestOpenAuditRefusesBadOptions(t *testing.T) {
	if _, err := OpenAudit(filepath.Join(t.TempDir(), AuditFile), AuditOptions{MaxRecords: -1}); err == nil {
		t.Fatal("negative MaxRecords accepted")
	}
}

// FuzzAuditDecode: whatever bytes a record key holds, decoding neither
// panics nor accepts bytes its hash does not cover; Verify's shortcut
// reads the same chain fields from every record the encoder could have
// written; and whatever decodes encodes back to a record that decodes the
// same. Each input is also tried with a valid hash appended, so the
// fuzzer reaches the JSON behind the hash check.
func FuzzAuditDecode(f *testing.F) {
	r := testRecord(1)
	r.Seq, r.Prev, r.Error, r.Code, r.Reason = 2, "ab", `quote " <tag> & é`, -32083, "rate_limited"
	canon, _ := encodeAuditRecord(&r)
	f.Add(canon) // more seeds in testdata/fuzz/FuzzAuditDecode
	f.Fuzz(func(t *testing.T, b []byte) {
		inputs := [][]byte{b}
		if len(b) > 1 && b[len(b)-1] == '}' {
			sum := sha256.Sum256(b)
			inputs = append(inputs, fmt.Appendf(bytes.Clone(b[:len(b)-1]), `,"hash":"%x"}`, sum))
		}
		for _, in := range inputs {
			pt, phash, perr := pruneLink(in)
			r, err := decodeAuditRecord(in)
			if err != nil {
				continue
			}
			r2 := r
			again, err := encodeAuditRecord(&r2)
			if err != nil {
				t.Fatalf("decoded %q but cannot encode it: %v", in, err)
			}
			if bytes.Equal(again, in) {
				seq, prev, hash, err := chainLink(in)
				if err != nil || seq != r.Seq || prev != r.Prev || hash != r.Hash {
					t.Fatalf("chainLink(%q) = %d, %q, %q, %v; the record holds %d, %q, %q", in, seq, prev, hash, err, r.Seq, r.Prev, r.Hash)
				}
				if perr != nil || !pt.Equal(r.Time) || pt.Location() != r.Time.Location() || phash != r.Hash {
					t.Fatalf("pruneLink(%q) = %v, %q, %v; the record holds %v, %q", in, pt, phash, perr, r.Time, r.Hash)
				}
			}
			r3, err := decodeAuditRecord(again)
			if err != nil {
				t.Fatalf("re-encoded %q does not decode: %v", again, err)
			}
			if diff := cmp.Diff(r2, r3); diff != "" {
				t.Fatalf("round trip changed the record (-first +second):\n%s", diff)
			}
		}
	})
}

// BenchmarkAuditVerify measures Verify per record.
func BenchmarkAuditVerify(b *testing.B) {
	l := openTestAudit(b, AuditOptions{})
	appendN(b, l, 0, 50000, 512)
	b.ResetTimer()
	for b.Loop() {
		if n, err := l.Verify(); err != nil || n != 50000 {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/50000, "ns/record")
}
