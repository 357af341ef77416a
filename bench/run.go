package bench

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
)

// Config configures a run. Start from DefaultConfig.
type Config struct {
	// Targets to measure, in order; direct runs first whatever its place
	// so the others can be compared with it. Default AllTargets.
	Targets []string
	// Protocols to pin, each run over every target. Default 2025-11-25.
	Protocols []string
	// Sessions is the number of sessions per target. Default 8.
	Sessions int
	// Concurrency is the number of workers in total, each with one call in
	// flight, spread round-robin over the sessions (as etcd's benchmark
	// spreads --clients over --conns). Default 8.
	Concurrency int
	// Duration is how long each target is driven. Default 10s.
	Duration time.Duration
	// Rate, when positive, sends this many calls per second in total at
	// fixed times instead of as fast as answers come, and measures latency
	// from each call's due time. Default 0.
	Rate float64
	// IdleSessions, when positive, measures memory instead of load: opens
	// this many idle sessions per target and reports the RSS each costs.
	// Default 0.
	IdleSessions int
	// Payload is the text each echo call sends. Default "hello".
	Payload string
	// OpenConcurrency is how many sessions open at once. Default 0: one
	// at a time for load runs, so that open p50 is the latency of one
	// open rather than of a queue, and 16 for IdleSessions.
	OpenConcurrency int

	// Routes, Credentials and Rules, when positive, grow the gateway's
	// configuration before the run, through its admin API, so that a run
	// measures the per-call cost at that scale (see Scale): compare with a
	// run without them. They stay on a gateway given by Gateway; with
	// IdleSessions, each target's freshly started gateway gets them anew.
	// Default 0.
	Routes, Credentials, Rules int

	// Exe is the mcpgw binary whose `bench-upstream` and `serve` commands
	// run the upstream and the gateway. Required unless both are given.
	Exe string
	// Env is added to the environment of the processes started. Default none.
	Env []string
	// Upstream is the base URL (http://host:port) of a running echo
	// upstream serving StatefulPath and StatelessPath, or the full URL of
	// another MCP server with an echo tool. Default: start one.
	Upstream string
	// UpstreamPID is the process id of Upstream, for its CPU. Default 0:
	// not measured.
	UpstreamPID int
	// Gateway is a running gateway to measure. Default: start one.
	Gateway *GatewayAddrs
	// GatewayPID is the process id of Gateway, for its CPU and memory.
	// Default 0: not measured.
	GatewayPID int
	// Target is the streamable HTTP URL of another MCP proxy fronting the
	// echo upstream at Upstream, measured as target TargetOther the way the
	// gateway is measured, its CPU read from TargetPID. Targets may then
	// name only direct and target. Default "": none.
	Target string
	// TargetPID is the process id of the proxy at Target. Default 0: its
	// CPU is not measured.
	TargetPID int
	// Token is the service token for Gateway. Default: issue one through
	// its admin API.
	Token string

	// ProfileDir, when set, receives Go profiles of the gateway the bench
	// starts (which then serves them, as `serve --pprof`): a CPU profile of
	// the middle of each load run (cpu-<target>-<protocol>.pb.gz) and a heap
	// and a goroutine profile of each idle run with its sessions open
	// (heap-<target>-<protocol>.pb.gz, goroutine-…). Default "": none.
	ProfileDir string

	// Progress receives a status line twice a second (with carriage
	// returns: meant for a terminal). Default nil: none.
	Progress io.Writer
}

// DefaultConfig returns the configuration of `mcpgw bench` with no flags.
func DefaultConfig() Config {
	return Config{
		Targets:     slices.Clone(AllTargets),
		Protocols:   []string{Protocol20251125},
		Sessions:    8,
		Concurrency: 8,
		Duration:    10 * time.Second,
		Payload:     "hello",
	}
}

// SmokeConfig returns a short run over every target and both protocols,
// for CI: it proves every path works, not how fast.
func SmokeConfig() Config {
	c := DefaultConfig()
	c.Protocols = []string{Protocol20251125, Protocol20260728}
	c.Sessions, c.Concurrency, c.Duration = 1, 2, time.Second
	return c
}

// Validate reports the first invalid setting, naming the flag to fix.
func (c *Config) Validate() error {
	if len(c.Targets) == 0 {
		return errors.New("--targets names no target: use some of " + strings.Join(AllTargets, ","))
	}
	for _, t := range c.Targets {
		if c.Target != "" {
			if t != TargetDirect && t != TargetOther {
				return fmt.Errorf("--targets: with --target, measure only %s and %s (got %q)", TargetDirect, TargetOther, t)
			}
			continue
		}
		if !slices.Contains(AllTargets, t) {
			return fmt.Errorf("--targets: unknown target %q: use some of %s", t, strings.Join(AllTargets, ","))
		}
	}
	if len(c.Protocols) == 0 {
		return errors.New("--protocol names no version: use 2025-11-25, 2026-07-28 or both")
	}
	for _, p := range c.Protocols {
		if p != Protocol20251125 && p != Protocol20260728 {
			return fmt.Errorf("--protocol %q: use %s or %s", p, Protocol20251125, Protocol20260728)
		}
	}
	if c.IdleSessions < 0 {
		return fmt.Errorf("--idle-sessions %d must not be negative", c.IdleSessions)
	}
	if c.IdleSessions == 0 && (c.Sessions < 1 || c.Concurrency < 1 || c.Duration <= 0) {
		return fmt.Errorf("--sessions %d, --concurrency %d and --duration %v must be positive", c.Sessions, c.Concurrency, c.Duration)
	}
	if c.OpenConcurrency < 0 {
		return fmt.Errorf("--open-concurrency %d must not be negative (0: 1 for load runs, 16 for --idle-sessions)", c.OpenConcurrency)
	}
	if c.Routes < 0 || c.Credentials < 0 || c.Rules < 0 {
		return fmt.Errorf("--routes %d, --credentials %d and --rules %d must not be negative", c.Routes, c.Credentials, c.Rules)
	}
	if c.Routes > 0 || c.Credentials > 0 || c.Rules > 0 {
		switch {
		case c.Target != "":
			return errors.New("--routes, --credentials and --rules grow mcpgw's configuration: they do not apply to another proxy at --target")
		case !needsGateway(c.Targets):
			return errors.New("--routes, --credentials and --rules grow the gateway's configuration, but --targets names no gateway target: add ws, quic, unix or http")
		case c.Gateway != nil && c.Gateway.Admin == "":
			return errors.New("--routes, --credentials and --rules are created through the admin API: pass --gateway-admin (and --admin-token) of the running gateway")
		}
	}
	if c.Rate < 0 {
		return fmt.Errorf("--rate %v must not be negative (0: as fast as answers come)", c.Rate)
	}
	if c.Target != "" && (c.Upstream == "" || c.Gateway != nil) {
		return errors.New("--target needs --upstream, the echo upstream the proxy at --target fronts (start one with `mcpgw bench-upstream`), and no gateway flags")
	}
	if c.Exe == "" && (c.Upstream == "" || (c.Gateway == nil && needsGateway(c.Targets))) {
		return errors.New("no mcpgw binary to start the upstream and gateway with: pass their addresses")
	}
	return nil
}

// Report is the outcome of a run.
type Report struct {
	Started     time.Time `json:"started"`
	Mode        string    `json:"mode"` // "load", "rate" or "idle"
	Sessions    int       `json:"sessions"`
	Concurrency int       `json:"concurrency"`
	DurationSec float64   `json:"duration_s"`
	Rate        float64   `json:"rate,omitempty"`
	Idle        int       `json:"idle_sessions,omitempty"`
	// OpenConcurrency is how many sessions opened at once.
	OpenConcurrency int `json:"open_concurrency"`
	// Scale is what the gateway held besides the bench's own routes.
	Scale   Scale    `json:"scale"`
	Results []Result `json:"results"`
}

// Errors returns the number of failed calls and session opens.
func (r *Report) Errors() uint64 {
	var n uint64
	for _, res := range r.Results {
		n += res.Errors + res.Open.Errors
	}
	return n
}

// Result is what one target did under one protocol version.
type Result struct {
	Target   string `json:"target"`
	Protocol string `json:"protocol"`

	Calls       uint64   `json:"calls"`
	Errors      uint64   `json:"errors"`
	ErrorSample []string `json:"error_sample,omitempty"`
	ElapsedSec  float64  `json:"elapsed_s"`
	CallsPerSec float64  `json:"calls_per_s"`
	// RatioToDirect is CallsPerSec over direct's in the same run; 0
	// without a direct result.
	RatioToDirect float64 `json:"ratio_to_direct,omitempty"`
	Latency       Latency `json:"latency_us"`
	// AddedP50 and AddedP99 are this target's latency minus direct's in
	// the same run, in µs; nil without a direct result.
	AddedP50 *float64 `json:"added_p50_us,omitempty"`
	AddedP99 *float64 `json:"added_p99_us,omitempty"`
	// CPUPerCall is the CPU time each process used per call, in µs; nil
	// for a process not measured.
	CPUPerCall CPUPerCall `json:"cpu_per_call_us"`
	Open       OpenStats  `json:"open"`
	Idle       *IdleStats `json:"idle,omitempty"`

	hist Histogram
}

// Latency holds percentiles in µs.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// CPUPerCall is CPU µs per call of each process.
type CPUPerCall struct {
	Gateway  *float64 `json:"gateway,omitempty"`
	Upstream *float64 `json:"upstream,omitempty"`
	Loadgen  *float64 `json:"loadgen,omitempty"`
}

// OpenStats describes opening the sessions.
type OpenStats struct {
	Sessions  int     `json:"sessions"`
	Errors    uint64  `json:"errors"`
	PerSec    float64 `json:"per_s"`
	P50Micros float64 `json:"p50_us"`
	// AddedP50Micros is P50Micros minus direct's in the same run: direct's
	// open is the upstream's initialize, so this is the gateway's share;
	// nil without a direct result.
	AddedP50Micros *float64 `json:"added_p50_us,omitempty"`
}

// IdleStats is the memory idle sessions cost.
type IdleStats struct {
	Sessions int `json:"sessions"`
	// GatewayRSSPerSession and UpstreamRSSPerSession are RSS growth ÷
	// sessions, in bytes; nil for a process not measured.
	GatewayRSSPerSession  *float64 `json:"gateway_rss_per_session_bytes,omitempty"`
	UpstreamRSSPerSession *float64 `json:"upstream_rss_per_session_bytes,omitempty"`
	// GatewayGoroutinesPerSession is go_goroutines growth ÷ sessions, from
	// the gateway's /metrics; nil when unreadable.
	GatewayGoroutinesPerSession *float64 `json:"gateway_goroutines_per_session,omitempty"`
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// runner holds the processes and endpoints of a run.
type runner struct {
	cfg      Config
	upstream *child
	gateway  *gatewayProc
	ep       *endpoints

	// scale is what setup created on the gateway, with its timings; nil
	// until a setup has created it.
	scale *Scale

	profMu  sync.Mutex
	profErr error // the first profile that could not be saved; guarded by profMu
}

// openConcurrency is OpenConcurrency with its default applied.
func (c *Config) openConcurrency() int {
	switch {
	case c.OpenConcurrency > 0:
		return c.OpenConcurrency
	case c.IdleSessions > 0:
		return 16
	default:
		return 1
	}
}

// Run measures every target under every protocol and returns the report.
// It fails only when it cannot set up, or cannot save a profile asked for
// (then with the report); failed calls are counted in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("--profile-dir: %w; name a directory the bench may create and write", err)
		}
	}
	targets := slices.Clone(cfg.Targets)
	if i := slices.Index(targets, TargetDirect); i > 0 {
		targets = append([]string{TargetDirect}, slices.Delete(targets, i, i+1)...)
	}
	rep := &Report{Started: time.Now().UTC(), Mode: "load", Sessions: cfg.Sessions, Concurrency: cfg.Concurrency, DurationSec: cfg.Duration.Seconds(), Rate: cfg.Rate, Idle: cfg.IdleSessions,
		OpenConcurrency: cfg.openConcurrency(), Scale: Scale{Routes: cfg.Routes, Credentials: cfg.Credentials, Rules: cfg.Rules}}
	if cfg.Rate > 0 {
		rep.Mode = "rate"
	}
	if cfg.IdleSessions > 0 {
		rep.Mode, rep.Sessions, rep.Concurrency, rep.DurationSec = "idle", 0, 0, 0
	}
	defer client.CloseConnections()
	r := &runner{cfg: cfg}
	// Idle sessions leave memory behind in a Go process after they close,
	// so each target measures a fresh gateway when the bench owns it.
	fresh := cfg.IdleSessions > 0 && cfg.Gateway == nil
	if !fresh {
		if err := r.setup(ctx, targets); err != nil {
			return nil, err
		}
		defer r.teardown()
	}
	for _, proto := range cfg.Protocols {
		var direct *Result
		for _, tgt := range targets {
			if fresh {
				if err := r.setup(ctx, []string{tgt}); err != nil {
					return nil, err
				}
			}
			var res Result
			if cfg.IdleSessions > 0 {
				res = r.idle(ctx, tgt, proto)
			} else {
				res = r.load(ctx, tgt, proto)
			}
			if fresh {
				r.teardown()
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if r.scale != nil {
				rep.Scale = *r.scale
			}
			if tgt == TargetDirect {
				direct = &res
			} else if direct != nil {
				if cfg.IdleSessions == 0 && res.Calls > 0 && direct.Calls > 0 {
					res.RatioToDirect = res.CallsPerSec / direct.CallsPerSec
					a50, a99 := res.Latency.P50-direct.Latency.P50, res.Latency.P99-direct.Latency.P99
					res.AddedP50, res.AddedP99 = &a50, &a99
				}
				if res.Open.Sessions > 0 && direct.Open.Sessions > 0 {
					a := res.Open.P50Micros - direct.Open.P50Micros
					res.Open.AddedP50Micros = &a
				}
			}
			rep.Results = append(rep.Results, res)
		}
	}
	if r.profErr != nil {
		return rep, r.profErr
	}
	return rep, nil
}

// setup starts or reaches the upstream and gateway, creates the routes and
// the service token.
func (r *runner) setup(ctx context.Context, targets []string) error {
	up := map[string]string{}
	base := r.cfg.Upstream
	if base == "" {
		c, u, err := startUpstream(ctx, r.cfg.Exe, r.cfg.Env)
		if err != nil {
			return err
		}
		r.upstream, base = c, u
	}
	for _, p := range r.cfg.Protocols {
		switch {
		case r.cfg.Upstream != "" && strings.Contains(strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://"), "/"):
			up[p] = base // a full URL of some other MCP server
		case stateless(p):
			up[p] = strings.TrimSuffix(base, "/") + StatelessPath
		default:
			up[p] = strings.TrimSuffix(base, "/") + StatefulPath
		}
	}
	var gw GatewayAddrs
	token := r.cfg.Token
	if needsGateway(targets) {
		if r.cfg.Gateway != nil {
			gw = *r.cfg.Gateway
		} else {
			env := r.cfg.Env
			if r.cfg.ProfileDir != "" {
				env = append(slices.Clone(env), "MCPGW_PPROF=1")
			}
			var args []string
			if n := r.cfg.IdleSessions + r.cfg.Concurrency; n > 900 {
				// All sessions come from one address: the per-address cap
				// (1000 by default) would refuse the rest.
				args = []string{"--max-conns-per-ip", strconv.Itoa(n + 100)}
			}
			g, err := startGateway(ctx, r.cfg.Exe, env, args)
			if err != nil {
				r.teardown()
				return err
			}
			r.gateway, gw = g, g.addrs
		}
		if gw.Admin != "" {
			a := &admin{base: strings.TrimSuffix(gw.Admin, "/"), token: gw.AdminToken, http: &http.Client{Timeout: 30 * time.Second, Transport: pooledTransport(bulkWorkers)}}
			var routes []string
			for _, p := range r.cfg.Protocols {
				if slices.Contains(routes, routeName(p)) {
					continue
				}
				routes = append(routes, routeName(p))
				if err := a.putRoute(ctx, routeName(p), up[p]); err != nil {
					r.teardown()
					return err
				}
			}
			sc, err := r.createScale(ctx, a, routes, up[r.cfg.Protocols[0]])
			if err != nil {
				r.teardown()
				return err
			}
			r.scale = &sc
			if token == "" {
				var err error
				if token, err = a.issueToken(ctx, benchOrg); err != nil {
					r.teardown()
					return err
				}
			}
		}
	}
	ep, err := newEndpoints(up, gw, token, r.cfg.Concurrency+r.cfg.IdleSessions)
	if err != nil {
		r.teardown()
		return err
	}
	ep.other = r.cfg.Target
	r.ep = ep
	return nil
}

func (r *runner) teardown() {
	client.CloseConnections()
	if r.gateway != nil {
		r.gateway.stop()
		r.gateway = nil
	}
	if r.upstream != nil {
		r.upstream.stop()
		r.upstream = nil
	}
}

func (r *runner) gatewayPID() int {
	if r.cfg.Target != "" {
		return r.cfg.TargetPID
	}
	if r.gateway != nil {
		return r.gateway.pid()
	}
	return r.cfg.GatewayPID
}

func (r *runner) upstreamPID() int {
	if r.upstream != nil {
		return r.upstream.pid()
	}
	return r.cfg.UpstreamPID
}

func (r *runner) admin() *admin {
	if r.ep.gw.Admin == "" {
		return nil
	}
	return &admin{base: strings.TrimSuffix(r.ep.gw.Admin, "/"), token: r.ep.gw.AdminToken, http: &http.Client{Timeout: 10 * time.Second}}
}

// snapshot is the CPU and memory of each process at one moment.
type snapshot struct {
	gateway, upstream, self *ProcSample
}

func sampleOf(pid int) *ProcSample {
	if pid < 0 {
		return nil
	}
	s, err := ReadProc(pid)
	if err != nil {
		return nil
	}
	return &s
}

func (r *runner) sample() snapshot {
	s := snapshot{self: sampleOf(0)}
	if pid := r.gatewayPID(); pid > 0 {
		s.gateway = sampleOf(pid)
	}
	if pid := r.upstreamPID(); pid > 0 {
		s.upstream = sampleOf(pid)
	}
	return s
}

// errorLog counts failures and keeps a few distinct messages.
type errorLog struct {
	n    atomic.Uint64
	mu   sync.Mutex
	seen map[string]int // message → count; guarded by mu
}

func (e *errorLog) add(err error) {
	e.n.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seen == nil {
		e.seen = map[string]int{}
	}
	msg := err.Error()
	if _, ok := e.seen[msg]; ok || len(e.seen) < 5 {
		e.seen[msg]++
	}
}

func (e *errorLog) sample() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for m, n := range e.seen {
		out = append(out, fmt.Sprintf("%d× %s", n, m))
	}
	sort.Strings(out)
	return out
}

// openAll opens n sessions, OpenConcurrency at a time, and reports how
// fast.
func (r *runner) openAll(ctx context.Context, tgt, proto string, n int, errs *errorLog) ([]*mcp.ClientSession, OpenStats) {
	sessions := make([]*mcp.ClientSession, n)
	workers := r.cfg.openConcurrency()
	hists := make([]Histogram, workers)
	var next atomic.Int64
	roots := make([]*x509.CertPool, n)
	for i := range roots {
		roots[i] = r.ep.quicRoots(i)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				octx, cancel := context.WithTimeout(ctx, openTimeout)
				t0 := time.Now()
				s, err := r.ep.connect(octx, tgt, proto, roots[i])
				cancel()
				if err != nil {
					errs.add(fmt.Errorf("open session: %w", err))
					continue
				}
				hists[w].Record(time.Since(t0))
				sessions[i] = s
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var h Histogram
	for i := range hists {
		h.Merge(&hists[i])
	}
	open := slices.DeleteFunc(sessions, func(s *mcp.ClientSession) bool { return s == nil })
	st := OpenStats{Sessions: len(open), Errors: errs.n.Load(), P50Micros: micros(h.Quantile(0.5))}
	if elapsed > 0 {
		st.PerSec = float64(len(open)) / elapsed.Seconds()
	}
	return open, st
}

func closeAll(sessions []*mcp.ClientSession) {
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Go(func() { s.Close() })
	}
	wg.Wait()
}

// call sends one echo and checks the answer. The params are new each
// time: the go-sdk writes the protocol's _meta into them.
func (r *runner) call(ctx context.Context, s *mcp.ClientSession) error {
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": r.cfg.Payload}})
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New("echo answered isError")
	}
	if len(res.Content) != 1 {
		return fmt.Errorf("echo answered %d content items, want 1", len(res.Content))
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); !ok || tc.Text != r.cfg.Payload {
		return errors.New("echo answered other text than it was sent")
	}
	return nil
}

// load drives one target for the configured duration.
func (r *runner) load(ctx context.Context, tgt, proto string) Result {
	res := Result{Target: tgt, Protocol: proto}
	var openErrs, callErrs errorLog
	sessions, open := r.openAll(ctx, tgt, proto, r.cfg.Sessions, &openErrs)
	defer closeAll(sessions)
	res.Open = open
	for _, s := range sessions { // warm up connections and caches; not counted
		if err := r.call(ctx, s); err != nil {
			callErrs.add(fmt.Errorf("warm-up call: %w", err))
		}
	}
	if len(sessions) == 0 {
		res.Errors, res.ErrorSample = callErrs.n.Load(), append(openErrs.sample(), callErrs.sample()...)
		return res
	}
	// A call still unanswered this long after the run ends counts as failed.
	runCtx, cancel := context.WithTimeout(ctx, r.cfg.Duration+30*time.Second)
	defer cancel()
	workers := r.cfg.Concurrency
	hists := make([]Histogram, workers)
	var calls atomic.Uint64
	before := r.sample()
	start := time.Now()
	deadline := start.Add(r.cfg.Duration)
	var p *pacer
	if r.cfg.Rate > 0 {
		p = newPacer(start, r.cfg.Duration, r.cfg.Rate)
	}
	stopProgress := r.progress(tgt, proto, start, &calls, &callErrs)
	var wg sync.WaitGroup
	if secs := int(r.cfg.Duration.Seconds()) - 2; r.cfg.ProfileDir != "" && tgt != TargetDirect && secs >= 1 {
		// The middle of the run, clear of its first and last second.
		wg.Go(func() {
			t := time.NewTimer(time.Second)
			defer t.Stop()
			select {
			case <-t.C:
				r.profile(runCtx, "cpu", tgt, proto, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs))
			case <-runCtx.Done():
			}
		})
	}
	for w := range workers {
		s := sessions[w%len(sessions)]
		h := &hists[w]
		wg.Go(func() {
			for runCtx.Err() == nil {
				var t0 time.Time
				if p != nil {
					due, ok := p.claim()
					if !ok {
						return
					}
					if wait := time.Until(due); wait > 0 {
						t := time.NewTimer(wait)
						select {
						case <-t.C:
						case <-runCtx.Done():
							t.Stop()
							return
						}
					}
					t0 = due
				} else {
					t0 = time.Now()
					if !t0.Before(deadline) {
						return
					}
				}
				if err := r.call(runCtx, s); err != nil {
					callErrs.add(err)
					continue
				}
				h.Record(time.Since(t0))
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	after := r.sample()
	stopProgress()
	for i := range hists {
		res.hist.Merge(&hists[i])
	}
	res.Calls = res.hist.Count()
	res.Errors = callErrs.n.Load()
	res.ErrorSample = append(openErrs.sample(), callErrs.sample()...)
	res.ElapsedSec = elapsed.Seconds()
	res.CallsPerSec = float64(res.Calls) / elapsed.Seconds()
	h := &res.hist
	res.Latency = Latency{P50: micros(h.Quantile(0.5)), P90: micros(h.Quantile(0.9)), P99: micros(h.Quantile(0.99)), Max: micros(h.Max()), Mean: micros(h.Mean())}
	perCall := func(b, a *ProcSample) *float64 {
		if b == nil || a == nil || res.Calls == 0 {
			return nil
		}
		v := micros(a.CPU-b.CPU) / float64(res.Calls)
		return &v
	}
	res.CPUPerCall = CPUPerCall{Gateway: perCall(before.gateway, after.gateway), Upstream: perCall(before.upstream, after.upstream), Loadgen: perCall(before.self, after.self)}
	return res
}

// idle opens IdleSessions sessions and measures what they cost at rest.
func (r *runner) idle(ctx context.Context, tgt, proto string) Result {
	res := Result{Target: tgt, Protocol: proto}
	a := r.admin()
	goroutines := func() int {
		if a == nil || tgt == TargetDirect {
			return -1
		}
		return a.goroutines(ctx)
	}
	r.settle(ctx)
	before, g0 := r.sample(), goroutines()
	var errs errorLog
	stop := r.progressOpen(tgt, proto)
	sessions, open := r.openAll(ctx, tgt, proto, r.cfg.IdleSessions, &errs)
	stop()
	defer closeAll(sessions)
	res.Open = open
	r.settle(ctx)
	after, g1 := r.sample(), goroutines()
	r.profile(ctx, "heap", tgt, proto, "/debug/pprof/heap?gc=1")
	r.profile(ctx, "goroutine", tgt, proto, "/debug/pprof/goroutine")
	res.ErrorSample = errs.sample()
	st := &IdleStats{Sessions: len(sessions)}
	per := func(b, a *ProcSample) *float64 {
		if b == nil || a == nil || len(sessions) == 0 {
			return nil
		}
		v := float64(a.RSS-b.RSS) / float64(len(sessions))
		return &v
	}
	if tgt != TargetDirect {
		st.GatewayRSSPerSession = per(before.gateway, after.gateway)
	}
	st.UpstreamRSSPerSession = per(before.upstream, after.upstream)
	if g0 >= 0 && g1 >= 0 && len(sessions) > 0 {
		v := float64(g1-g0) / float64(len(sessions))
		st.GatewayGoroutinesPerSession = &v
	}
	res.Idle = st
	return res
}

// profile saves a profile of the gateway the bench started into
// ProfileDir, as <kind>-<target>-<protocol>.pb.gz; the first failure is
// what Run returns.
func (r *runner) profile(ctx context.Context, kind, tgt, proto, path string) {
	if r.cfg.ProfileDir == "" || r.gateway == nil || tgt == TargetDirect {
		return
	}
	err := func() error {
		a := r.admin()
		a.http.Timeout = 0 // a CPU profile takes as long as it asks for
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := a.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("gateway answered HTTP %d", resp.StatusCode)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
		if err != nil {
			return err
		}
		name := filepath.Join(r.cfg.ProfileDir, fmt.Sprintf("%s-%s-%s.pb.gz", kind, tgt, proto))
		return os.WriteFile(name, data, 0o600)
	}()
	if err != nil {
		r.profMu.Lock()
		if r.profErr == nil {
			r.profErr = fmt.Errorf("take a %s profile of the gateway (%s, %s): %w; check --profile-dir is writable", kind, tgt, proto, err)
		}
		r.profMu.Unlock()
	}
}

// settle waits, up to 5 s, until the measured processes' RSS stops moving
// (less than 1 % in 250 ms), so a reading is not of a heap mid-growth.
func (r *runner) settle(ctx context.Context) {
	deadline := time.Now().Add(5 * time.Second)
	prev := r.sample()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		cur := r.sample()
		if still(prev.gateway, cur.gateway) && still(prev.upstream, cur.upstream) {
			return
		}
		prev = cur
	}
}

func still(a, b *ProcSample) bool {
	if a == nil || b == nil {
		return true
	}
	d := a.RSS - b.RSS
	return d < 0 && -d*100 < a.RSS || d >= 0 && d*100 < a.RSS
}

// progress prints a status line twice a second until the returned func is
// called.
func (r *runner) progress(tgt, proto string, start time.Time, calls *atomic.Uint64, errs *errorLog) func() {
	return r.statusLine(func() string {
		el := time.Since(start)
		return fmt.Sprintf("%-6s %s  %4.1fs/%v  %d calls (%.0f/s)  %d errors", tgt, proto, el.Seconds(), r.cfg.Duration, calls.Load(), float64(calls.Load())/el.Seconds(), errs.n.Load())
	})
}

// statusLine rewrites line() on the terminal twice a second until the
// returned func is called, which clears it.
func (r *runner) statusLine(line func() string) func() {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(r.cfg.Progress, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprint(r.cfg.Progress, "\r\033[K"+line())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// progressOpen shows which target is opening its idle sessions.
func (r *runner) progressOpen(tgt, proto string) func() {
	if r.cfg.Progress == nil {
		return func() {}
	}
	fmt.Fprintf(r.cfg.Progress, "\r\033[K%-6s %s  opening %d idle sessions…", tgt, proto, r.cfg.IdleSessions)
	return func() { fmt.Fprint(r.cfg.Progress, "\r\033[K") }
}
