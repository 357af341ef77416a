package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestExportWriterCursor: the cursor file holds the seq of the last whole
// line printed, never of a line still in flight.
func TestExportWriterCursor(t *testing.T) {
	var out bytes.Buffer
	cursor := filepath.Join(t.TempDir(), "cursor")
	w := &exportWriter{out: &out, cursor: cursor}
	if _, err := w.Write([]byte("{\"seq\":7,\"node\":\"gw1\"}\n{\"seq\":8,")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cursor)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "7\n"; got != want {
		t.Fatalf("cursor=%q, want %q", got, want)
	}
	if got, want := out.String(), "{\"seq\":7,\"node\":\"gw1\"}\n"; got != want {
		t.Fatalf("printed %q, want %q", got, want)
	}
	if _, err := w.Write([]byte("\"node\":\"gw1\"}\n")); err != nil {
		t.Fatal(err)
	}
	if b, _ = os.ReadFile(cursor); string(b) != "8\n" {
		t.Fatalf("cursor=%q, want 8", b)
	}
	if _, err := w.Write([]byte("not json\n")); err == nil {
		t.Fatal("a line that is not a record was accepted")
	}
}
