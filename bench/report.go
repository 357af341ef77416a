package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as a table for people.
func (r *Report) WriteText(w io.Writer) error {
	switch r.Mode {
	case "idle":
		fmt.Fprintf(w, "mcpgw bench: %d idle sessions per target\n", r.Idle)
	case "rate":
		fmt.Fprintf(w, "mcpgw bench: %.0f calls/s in total over %d sessions and %d workers, %gs per target; latency from each call's due time\n", r.Rate, r.Sessions, r.Concurrency, r.DurationSec)
	default:
		fmt.Fprintf(w, "mcpgw bench: %d sessions, %d workers in total (calls in flight), %gs per target\n", r.Sessions, r.Concurrency, r.DurationSec)
	}
	fmt.Fprintf(w, "gateway holds: %s; sessions opened %d at a time\n", r.Scale.describe(), r.OpenConcurrency)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	if r.Mode == "idle" {
		fmt.Fprintln(tw, "target\tprotocol\tsessions\terrors\topen/s\topen p50\t+open p50\tgateway KiB/session\tupstream KiB/session\tgoroutines/session\t")
		for _, res := range r.Results {
			st := res.Idle
			if st == nil {
				st = &IdleStats{}
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", res.Target, res.Protocol, st.Sessions, res.Open.Errors,
				res.Open.PerSec, ms(res.Open.P50Micros), signedMS(res.Open.AddedP50Micros), opt(st.GatewayRSSPerSession, 1.0/1024, "%.1f"), opt(st.UpstreamRSSPerSession, 1.0/1024, "%.1f"), opt(st.GatewayGoroutinesPerSession, 1, "%.2f"))
		}
	} else {
		fmt.Fprintln(tw, "target\tprotocol\tcalls/s\t×direct\tp50\tp90\tp99\tmax\terrors\t+p50\t+p99\tgateway µs/call\tupstream µs/call\tloadgen µs/call\topen/s\topen p50\t+open p50\t")
		for _, res := range r.Results {
			ratio := "-"
			if res.RatioToDirect > 0 {
				ratio = fmt.Sprintf("%.2f", res.RatioToDirect)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t\n", res.Target, res.Protocol, res.CallsPerSec, ratio,
				ms(res.Latency.P50), ms(res.Latency.P90), ms(res.Latency.P99), ms(res.Latency.Max), res.Errors+res.Open.Errors,
				signedMS(res.AddedP50), signedMS(res.AddedP99),
				opt(res.CPUPerCall.Gateway, 1, "%.0f"), opt(res.CPUPerCall.Upstream, 1, "%.0f"), opt(res.CPUPerCall.Loadgen, 1, "%.0f"),
				res.Open.PerSec, ms(res.Open.P50Micros), signedMS(res.Open.AddedP50Micros))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Mode == "idle" {
		fmt.Fprintln(w, "memory: RSS growth (/proc VmRSS) ÷ sessions, each target on a freshly started gateway when the bench starts it; +open p50: minus direct's (the upstream's initialize)")
	} else {
		fmt.Fprintln(w, "latency in ms; +p50/+p99/+open p50: minus direct's in this run (direct's open is the upstream's initialize); CPU: /proc utime+stime, 10 ms ticks, ÷ calls")
		for _, res := range r.Results {
			if res.Target == TargetDirect && res.CPUPerCall.Gateway != nil && res.ElapsedSec > 0 {
				// What the gateway spends with none of its sessions open:
				// background work, part of every gateway row's µs/call.
				fmt.Fprintf(w, "gateway CPU while direct ran (%s): %.1f ms/s\n", res.Protocol, *res.CPUPerCall.Gateway*float64(res.Calls)/res.ElapsedSec/1e3)
			}
		}
	}
	for _, res := range r.Results {
		for _, e := range res.ErrorSample {
			fmt.Fprintf(w, "error %s %s: %s\n", res.Target, res.Protocol, e)
		}
	}
	return nil
}

func ms(us float64) string { return fmt.Sprintf("%.2f", us/1e3) }

func signedMS(us *float64) string {
	if us == nil {
		return "-"
	}
	return fmt.Sprintf("%+.2f", *us/1e3)
}

func opt(v *float64, scale float64, format string) string {
	if v == nil {
		return "-"
	}
	return strings.TrimSpace(fmt.Sprintf(format, *v*scale))
}
