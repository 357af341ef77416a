package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
)

func waitCommand() *cli.Command {
	return &cli.Command{
		Name:  "wait",
		Usage: "wait until every node at --admin is up (with --ready: ready to serve), for scripts",
		Description: `Polls each node's /healthz (with --ready: /readyz, or /healthz on nodes without it)
until it answers 200 or --timeout passes. Exits 0 when all are up, 1 when one is not.

Examples:
   mcpgw serve & mcpgw wait --ready && mcpgw route add echo http://127.0.0.1:9000/mcp
   mcpgw wait --ready --admin 127.0.0.1:7422,127.0.0.1:7432 --timeout 1m`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "admin", Value: cli.NewStringSlice("http://127.0.0.1:7422"), EnvVars: []string{envAdmin},
				Usage: "admin API URL of a node; repeat it (or comma-separate) to wait for several"},
			&cli.BoolFlag{Name: "ready", Usage: "wait until the node is ready to serve (/readyz), not only listening"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after this long"},
			dataDirFlag(),
			caFileFlag(),
		},
		Action: runWait,
	}
}

func runWait(c *cli.Context) error {
	addrs := splitList(c.StringSlice("admin"))
	if len(addrs) == 0 {
		return usagef("mcpgw wait: no --admin given: name the admin API of each node")
	}
	roots, err := cliRoots(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(background(c), c.Duration("timeout"))
	defer cancel()
	for _, addr := range addrs {
		a := adminapi.NewClient(addr, "", &adminapi.ClientOptions{Roots: roots, Timeout: 5 * time.Second})
		if err := waitUp(ctx, c, a, c.Bool("ready")); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%s is up\n", a.Base())
	}
	return nil
}

// waitUp polls a's health (and readiness, if ready) until it answers 200.
func waitUp(ctx context.Context, c *cli.Context, a *adminapi.Client, ready bool) error {
	path := "/healthz"
	if ready {
		path = "/readyz"
	}
	noted := false
	pause := 50 * time.Millisecond
	for {
		err := a.Do(ctx, http.MethodGet, path, nil, nil)
		var se *adminapi.StatusError
		if path == "/readyz" && errors.As(err, &se) && se.Status == http.StatusNotFound {
			path = "/healthz" // a node without /readyz: listening is all it reports
			continue
		}
		if err == nil {
			return nil
		}
		if !noted {
			fmt.Fprintf(c.App.ErrWriter, "mcpgw: waiting for the node at %s to start (up to %s, --timeout)\n", a.Base(), c.Duration("timeout"))
			noted = true
		}
		t := time.NewTimer(pause) // a retry interval: the node gives no signal when it is up
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("the node at %s is not up after %s: %s", a.Base(), c.Duration("timeout"), strings.TrimPrefix(err.Error(), "mcpgw: "))
		case <-t.C:
		}
		pause = min(pause*2, 500*time.Millisecond)
	}
}
