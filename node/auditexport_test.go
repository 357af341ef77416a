package node

import (
	"bufio"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/mcpgw/mcpgw/adminapi"
)

// TestAuditExportFollow: GET /v1/audit/export?since=N&follow=true streams
// the records after N in sequence order, then records as they are
// appended; resuming from the last seq received repeats and skips
// nothing.
func TestAuditExportFollow(t *testing.T) {
	n := startNode(t)
	appendAudit(t, n, 3)

	read := func(sc *bufio.Scanner) uint64 {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		var rec adminapi.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		return rec.Seq
	}
	resp := adminDo(t, n, "GET", "/v1/audit/export?since=1&follow=true", nil)
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("export: %d, want %d", got, want)
	}
	sc := bufio.NewScanner(resp.Body)
	for _, want := range []uint64{2, 3} {
		if got := read(sc); got != want {
			t.Fatalf("seq %d, want %d", got, want)
		}
	}
	appendAudit(t, n, 2) // delivered to the open stream
	for _, want := range []uint64{4, 5} {
		if got := read(sc); got != want {
			t.Fatalf("followed seq %d, want %d", got, want)
		}
	}
	resp.Body.Close()

	// Resume from the cursor: exactly what came after it.
	appendAudit(t, n, 1)
	resp = adminDo(t, n, "GET", "/v1/audit/export?since=5", nil)
	sc = bufio.NewScanner(resp.Body)
	if got := read(sc); got != 6 {
		t.Fatalf("resumed at seq %d, want 6", got)
	}
	if sc.Scan() {
		t.Fatalf("extra line after the last record: %s", sc.Text())
	}

	for _, bad := range []string{"since=x", "since=-1", "follow=yes"} {
		if got := adminDo(t, n, "GET", "/v1/audit/export?"+bad, nil).StatusCode; got != http.StatusBadRequest {
			t.Errorf("export?%s: %d, want 400", bad, got)
		}
	}
}
