package clocktest

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// fatalRecorder stands in for the testing.TB of a failing test: the
// failure under test must not fail this one.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// poll runs Poll against a recorder and returns the failure it reported.
func poll(d time.Duration, what string, cond func() bool) string {
	r := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Poll(r, d, what, cond)
	}()
	<-done
	return r.msg
}

// TestPoll: Poll returns as soon as the condition holds, and reports what
// it waited for and how long when it never does.
func TestPoll(t *testing.T) {
	calls := 0
	if msg := poll(10*time.Second, "the third call", func() bool { calls++; return calls == 3 }); msg != "" {
		t.Fatalf("Poll failed with %q, want it to return once cond holds", msg)
	}
	if got, want := calls, 3; got != want {
		t.Fatalf("cond called %d times, want %d", got, want)
	}
	if got, want := poll(30*time.Millisecond, "never", func() bool { return false }), "timed out after 30ms waiting for never"; got != want {
		t.Fatalf("Poll failure = %q, want %q", got, want)
	}
}
