package policy

import "sync/atomic"

// Gate caps how many of something a node runs at once: open sessions,
// in-flight calls. It is a lock-free counter and safe for concurrent use;
// TryAcquire and Release do not allocate.
type Gate struct {
	max   atomic.Int64 // cap; <= 0 means none
	inUse atomic.Int64
}

// NewGate returns a gate admitting at most max holders; max <= 0 means no
// cap.
func NewGate(max int) *Gate {
	g := &Gate{}
	g.max.Store(int64(max))
	return g
}

// TryAcquire takes a slot if one is free and reports whether it did. Every
// successful TryAcquire must be followed by exactly one Release.
func (g *Gate) TryAcquire() bool {
	for {
		n, m := g.inUse.Load(), g.max.Load()
		if m > 0 && n >= m {
			return false
		}
		if g.inUse.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release frees a slot taken by TryAcquire. Releasing more than was acquired
// is a bug in the caller and panics.
func (g *Gate) Release() {
	if g.inUse.Add(-1) < 0 {
		g.inUse.Add(1)
		panic("policy: Gate.Release without a matching TryAcquire")
	}
}

// SetMax changes the cap; max <= 0 removes it. Lowering it below InUse
// refuses new holders until enough have released.
func (g *Gate) SetMax(max int) { g.max.Store(int64(max)) }

// Max returns the cap; <= 0 means none.
func (g *Gate) Max() int { return int(g.max.Load()) }

// InUse returns the number of slots held.
func (g *Gate) InUse() int { return int(g.inUse.Load()) }
