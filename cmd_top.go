package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mcpgw/mcpgw/gateway"
)

func topCommand() *cli.Command {
	return &cli.Command{
		Name:  "top",
		Usage: "live view of one or more nodes from their /metrics: calls/s, errors, p50/p99 per route, sessions, rate-limit refusals, cluster health",
		Description: `Reads every --admin node's /metrics each --interval and shows the cluster's
traffic and health. Rates are over the last interval; p50 and p99 are over
the calls of the last interval, or since the node started when the interval
had none. --once prints one frame (two scrapes an interval apart) as plain
text and exits, for scripts. Without a terminal on stdout frames are
printed one after another, with no escape codes.`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "admin", Value: cli.NewStringSlice("http://127.0.0.1:7422"), EnvVars: []string{envAdmin},
				Usage: "admin API URL of a node; repeat it (or comma-separate) to show every node of the cluster"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "time between refreshes"},
			&cli.BoolFlag{Name: "once", Usage: "print one frame and exit"},
			dataDirFlag(),
			caFileFlag(),
		},
		Action: runTop,
	}
}

func runTop(c *cli.Context) error {
	addrs := splitList(c.StringSlice("admin"))
	if len(addrs) == 0 {
		return cli.Exit("no --admin given: name the admin API of each node, e.g. --admin 10.0.0.1:7422,10.0.0.2:7422", 2)
	}
	interval := c.Duration("interval")
	if interval <= 0 {
		return cli.Exit(fmt.Sprintf("--interval %v: use a positive duration, e.g. 1s", interval), 2)
	}
	roots, err := cliRoots(c)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: max(interval, 2*time.Second),
		Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	for i, a := range addrs {
		if !strings.Contains(a, "://") {
			addrs[i] = "http://" + a
		}
		addrs[i] = strings.TrimSuffix(addrs[i], "/")
	}
	out := c.App.Writer
	tty := false
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	ctx := c.Context
	prev := scrapeNodes(ctx, hc, addrs)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur := scrapeNodes(ctx, hc, addrs)
		var b strings.Builder
		if tty && !c.Bool("once") {
			b.WriteString("\x1b[H\x1b[2J") // home, clear
		}
		renderTop(&b, prev, cur, time.Now())
		if !tty && !c.Bool("once") {
			b.WriteString("\n")
		}
		if _, err := io.WriteString(out, b.String()); err != nil {
			return err
		}
		if c.Bool("once") {
			return nil
		}
		prev = cur
	}
}

// nodeScrape is one node's /metrics at one moment.
type nodeScrape struct {
	addr string
	at   time.Time
	mfs  map[string]*dto.MetricFamily
	err  error
}

// scrapeNodes reads every node's /metrics at once.
func scrapeNodes(ctx context.Context, hc *http.Client, addrs []string) []nodeScrape {
	out := make([]nodeScrape, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = scrapeNode(ctx, hc, a)
		}()
	}
	wg.Wait()
	return out
}

func scrapeNode(ctx context.Context, hc *http.Client, addr string) nodeScrape {
	s := nodeScrape{addr: addr, at: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/metrics", nil)
	if err != nil {
		s.err = err
		return s
	}
	resp, err := hc.Do(req)
	if err != nil {
		s.err = err
		return s
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.err = fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
		return s
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	s.mfs, s.err = p.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
	return s
}

// series calls fn for each series of the family name with its labels.
func (s nodeScrape) series(name string, fn func(labels map[string]string, m *dto.Metric)) {
	mf := s.mfs[name]
	if mf == nil {
		return
	}
	for _, m := range mf.GetMetric() {
		labels := make(map[string]string, len(m.GetLabel()))
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		fn(labels, m)
	}
}

// value is a counter's or gauge's value.
func value(m *dto.Metric) float64 { return m.GetCounter().GetValue() + m.GetGauge().GetValue() }

// sumBy adds up the family name's values per value of label across nodes.
func sumBy(nodes []nodeScrape, name, label string, where func(map[string]string) bool) map[string]float64 {
	out := map[string]float64{}
	for _, n := range nodes {
		n.series(name, func(l map[string]string, m *dto.Metric) {
			if where == nil || where(l) {
				out[l[label]] += value(m)
			}
		})
	}
	return out
}

// hist is a cumulative histogram: upper bounds and counts.
type hist struct {
	bounds []float64
	counts []float64
	total  float64
}

// histBy merges the histogram family name per value of label across nodes.
func histBy(nodes []nodeScrape, name, label string) map[string]*hist {
	out := map[string]*hist{}
	for _, n := range nodes {
		n.series(name, func(l map[string]string, m *dto.Metric) {
			h := m.GetHistogram()
			if h == nil {
				return
			}
			acc := out[l[label]]
			if acc == nil {
				acc = &hist{}
				for _, b := range h.GetBucket() {
					acc.bounds = append(acc.bounds, b.GetUpperBound())
				}
				acc.counts = make([]float64, len(acc.bounds))
				out[l[label]] = acc
			}
			for i, b := range h.GetBucket() {
				if i < len(acc.counts) && b.GetUpperBound() == acc.bounds[i] {
					acc.counts[i] += float64(b.GetCumulativeCount())
				}
			}
			acc.total += float64(h.GetSampleCount())
		})
	}
	return out
}

// minus returns h less an earlier h0 of the same series: the observations
// between the two.
func (h *hist) minus(h0 *hist) *hist {
	if h0 == nil || !slices.Equal(h.bounds, h0.bounds) {
		return h
	}
	d := &hist{bounds: h.bounds, counts: make([]float64, len(h.counts)), total: h.total - h0.total}
	for i := range h.counts {
		d.counts[i] = h.counts[i] - h0.counts[i]
	}
	return d
}

// quantile estimates the q-quantile as Prometheus' histogram_quantile
// does: linear within the bucket it falls in. NaN when h is empty.
func (h *hist) quantile(q float64) float64 {
	if h == nil || h.total <= 0 || len(h.bounds) == 0 {
		return math.NaN()
	}
	rank := q * h.total
	lower, below := 0.0, 0.0
	for i, ub := range h.bounds {
		if h.counts[i] >= rank {
			if math.IsInf(ub, 1) {
				return lower
			}
			in := h.counts[i] - below
			if in <= 0 {
				return ub
			}
			return lower + (ub-lower)*(rank-below)/in
		}
		lower, below = ub, h.counts[i]
	}
	return lower // above the last finite bucket
}

// window is the latency histogram of the last interval, or of everything
// since start when the interval had no observations.
func window(cur, prev map[string]*hist, key string) *hist {
	h := cur[key]
	if h == nil {
		return nil
	}
	if d := h.minus(prev[key]); d.total > 0 {
		return d
	}
	return h
}

// renderTop writes one frame from two scrapes of the same nodes.
func renderTop(w io.Writer, prev, cur []nodeScrape, now time.Time) {
	secs := 0.0
	for i := range cur {
		if cur[i].err == nil && prev[i].err == nil {
			secs = max(secs, cur[i].at.Sub(prev[i].at).Seconds())
		}
	}
	ok := func(ns []nodeScrape) []nodeScrape {
		var out []nodeScrape
		for i, n := range ns {
			if n.err == nil && cur[i].err == nil && prev[i].err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	okCur, okPrev := ok(cur), ok(prev)
	rate := func(now, before float64) string {
		if secs <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", max(0, now-before)/secs)
	}
	reachable := 0
	for _, n := range cur {
		if n.err == nil {
			reachable++
		}
	}
	fmt.Fprintf(w, "mcpgw top  %s  %d/%d nodes answering\n\n", now.UTC().Format(time.RFC3339), reachable, len(cur))

	// Cluster health.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tTERM\tREADY\tLAST CONTACT\tSESSIONS")
	var leaders []string
	for _, n := range cur {
		if n.err != nil {
			fmt.Fprintf(tw, "%s\tunreachable: %v\t\t\t\t\n", n.addr, n.err)
			continue
		}
		state, term, ready, contact, sessions := "?", 0.0, "?", math.NaN(), 0.0
		n.series("mcpgw_raft_state", func(l map[string]string, m *dto.Metric) {
			if value(m) == 1 {
				state = l["state"]
			}
		})
		n.series("mcpgw_raft_term", func(_ map[string]string, m *dto.Metric) { term = value(m) })
		n.series("mcpgw_node_ready", func(_ map[string]string, m *dto.Metric) {
			ready = map[bool]string{true: "yes", false: "no"}[value(m) == 1]
		})
		n.series("mcpgw_raft_last_contact_seconds", func(_ map[string]string, m *dto.Metric) {
			if v := value(m); math.IsNaN(contact) || v > contact {
				contact = v
			}
		})
		n.series("mcpgw_proxy_sessions_active", func(_ map[string]string, m *dto.Metric) { sessions += value(m) })
		if state == "Leader" {
			leaders = append(leaders, n.addr)
		}
		lc := "-"
		switch {
		case math.IsInf(contact, 1):
			lc = "never"
		case !math.IsNaN(contact):
			lc = fmt.Sprintf("%.2fs", contact)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%.0f\n", n.addr, state, term, ready, lc, sessions)
	}
	tw.Flush()
	switch len(leaders) {
	case 0:
		fmt.Fprintln(w, "leader: none among these nodes")
	case 1:
		fmt.Fprintf(w, "leader: %s\n", leaders[0])
	default:
		fmt.Fprintf(w, "leader: several claim it (%s): a partition is healing\n", strings.Join(leaders, ", "))
	}

	// Routes.
	const calls = "mcpgw_proxy_tool_calls_total"
	total := sumBy(okCur, calls, "route", nil)
	totalAll := sumBy(cur, calls, "route", nil)
	before := sumBy(okPrev, calls, "route", nil)
	failed := func(l map[string]string) bool { return l["outcome"] == "error" || l["outcome"] == "tool_error" }
	errNow, errBefore := sumBy(okCur, calls, "route", failed), sumBy(okPrev, calls, "route", failed)
	errAll := sumBy(cur, calls, "route", failed)
	refusedAll := sumBy(cur, calls, "route", func(l map[string]string) bool { return l["outcome"] == "refused" })
	callH, callH0 := histBy(okCur, "mcpgw_proxy_tool_call_duration_seconds", "route"), histBy(okPrev, "mcpgw_proxy_tool_call_duration_seconds", "route")
	gwH, gwH0 := histBy(okCur, "mcpgw_proxy_gateway_duration_seconds", "route"), histBy(okPrev, "mcpgw_proxy_gateway_duration_seconds", "route")
	upH, upH0 := histBy(okCur, "mcpgw_proxy_upstream_duration_seconds", "route"), histBy(okPrev, "mcpgw_proxy_upstream_duration_seconds", "route")
	routes := sortedKeys(totalAll)
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tCALLS\tCALLS/S\tERRORS\tERR/S\tREFUSED\tP50\tP99\tGW P50\tGW P99\tUP P99")
	for _, r := range routes {
		ch, gh, uh := window(callH, callH0, r), window(gwH, gwH0, r), window(upH, upH0, r)
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.0f\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\n", r, totalAll[r], rate(total[r], before[r]),
			errAll[r], rate(errNow[r], errBefore[r]), refusedAll[r],
			dur(ch.quantile(0.5)), dur(ch.quantile(0.99)), dur(gh.quantile(0.5)), dur(gh.quantile(0.99)), dur(uh.quantile(0.99)))
	}
	if len(routes) == 0 {
		fmt.Fprintln(tw, "(no routes)")
	}
	tw.Flush()

	// Sessions per transport.
	active := sumBy(cur, "mcpgw_proxy_sessions_active", "transport", nil)
	var parts []string
	for _, t := range gateway.Transports {
		parts = append(parts, fmt.Sprintf("%s %.0f", t, active[t]))
	}
	for _, t := range sortedKeys(active) {
		if !slices.Contains(gateway.Transports, t) {
			parts = append(parts, fmt.Sprintf("%s %.0f", t, active[t]))
		}
	}
	fmt.Fprintf(w, "\nsessions: %s\n", strings.Join(parts, "  "))

	// Rate limits.
	const limiter = "mcpgw_limiter_refusals_total"
	limAll, limNow, limBefore := sumBy(cur, limiter, "limit", nil), sumBy(okCur, limiter, "limit", nil), sumBy(okPrev, limiter, "limit", nil)
	if limits := sortedKeys(limAll); len(limits) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "LIMIT\tREFUSED\tREFUSED/S")
		for _, l := range limits {
			fmt.Fprintf(tw, "%s\t%.0f\t%s\n", l, limAll[l], rate(limNow[l], limBefore[l]))
		}
		tw.Flush()
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// dur prints a latency in seconds for a person; "-" when unknown.
func dur(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}
