package policy

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestGate(t *testing.T) {
	g := NewGate(2)
	steps := []struct {
		op     string
		want   bool
		wantIn int
	}{
		{"acquire", true, 1},
		{"acquire", true, 2},
		{"acquire", false, 2},
		{"release", true, 1},
		{"acquire", true, 2},
		{"acquire", false, 2},
		{"release", true, 1},
		{"release", true, 0},
	}
	for i, s := range steps {
		got := true
		if s.op == "acquire" {
			got = g.TryAcquire()
		} else {
			g.Release()
		}
		if got != s.want || g.InUse() != s.wantIn {
			t.Fatalf("step %d %s: got %v, InUse %d; want %v, %d", i, s.op, got, g.InUse(), s.want, s.wantIn)
		}
	}
}

func TestGateNoCap(t *testing.T) {
	for _, max := range []int{0, -1} {
		g := NewGate(max)
		for i := range 1000 {
			if !g.TryAcquire() {
				t.Fatalf("NewGate(%d): acquire %d refused, want no cap", max, i+1)
			}
		}
	}
}

func TestGateSetMax(t *testing.T) {
	g := NewGate(3)
	for range 3 {
		g.TryAcquire()
	}
	g.SetMax(1)
	if g.TryAcquire() {
		t.Fatal("acquire above a lowered cap succeeded")
	}
	g.Release()
	g.Release()
	if g.TryAcquire() {
		t.Fatal("acquire with 1 held and cap 1 succeeded")
	}
	g.Release()
	if !g.TryAcquire() {
		t.Fatal("acquire with 0 held and cap 1 refused")
	}
	if got, want := g.Max(), 1; got != want {
		t.Errorf("Max() = %d, want %d", got, want)
	}
}

func TestGateReleaseWithoutAcquirePanics(t *testing.T) {
	g := NewGate(1)
	defer func() {
		if recover() == nil {
			t.Error("Release without TryAcquire did not panic")
		}
		if got := g.InUse(); got != 0 {
			t.Errorf("InUse() after the bad Release = %d, want 0", got)
		}
	}()
	g.Release()
}

func TestGateConcurrent(t *testing.T) {
	const max, workers, rounds = 5, 16, 500
	g := NewGate(max)
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if !g.TryAcquire() {
					continue
				}
				n := held.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				held.Add(-1)
				g.Release()
			}
		}()
	}
	wg.Wait()
	if got := peak.Load(); got > max {
		t.Errorf("peak holders = %d, want at most %d", got, max)
	}
	if got := g.InUse(); got != 0 {
		t.Errorf("InUse() after all released = %d, want 0", got)
	}
}

func TestGateDoesNotAllocate(t *testing.T) {
	g := NewGate(10)
	if n := testing.AllocsPerRun(100, func() {
		if g.TryAcquire() {
			g.Release()
		}
	}); n != 0 {
		t.Errorf("TryAcquire+Release allocate %v times, want 0", n)
	}
}
