package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
)

// fakeConsistency stands in for a node's raft: these tests need a node
// that knows no leader, or whose barrier fails, on demand, which a real
// cluster gives only after a partition (node's TestNoLeaderReadsRefused
// does that end to end).
type fakeConsistency struct {
	leader  bool
	readErr error
}

func (fakeConsistency) AppliedIndex() uint64                      { return 7 }
func (fakeConsistency) LastWriteIndex() uint64                    { return 0 }
func (fakeConsistency) WaitApplied(context.Context, uint64) error { return nil }
func (f fakeConsistency) HasLeader() bool                         { return f.leader }
func (f fakeConsistency) ReadIndex(context.Context) (uint64, error) {
	if f.readErr != nil {
		return 0, f.readErr
	}
	return 7, nil
}

// TestReadsWithoutConfirmedCopyRefused: a read on a node that knows no
// leader, or whose barrier fails, is refused with 503, the refusal marked
// and typed and saying what to do; a write whose barrier fails is refused
// before it changes anything; a read asking for the stale copy gets it,
// marked; the header is refused on writes and with unknown values.
func TestReadsWithoutConfirmedCopyRefused(t *testing.T) {
	noLeader := fmt.Sprintf("this node knows no leader, so it cannot confirm its copy is current: retry on another node, or ask for the local copy explicitly with --stale (header %s: %s)", ConsistencyHeader, ConsistencyStale)
	unreachable := errors.New("leader gw1 at 127.0.0.1:1 cannot be reached")
	tests := []struct {
		name        string
		c           fakeConsistency
		method      string
		path        string
		header      string // ConsistencyHeader sent
		wantStatus  int
		wantMarker  string // ConsistencyHeader answered
		wantMessage string // exact, when set
	}{
		{"read without a leader", fakeConsistency{}, http.MethodGet, "/v1/routes", "", 503, ConsistencyUnconfirmed, noLeader},
		{"read whose barrier fails", fakeConsistency{leader: true, readErr: unreachable}, http.MethodGet, "/v1/tokens", "", 503, ConsistencyUnconfirmed,
			fmt.Sprintf("this node could not confirm with the leader within 50ms that its copy is current (%v): retry on another node, or ask for the local copy explicitly with --stale (header %s: %s)", unreachable, ConsistencyHeader, ConsistencyStale)},
		{"write whose barrier finds no leader", fakeConsistency{readErr: cluster.ErrNoLeader}, http.MethodPost, "/v1/routes", "", 503, ConsistencyUnconfirmed,
			"this node found no leader within 50ms, so it cannot check the write against current state: nothing was changed; retry shortly, or send it to another node (mcpgw cluster status)"},
		{"stale read without a leader", fakeConsistency{}, http.MethodGet, "/v1/routes", "stale", 200, ConsistencyStale, ""},
		{"confirmed read", fakeConsistency{leader: true}, http.MethodGet, "/v1/routes", "", 200, "", ""},
		{"stale write", fakeConsistency{leader: true}, http.MethodDelete, "/v1/routes/r1", "stale", 400, "", ""},
		{"unknown consistency", fakeConsistency{leader: true}, http.MethodGet, "/v1/routes", "eventual", 400, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := startAPI(t, "", func(o *Options) { o.Consistency, o.MinIndexWait = tt.c, 50*time.Millisecond })
			req, err := http.NewRequest(tt.method, a.url+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.method == http.MethodPost {
				req, _ = http.NewRequest(tt.method, a.url+tt.path, strings.NewReader(`{"name":"r1","url":"http://127.0.0.1:9/mcp"}`))
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set("Authorization", "Bearer "+testToken)
			if tt.header != "" {
				req.Header.Set(ConsistencyHeader, tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e ErrorBody
			json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get(ConsistencyHeader) != tt.wantMarker {
				t.Fatalf("HTTP %d %s %q (%q), want %d %q", resp.StatusCode, ConsistencyHeader, resp.Header.Get(ConsistencyHeader), e.Error, tt.wantStatus, tt.wantMarker)
			}
			if tt.wantMessage != "" && (e.Error != tt.wantMessage || e.Code != CodeNotCurrent || resp.Header.Get("Retry-After") == "") {
				t.Fatalf("refusal %+v (Retry-After %q), want %q code %q", e, resp.Header.Get("Retry-After"), tt.wantMessage, CodeNotCurrent)
			}
			if routes, _ := a.store.Routes(); tt.method == http.MethodPost && len(routes) != 0 {
				t.Fatalf("refused write changed state: %+v", routes)
			}
		})
	}
}
