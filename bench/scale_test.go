package bench

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

func TestValidateScaleAndOpenConcurrency(t *testing.T) {
	running := &GatewayAddrs{HTTP: "127.0.0.1:1", Admin: "http://127.0.0.1:2"}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" when valid
	}{
		{"scale on a started gateway", func(c *Config) { c.Routes, c.Credentials, c.Rules = 1000, 10000, 1000 }, ""},
		{"scale on a running gateway with its admin API", func(c *Config) { c.Gateway, c.Upstream, c.Credentials = running, "http://127.0.0.1:3", 5 }, ""},
		{"open one at a time", func(c *Config) { c.OpenConcurrency = 1 }, ""},
		{"negative open concurrency", func(c *Config) { c.OpenConcurrency = -1 },
			"--open-concurrency -1 must not be negative (0: 1 for load runs, 16 for --idle-sessions)"},
		{"negative routes", func(c *Config) { c.Routes = -2 },
			"--routes -2, --credentials 0 and --rules 0 must not be negative"},
		{"negative credentials", func(c *Config) { c.Credentials = -1 },
			"--routes 0, --credentials -1 and --rules 0 must not be negative"},
		{"negative rules", func(c *Config) { c.Rules = -3 },
			"--routes 0, --credentials 0 and --rules -3 must not be negative"},
		{"scale without a gateway target", func(c *Config) { c.Targets, c.Rules = []string{TargetDirect}, 10 },
			"--routes, --credentials and --rules grow the gateway's configuration, but --targets names no gateway target: add ws, quic, unix or http"},
		{"scale on another proxy", func(c *Config) {
			c.Target, c.Upstream, c.Targets, c.Routes = "http://127.0.0.1:4/mcp", "http://127.0.0.1:3", []string{TargetDirect, TargetOther}, 10
		}, "--routes, --credentials and --rules grow mcpgw's configuration: they do not apply to another proxy at --target"},
		{"scale on a running gateway without its admin API", func(c *Config) {
			c.Gateway, c.Upstream, c.Token, c.Routes = &GatewayAddrs{HTTP: "127.0.0.1:1"}, "http://127.0.0.1:3", "tok", 10
		}, "--routes, --credentials and --rules are created through the admin API: pass --gateway-admin (and --admin-token) of the running gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Exe = "mcpgw"
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want %q", tc.want)
			case tc.want != "" && err.Error() != tc.want:
				t.Fatalf("Validate() = %q, want %q", err, tc.want)
			}
		})
	}
}

func TestOpenConcurrencyDefault(t *testing.T) {
	tests := []struct {
		name       string
		idle, open int
		want       int
	}{
		{"load run opens one at a time", 0, 0, 1},
		{"idle run opens 16 at a time", 500, 0, 16},
		{"given for a load run", 0, 4, 4},
		{"given for an idle run", 500, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.IdleSessions, c.OpenConcurrency = tc.idle, tc.open
			if got := c.openConcurrency(); got != tc.want {
				t.Fatalf("openConcurrency()=%d, want %d", got, tc.want)
			}
		})
	}
}

// TestBulk checks that bulk puts every item once, the serial ones before
// any other starts, and stops at the first failure, naming the item.
func TestBulk(t *testing.T) {
	r := &runner{}
	var firstDone atomic.Bool
	var early atomic.Int64 // items put before item 0 finished
	seen := make([]atomic.Int32, 200)
	took, err := r.bulk(context.Background(), "rules", len(seen), 1, func(_ context.Context, i int) error {
		if i == 0 {
			firstDone.Store(true)
		} else if !firstDone.Load() {
			early.Add(1)
		}
		seen[i].Add(1)
		return nil
	})
	if err != nil || took <= 0 {
		t.Fatalf("bulk = %v, %v; want a duration and no error", took, err)
	}
	if n := early.Load(); n != 0 {
		t.Fatalf("%d items put before the serial one, want 0", n)
	}
	for i := range seen {
		if got := seen[i].Load(); got != 1 {
			t.Fatalf("item %d put %d times, want once", i, got)
		}
	}

	var calls atomic.Int64
	_, err = r.bulk(context.Background(), "credentials", 10000, 0, func(ctx context.Context, i int) error {
		calls.Add(1)
		if i == 7 {
			return errors.New("admin API PUT /v1/credentials: boom")
		}
		return nil
	})
	if got, want := err.Error(), "create credentials: item 8 of 10000: admin API PUT /v1/credentials: boom"; got != want {
		t.Fatalf("bulk error %q, want %q", got, want)
	}
	if n := calls.Load(); n == 10000 {
		t.Fatalf("bulk went on through all %d items after a failure", n)
	}
}

func TestScaleDescribe(t *testing.T) {
	tests := []struct {
		name string
		s    Scale
		want string
	}{
		{"none", Scale{}, "0 extra routes, 0 credentials, 0 rules"},
		{"some", Scale{Routes: 1000, Credentials: 10000, Rules: 0, RoutesSec: 2, CredentialsSec: 20},
			"1000 extra routes, 10000 credentials, 0 rules; created in routes 2.00s (500/s), credentials 20.00s (500/s)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.describe(); got != tc.want {
				t.Fatalf("describe()=%q, want %q", got, tc.want)
			}
		})
	}
}

// TestWriteTextScale checks that the text report states the scale, how
// sessions opened, +open p50 and the gateway's CPU while direct ran.
func TestWriteTextScale(t *testing.T) {
	gw, direct, added := 30.0, 1000.0, 250.0
	rep := &Report{Mode: "load", Sessions: 8, Concurrency: 8, DurationSec: 6, OpenConcurrency: 1,
		Scale: Scale{Routes: 1000, Credentials: 10000, Rules: 1000, RoutesSec: 1, CredentialsSec: 20, RulesSec: 2},
		Results: []Result{
			{Target: TargetDirect, Protocol: Protocol20251125, Calls: 6000, ElapsedSec: 6, CPUPerCall: CPUPerCall{Gateway: &gw}, Open: OpenStats{Sessions: 8, P50Micros: direct}},
			{Target: TargetWS, Protocol: Protocol20251125, Calls: 6000, ElapsedSec: 6, Open: OpenStats{Sessions: 8, P50Micros: direct + added, AddedP50Micros: &added}},
		}}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"gateway holds: 1000 extra routes, 10000 credentials, 1000 rules; created in routes 1.00s (1000/s), credentials 20.00s (500/s), rules 2.00s (500/s); sessions opened 1 at a time\n",
		"open p50  +open p50",
		"1.25      +0.25",
		"gateway CPU while direct ran (2025-11-25): 30.0 ms/s\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, b.String())
		}
	}
}
