// Package clocktest holds a settable clock, so that tests of token expiry
// and rate limits move time forward instead of waiting for it, and Poll,
// which waits in real time with a deadline for what no clock can drive (a
// goroutine finishing, a peer noticing a hang-up).
package clocktest

import (
	"sync"
	"testing"
	"time"
)

// Clock is a clock that only moves when Advance is called. Pass its Now
// method wherever a Config takes a clock function.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock that reads start until it is advanced.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Poll checks cond every 10 ms until it holds, failing t if it still does
// not after d. Tests pass a deadline generous enough for a loaded machine
// (10-20 s): a passing test returns as soon as cond holds, so only a
// failing one waits that long.
func Poll(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
