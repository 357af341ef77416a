package bench

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1, 1 << 63} {
		b := bucketOf(v)
		if lo, hi := bucketLow(b), bucketLow(b+1); v < lo || (hi > lo && v >= hi) {
			t.Errorf("value %d in bucket %d = [%d, %d)", v, b, lo, hi)
		}
		if b >= numBuckets {
			t.Errorf("value %d maps to bucket %d of %d", v, b, numBuckets)
		}
	}
}

func TestQuantiles(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample", []time.Duration{3 * time.Millisecond}, 0.99, 3 * time.Millisecond},
		{"median of 1..1000µs", microsRange(1, 1000), 0.50, 500 * time.Microsecond},
		{"p90 of 1..1000µs", microsRange(1, 1000), 0.90, 900 * time.Microsecond},
		{"p99 of 1..1000µs", microsRange(1, 1000), 0.99, 990 * time.Microsecond},
		{"p100 is the exact max", microsRange(1, 1000), 1, 1000 * time.Microsecond},
		{"p0 is the exact min", microsRange(7, 1000), 0, 7 * time.Microsecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			for _, s := range tc.samples {
				h.Record(s)
			}
			got := h.Quantile(tc.q)
			// Buckets are 1/64 wide: the answer is within 1/64 of the true value.
			if diff := (got - tc.want).Abs(); diff > tc.want/64 {
				t.Fatalf("Quantile(%v)=%v, want %v ± %v", tc.q, got, tc.want, tc.want/64)
			}
		})
	}
}

func TestMergeEqualsRecordingTogether(t *testing.T) {
	var a, b, all Histogram
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 10000 {
		d := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	if a != all {
		t.Fatalf("merged histogram differs from the one that recorded everything: n=%d/%d max=%v/%v", a.Count(), all.Count(), a.Max(), all.Max())
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		if got, want := a.Quantile(q), all.Quantile(q); got != want {
			t.Fatalf("Quantile(%v)=%v after merge, want %v", q, got, want)
		}
	}
}

func microsRange(from, to int) []time.Duration {
	var out []time.Duration
	for i := from; i <= to; i++ {
		out = append(out, time.Duration(i)*time.Microsecond)
	}
	return out
}
