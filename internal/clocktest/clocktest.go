// Package clocktest holds a settable clock, so that tests of token expiry
// and rate limits move time forward instead of waiting for it.
package clocktest

import (
	"sync"
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
