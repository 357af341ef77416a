package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgw/mcpgw/adminapi"
)

// Scale is how much configuration the measured gateway holds besides what
// the bench's own calls use, and how long creating it took.
type Scale struct {
	// Routes is the number of extra routes, bench-extra-<i>, none of which
	// answers for the bench's target URL.
	Routes int `json:"routes"`
	// Credentials is the number of stored credentials for org bench,
	// accounts acct-<i>, spread over the bench's routes and the extra
	// ones; the account the bench's calls act for has none.
	Credentials int `json:"credentials"`
	// Rules is the number of policy rules, all for route "*": one allows
	// the echo tool to org bench, the others name tools other_<i>_* that
	// the bench never calls, so every call is checked against all of them.
	Rules int `json:"rules"`
	// RoutesSec, CredentialsSec and RulesSec are how long creating each
	// took through the admin API.
	RoutesSec      float64 `json:"routes_setup_s,omitempty"`
	CredentialsSec float64 `json:"credentials_setup_s,omitempty"`
	RulesSec       float64 `json:"rules_setup_s,omitempty"`
}

// empty reports whether the bench adds nothing to the gateway.
func (s Scale) empty() bool { return s.Routes == 0 && s.Credentials == 0 && s.Rules == 0 }

// bulkWorkers is how many admin API writes are in flight at once while
// the bench creates routes, credentials and rules: each is a raft apply,
// and concurrent ones share the leader's log writes.
const bulkWorkers = 16

// Names of what the bench creates to scale the gateway.
const (
	extraRoutePrefix = "bench-extra-"
	scaleAccount     = "acct-"
	allowEchoRule    = "bench-allow-echo"
	otherRulePrefix  = "bench-other-"
)

// createScale creates the extra routes, credentials and rules of
// r.cfg's scale on the gateway behind a. routes are the routes the bench
// created for its own calls (credentials go to them too, for other
// accounts), and upstream is one of their URLs: extra routes live on its
// host under paths it never serves.
func (r *runner) createScale(ctx context.Context, a *admin, routes []string, upstream string) (Scale, error) {
	sc := Scale{Routes: r.cfg.Routes, Credentials: r.cfg.Credentials, Rules: r.cfg.Rules}
	if sc.empty() {
		return sc, nil
	}
	u, err := url.Parse(upstream)
	if err != nil {
		return sc, fmt.Errorf("upstream URL %q: %w", upstream, err)
	}
	routes = append([]string(nil), routes...)
	for i := range sc.Routes {
		routes = append(routes, fmt.Sprintf("%s%d", extraRoutePrefix, i))
	}
	took, err := r.bulk(ctx, "extra routes", sc.Routes, 0, func(ctx context.Context, i int) error {
		extra := url.URL{Scheme: u.Scheme, Host: u.Host, Path: fmt.Sprintf("/%s%d/mcp", extraRoutePrefix, i)}
		return a.do(ctx, http.MethodPost, "/v1/routes", adminapi.Route{Name: fmt.Sprintf("%s%d", extraRoutePrefix, i), URL: extra.String(), Transport: "streamable", Kind: "internal"}, nil)
	})
	if err != nil {
		return sc, err
	}
	sc.RoutesSec = took.Seconds()
	took, err = r.bulk(ctx, "credentials", sc.Credentials, 0, func(ctx context.Context, i int) error {
		return a.do(ctx, http.MethodPut, "/v1/credentials", adminapi.PutCredentialRequest{
			Org: benchOrg, Account: fmt.Sprintf("%s%d", scaleAccount, i), Route: routes[i%len(routes)],
			Kind: "bearer", Secret: fmt.Sprintf("bench-token-%d", i),
		}, nil)
	})
	if err != nil {
		return sc, err
	}
	sc.CredentialsSec = took.Seconds()
	// The allow rule comes first: once a rule names route "*", what no
	// rule allows is denied on every route, the bench's included.
	took, err = r.bulk(ctx, "rules", sc.Rules, 1, func(ctx context.Context, i int) error {
		rule := adminapi.Rule{ID: allowEchoRule, Service: "*", Org: benchOrg, Account: "*", Route: "*", Tool: "echo", Effect: "allow"}
		if i > 0 {
			effect := "deny"
			if i%2 == 0 {
				effect = "allow"
			}
			rule = adminapi.Rule{ID: fmt.Sprintf("%s%d", otherRulePrefix, i), Service: "*", Org: "*", Account: "*", Route: "*", Tool: fmt.Sprintf("other_%d_*", i), Effect: effect}
		}
		return a.do(ctx, http.MethodPost, "/v1/rules", rule, nil)
	})
	if err != nil {
		return sc, err
	}
	sc.RulesSec = took.Seconds()
	return sc, nil
}

// bulk runs put(i) for every i below n, bulkWorkers at a time, showing
// progress on r.cfg.Progress, and returns how long it took or the first
// failure. The first `serial` items are put, one by one, before the
// others start: writes that must land before the rest.
func (r *runner) bulk(ctx context.Context, what string, n, serial int, put func(ctx context.Context, i int) error) (time.Duration, error) {
	if n == 0 {
		return 0, nil
	}
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done atomic.Int64
	stop := r.progressBulk(what, n, start, &done)
	defer stop()
	run := func(from, to, workers int) {
		var next atomic.Int64
		next.Store(int64(from))
		var wg sync.WaitGroup
		for range min(workers, to-from) {
			wg.Go(func() {
				for ctx.Err() == nil {
					i := int(next.Add(1) - 1)
					if i >= to {
						return
					}
					if err := put(ctx, i); err != nil {
						cancel(fmt.Errorf("create %s: item %d of %d: %w", what, i+1, n, err))
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
	}
	head := min(serial, n)
	run(0, head, 1)
	run(head, n, bulkWorkers)
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// progressBulk prints how far a bulk creation is, twice a second, until
// the returned func is called.
func (r *runner) progressBulk(what string, n int, start time.Time, done *atomic.Int64) func() {
	return r.statusLine(func() string {
		d := done.Load()
		return fmt.Sprintf("creating %s  %d/%d  (%.0f/s)", what, d, n, float64(d)/time.Since(start).Seconds())
	})
}

// describe is the scale as a report line.
func (s Scale) describe() string {
	b := fmt.Sprintf("%d extra routes, %d credentials, %d rules", s.Routes, s.Credentials, s.Rules)
	var took []string
	for _, t := range []struct {
		n    int
		what string
		sec  float64
	}{{s.Routes, "routes", s.RoutesSec}, {s.Credentials, "credentials", s.CredentialsSec}, {s.Rules, "rules", s.RulesSec}} {
		if t.n > 0 {
			took = append(took, fmt.Sprintf("%s %.2fs (%.0f/s)", t.what, t.sec, float64(t.n)/max(t.sec, 1e-9)))
		}
	}
	if len(took) > 0 {
		b += "; created in " + strings.Join(took, ", ")
	}
	return b
}
