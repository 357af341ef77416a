package gateway

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestWorkerPoolReusesWorkers runs tasks one after another and checks they
// ran on one kept goroutine, and that close leaves none behind.
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
		for p.idle.Load() != 1 {
			if time.Now().After(deadline) {
				t.Fatal("worker never went back to waiting")
			}
			time.Sleep(time.Millisecond)
		}
	}
	if got, want := p.started.Load(), int64(1); got != want {
		t.Fatalf("50 sequential tasks ran on %d goroutines, want %d", got, want)
	}
	p.close()
	p.close()
	ran := make(chan struct{})
	p.Go(func() { close(ran) }) // after close: still runs
	<-ran
}
