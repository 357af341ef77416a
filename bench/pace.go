package bench

import (
	"sync/atomic"
	"time"
)

// pacer hands out the send times of a fixed-rate run: call i is due at
// start + i/rate, whoever sends it. Workers that fall behind take due
// times already past and send at once, and their latency is measured from
// the due time, not from when they got round to sending: a stalled
// gateway then shows as the latency its callers would have seen, instead
// of as fewer, faster calls (coordinated omission).
type pacer struct {
	start time.Time
	end   time.Time
	rate  float64      // calls per second, over all workers
	next  atomic.Int64 // index of the next call to hand out
}

func newPacer(start time.Time, d time.Duration, rate float64) *pacer {
	return &pacer{start: start, end: start.Add(d), rate: rate}
}

// due returns the time call i is due.
func (p *pacer) due(i int64) time.Time {
	return p.start.Add(time.Duration(float64(i) * float64(time.Second) / p.rate))
}

// claim hands out the next call's due time; ok is false once the run's
// duration is over.
func (p *pacer) claim() (due time.Time, ok bool) {
	t := p.due(p.next.Add(1) - 1)
	return t, t.Before(p.end)
}
