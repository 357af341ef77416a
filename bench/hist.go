package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits buckets, so a recorded value is off by less than 1/64 (1.6 %).
const subBits = 6

const (
	subCount   = 1 << subBits
	numBuckets = subCount + (64-subBits)*subCount
)

// Histogram records durations in log-linear buckets, like HdrHistogram: a
// fixed 30 KiB whatever the number of samples, so a long run costs no more
// memory than a short one, and each worker keeps its own without locking
// (Merge adds them up at the end). The zero value is empty and ready.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    time.Duration
	min    time.Duration
	max    time.Duration
}

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return subCount + shift*subCount + int(v>>shift) - subCount
}

// bucketLow returns the smallest value that falls into bucket b.
func bucketLow(b int) uint64 {
	if b < subCount {
		return uint64(b)
	}
	shift := (b - subCount) / subCount
	return uint64(subCount+(b-subCount)%subCount) << shift
}

// Record adds one sample; negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest sample, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean returns the average sample, exactly.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the sample at quantile q (0..1): the middle of the
// bucket holding it, clamped to the exact minimum and maximum. An empty
// histogram answers 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for b, c := range h.counts {
		if seen += c; seen >= rank {
			lo, hi := bucketLow(b), bucketLow(b+1)
			v := time.Duration(lo + (hi-lo)/2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}
