package gateway

import (
	"sync"
	"sync/atomic"
	"time"
)

// workerPool runs short tasks (a call's upstream write) on goroutines kept
// for reuse. A streamable HTTP write runs for the whole call, deep in
// net/http, so a fresh goroutine per call grows (copies) its stack every
// time; a kept one has grown once. Workers exist only while there is work:
// one idle for workerIdle exits, so an idle gateway holds none.
type workerPool struct {
	work chan func() // unbuffered: a send succeeds only to an idle worker
	quit chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	closed bool // guarded by mu; after it, tasks run on goroutines of their own

	started atomic.Int64 // workers started, for tests
	idle    atomic.Int64 // workers waiting for a task, for tests
}

// workerIdle is how long a worker waits for its next task.
const workerIdle = 5 * time.Second

func newWorkerPool() *workerPool {
	return &workerPool{work: make(chan func()), quit: make(chan struct{})}
}

// Go runs f on an idle worker, or on a new one.
func (p *workerPool) Go(f func()) {
	select {
	case p.work <- f:
		return
	default:
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		go f()
		return
	}
	p.wg.Add(1) // under mu, so that close's Wait sees it
	p.mu.Unlock()
	p.started.Add(1)
	go p.worker(f)
}

func (p *workerPool) worker(f func()) {
	defer p.wg.Done()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		f()
		t.Reset(workerIdle)
		p.idle.Add(1)
		select {
		case f = <-p.work:
			p.idle.Add(-1)
		case <-t.C:
			p.idle.Add(-1)
			return
		case <-p.quit:
			p.idle.Add(-1)
			return
		}
	}
}

// close stops the idle workers and waits for the busy ones to finish
// their task; idempotent.
func (p *workerPool) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.quit)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
