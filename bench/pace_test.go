package bench

import (
	"sync"
	"testing"
	"time"
)

func TestPacerDueTimes(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		rate float64
		d    time.Duration
		want int // calls handed out
		gap  time.Duration
	}{
		{"1000/s for 1s", 1000, time.Second, 1000, time.Millisecond},
		{"3/s for 1s", 3, time.Second, 3, time.Second / 3},
		{"250/s for 2s", 250, 2 * time.Second, 500, 4 * time.Millisecond},
		{"fractional 2.5/s for 2s", 2.5, 2 * time.Second, 5, 400 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPacer(start, tc.d, tc.rate)
			var got []time.Time
			for {
				due, ok := p.claim()
				if !ok {
					break
				}
				got = append(got, due)
			}
			if len(got) != tc.want {
				t.Fatalf("handed out %d calls, want %d", len(got), tc.want)
			}
			if !got[0].Equal(start) {
				t.Fatalf("first call due %v, want the start %v", got[0], start)
			}
			for i := 1; i < len(got); i++ {
				if gap := got[i].Sub(got[i-1]); (gap - tc.gap).Abs() > time.Microsecond {
					t.Fatalf("call %d due %v after call %d, want %v", i, gap, i-1, tc.gap)
				}
			}
		})
	}
}

func TestPacerHandsEachCallOutOnce(t *testing.T) {
	p := newPacer(time.Now(), time.Second, 10000)
	var mu sync.Mutex
	seen := map[time.Time]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				due, ok := p.claim()
				if !ok {
					return
				}
				mu.Lock()
				if seen[due] {
					t.Errorf("due time %v handed out twice", due)
				}
				seen[due] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got, want := len(seen), 10000; got != want {
		t.Fatalf("%d calls handed out over 8 workers, want %d", got, want)
	}
}
