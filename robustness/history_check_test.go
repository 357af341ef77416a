package robustness

import (
	"math"
	"testing"
)

// TestCheckerVerdicts: the model and checks find a stale read, a lost
// write and a read of an unacknowledged write where there are ones, and
// accept the concurrent and in-doubt orders that are legal.
func TestCheckerVerdicts(t *testing.T) {
	put := func(client int, value string, call, ret int64, out outcome) record {
		return record{client: client, node: "gw1", kind: opPutRoute, key: "route/r0", value: value, out: out, call: call, ret: ret}
	}
	get := func(client int, value string, call, ret int64, mode readMode) record {
		seen := map[string]string{}
		if value != "" {
			seen["route/r0"] = value
		}
		return record{client: client, node: "gw2", kind: opReadRoutes, mode: mode, seen: seen, call: call, ret: ret}
	}
	tests := []struct {
		name      string
		records   []record
		final     string
		wantViol  bool
		wantLost  bool
		checkMode readMode
		wantStale bool // a read older than an acknowledged write
	}{
		{"read after ack sees it", []record{put(0, "a", 0, 10, ok), get(1, "a", 20, 30, barrierRead)}, "a", false, false, barrierRead, false},
		{"stale read after ack", []record{put(0, "a", 0, 10, ok), put(0, "b", 20, 30, ok), get(1, "a", 40, 50, barrierRead)}, "b", true, false, barrierRead, true},
		{"concurrent read may see either", []record{put(0, "a", 0, 10, ok), put(0, "b", 20, 30, ok), get(1, "a", 25, 50, barrierRead)}, "b", false, false, barrierRead, false},
		{"in-doubt write seen later", []record{put(0, "a", 0, math.MaxInt64, unknown), get(1, "a", 40, 50, barrierRead)}, "a", false, false, barrierRead, false},
		{"in-doubt write seen, then unseen", []record{put(0, "a", 0, math.MaxInt64, unknown), get(1, "a", 40, 50, barrierRead), get(1, "", 60, 70, barrierRead)}, "a", true, false, barrierRead, false},
		{"local stale read only counts in local mode", []record{put(0, "a", 0, 10, ok), get(1, "", 20, 30, localRead)}, "a", false, false, barrierRead, false},
		{"local stale read", []record{put(0, "a", 0, 10, ok), get(1, "", 20, 30, localRead)}, "a", true, false, localRead, true},
		{"refused local read observes nothing", []record{put(0, "a", 0, 10, ok), {client: 1, node: "gw2", kind: opReadRoutes, mode: localRead, refused: true, call: 20, ret: 30}}, "a", false, false, localRead, false},
		{"acknowledged write lost", []record{put(0, "a", 0, 10, ok)}, "", false, true, barrierRead, false},
		{"overwritten by a later in-doubt write", []record{put(0, "a", 0, 10, ok), put(1, "b", 5, math.MaxInt64, unknown)}, "b", false, false, barrierRead, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &history{records: tt.records}
			keys := []string{"route/r0"}
			viol, inconclusive := h.check(tt.checkMode, keys, checkTimeout)
			if got := len(viol) > 0; got != tt.wantViol || inconclusive != 0 {
				t.Fatalf("check(%v) = %v (inconclusive %d), want violation %v", tt.checkMode, viol, inconclusive, tt.wantViol)
			}
			final := map[string]string{}
			if tt.final != "" {
				final["route/r0"] = tt.final
			}
			stale, _ := h.staleReads(tt.checkMode, keys)
			if got, want := stale > 0, tt.wantStale; got != want {
				t.Fatalf("staleReads(%v) = %d, want stale %v", tt.checkMode, stale, want)
			}
			lost := h.lostWrites(map[string]map[string]string{"gw1": final}, keys)
			if got := len(lost) > 0; got != tt.wantLost {
				t.Fatalf("lostWrites = %v, want lost %v", lost, tt.wantLost)
			}
		})
	}
}
