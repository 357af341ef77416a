package gateway

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestWorkerPoolReusesWorkers runs tasks one after another and checks they
// ran on kept goroutines, and that close leaves none behind.
func TestWorkerPoolReusesWorkers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	p := newWorkerPool()
	for i := 0; i < 50; i++ {
		done := make(chan struct{})
		p.Go(func() { close(done) })
		<-done
		// The worker goes back to waiting right after its task; wait for
		// that, so the next task finds it idle.
		deadline := time.Now().Add(10 * time.Second)
		for p.idle.Load() != p.started.Load() {
			if time.Now().After(deadline) {
				t.Fatal("workers never went back to waiting")
			}
			time.Sleep(time.Millisecond)
		}
	}
	// A worker counts itself idle just before it waits: a task sent in
	// between (the test preempted there, under load) starts a second
	// worker. Without reuse there would be 50.
	if got := p.started.Load(); got > 3 {
		t.Fatalf("50 sequential tasks ran on %d goroutines, want 1 (at most 3)", got)
	}
	p.close()
	p.close()
	ran := make(chan struct{})
	p.Go(func() { close(ran) }) // after close: still runs
	<-ran
}
