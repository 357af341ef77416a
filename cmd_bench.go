package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mcpgw/mcpgw/bench"
)

func benchCommand() *cli.Command {
	def := bench.DefaultConfig()
	return &cli.Command{
		Name:  "bench",
		Usage: "measure calls/s, latency, CPU per call and memory per session, directly and through the gateway",
		Description: `Without addresses, starts an echo upstream and a gateway as child processes
(a temporary data dir, loopback ports), creates routes and a service token, and
drives tools/call over each target: direct (streamable HTTP to the upstream) and
through the gateway over ws, quic, unix and http.

Examples:
   mcpgw bench                                   # 8 sessions, 8 workers, 10s per target, every target
   mcpgw bench --protocol 2025-11-25,2026-07-28 --json
   mcpgw bench --rate 2000 --targets direct,ws   # latency at a given load
   mcpgw bench --idle-sessions 2000 --targets ws,quic
   mcpgw bench --smoke                           # CI: fails on any error, never on speed
   mcpgw bench --targets direct,ws --duration 6s
   mcpgw bench --targets direct,ws --duration 6s --routes 1000 --credentials 10000 --rules 1000
                                                 # run both: gateway µs/call and +p50 at scale vs without
   mcpgw bench --upstream http://127.0.0.1:9100 --target http://127.0.0.1:9200/mcp --target-pid 4242
                                                 # another proxy fronting a running bench-upstream`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "targets", Value: cli.NewStringSlice(def.Targets...), Usage: "what to measure: direct, ws, quic, unix, http"},
			&cli.StringSliceFlag{Name: "protocol", Value: cli.NewStringSlice(def.Protocols...), Usage: "protocol versions to pin, each over every target: 2025-11-25, 2026-07-28"},
			&cli.IntFlag{Name: "sessions", Value: def.Sessions, Usage: "sessions per target"},
			&cli.IntFlag{Name: "concurrency", Value: def.Concurrency, Usage: "workers in total, each with one call in flight, spread round-robin over the sessions"},
			&cli.DurationFlag{Name: "duration", Value: def.Duration, Usage: "how long each target is driven"},
			&cli.Float64Flag{Name: "rate", Usage: "calls per second in total at fixed times (latency at a given load); 0: as fast as answers come"},
			&cli.IntFlag{Name: "idle-sessions", Usage: "instead of load, open this many idle sessions per target and report the memory each costs"},
			&cli.IntFlag{Name: "open-concurrency", Usage: "sessions opened at once; open p50 (and +open p50, the gateway's share beside direct's initialize) is of one open only when 1 (default: 1 for load runs, 16 for --idle-sessions)"},
			&cli.IntFlag{Name: "routes", Usage: "before measuring, add this many extra routes (bench-extra-<i>, never called) to the gateway; to see the cost of scale, run once with and once without --routes, --credentials and --rules and compare gateway µs/call and +p50"},
			&cli.IntFlag{Name: "credentials", Usage: "before measuring, store this many credentials for org bench, accounts acct-<i>, over the bench's and the extra routes (the bench's own account gets none); compare with a run without"},
			&cli.IntFlag{Name: "rules", Usage: "before measuring, add this many policy rules for route *: one allowing echo to org bench, the rest for tools other_<i>_* the bench never calls, so every call is checked against all; compare with a run without"},
			&cli.BoolFlag{Name: "smoke", Usage: "a short run over every target and both protocols (1 session, 2 workers, 1s); fails on any error"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.StringFlag{Name: "profile-dir", Usage: "save Go profiles of the gateway the bench starts into this directory: CPU of each load run (cpu-<target>-<protocol>.pb.gz), heap and goroutines of each idle run (heap-…, goroutine-…); created if missing"},
			&cli.StringFlag{Name: "upstream", Usage: "base URL of a running mcpgw bench-upstream, or the URL of another MCP server with an echo tool (default: start one)"},
			&cli.IntFlag{Name: "upstream-pid", Usage: "process id of --upstream, to measure its CPU and memory"},
			&cli.StringFlag{Name: "target", Usage: "streamable HTTP URL of another MCP proxy fronting --upstream, measured as target \"target\" against direct, its CPU from --target-pid (use --targets direct,target)"},
			&cli.IntFlag{Name: "target-pid", Usage: "process id of the proxy at --target, to measure its CPU and memory"},
			&cli.StringFlag{Name: "gateway-admin", Usage: "admin API URL of a running gateway to measure (default: start one); the bench adds routes bench and bench-stateless to it, and leaves there what --routes, --credentials and --rules add (rules for route * then govern all its routes: use a gateway kept for benchmarks)"},
			&cli.StringFlag{Name: "admin-token", EnvVars: []string{"MCPGW_ADMIN_TOKEN"}, Usage: "admin token of --gateway-admin"},
			&cli.StringFlag{Name: "gateway-http", Usage: "host:port of the running gateway's WebSocket and streamable HTTP listener"},
			&cli.StringFlag{Name: "gateway-quic", Usage: "host:port of the running gateway's QUIC listener"},
			&cli.StringFlag{Name: "gateway-unix", Usage: "path of the running gateway's Unix socket"},
			&cli.StringFlag{Name: "ca-file", Usage: "CA certificate (PEM) behind the running gateway's QUIC certificate"},
			&cli.IntFlag{Name: "gateway-pid", Usage: "process id of the running gateway, to measure its CPU and memory"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"MCPGW_TOKEN"}, Usage: "service token for the running gateway, for org bench (default: issue one through --gateway-admin)"},
		},
		Action: runBench,
	}
}

func runBench(c *cli.Context) error {
	cfg := bench.DefaultConfig()
	if c.Bool("smoke") {
		cfg = bench.SmokeConfig()
	}
	for _, name := range []string{"sessions", "concurrency", "duration", "targets", "protocol"} {
		if !c.Bool("smoke") || c.IsSet(name) {
			switch name {
			case "sessions":
				cfg.Sessions = c.Int(name)
			case "concurrency":
				cfg.Concurrency = c.Int(name)
			case "duration":
				cfg.Duration = c.Duration(name)
			case "targets":
				cfg.Targets = splitList(c.StringSlice(name))
			case "protocol":
				cfg.Protocols = splitList(c.StringSlice(name))
			}
		}
	}
	cfg.Rate = c.Float64("rate")
	cfg.IdleSessions = c.Int("idle-sessions")
	cfg.OpenConcurrency = c.Int("open-concurrency")
	cfg.Routes, cfg.Credentials, cfg.Rules = c.Int("routes"), c.Int("credentials"), c.Int("rules")
	cfg.ProfileDir = c.String("profile-dir")
	cfg.Upstream = c.String("upstream")
	cfg.UpstreamPID = c.Int("upstream-pid")
	cfg.Target, cfg.TargetPID = c.String("target"), c.Int("target-pid")
	if cfg.Target != "" && !c.IsSet("targets") {
		cfg.Targets = []string{bench.TargetDirect, bench.TargetOther}
	}
	if c.String("gateway-admin") != "" || c.String("gateway-http") != "" || c.String("gateway-quic") != "" || c.String("gateway-unix") != "" {
		cfg.Gateway = &bench.GatewayAddrs{
			HTTP: c.String("gateway-http"), QUIC: c.String("gateway-quic"), Unix: c.String("gateway-unix"),
			Admin: c.String("gateway-admin"), AdminToken: c.String("admin-token"), CAFile: c.String("ca-file"),
		}
		if cfg.Gateway.Admin == "" && c.String("token") == "" {
			return cli.Exit("a running gateway needs --gateway-admin (and --admin-token) to set up a route and token, or --token with routes bench and bench-stateless already there", 2)
		}
		if cfg.Upstream == "" {
			return cli.Exit("a running gateway needs --upstream: the URL the gateway reaches the echo upstream at (start one with `mcpgw bench-upstream`)", 2)
		}
	}
	cfg.GatewayPID = c.Int("gateway-pid")
	if cfg.Gateway != nil { // a gateway the bench starts gets a token of its own
		cfg.Token = c.String("token")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the mcpgw binary to start the upstream and gateway with: %w", err)
	}
	cfg.Exe = exe
	if term.IsTerminal(int(os.Stderr.Fd())) {
		cfg.Progress = os.Stderr
	}
	ctx, stop := signal.NotifyContext(background(c), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		err = rep.WriteJSON(c.App.Writer)
	} else {
		err = rep.WriteText(c.App.Writer)
	}
	if err != nil {
		return err
	}
	if n := rep.Errors(); n > 0 && c.Bool("smoke") {
		return fmt.Errorf("smoke run: %d calls or session opens failed (see the errors above)", n)
	}
	return nil
}
