package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
)

// auditAdminFlags are adminFlags for commands that ask every node: --admin
// and --admin-token take several values.
func auditAdminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "admin", Value: cli.NewStringSlice("http://127.0.0.1:7422"), EnvVars: []string{"MCPGW_ADMIN"},
			Usage: "admin API URL of a node; repeat it (or comma-separate) to cover every node of the cluster"},
		&cli.StringSliceFlag{Name: "admin-token", EnvVars: []string{"MCPGW_ADMIN_TOKEN"},
			Usage: "admin token: one for every node, or one per --admin in the same order (default: read from <data-dir>/admin.token)"},
		dataDirFlag(),
		caFileFlag(),
	}
}

// auditClients returns a client for each --admin, with its token.
func auditClients(c *cli.Context, timeout time.Duration) ([]*adminapi.Client, error) {
	addrs, toks := splitList(c.StringSlice("admin")), splitList(c.StringSlice("admin-token"))
	if len(addrs) == 0 {
		return nil, cli.Exit("no --admin given: name the admin API of each node, e.g. --admin 10.0.0.1:7422,10.0.0.2:7422", 2)
	}
	switch len(toks) {
	case 0:
		tok, err := readAdminToken(c.String("data-dir"))
		if err != nil {
			return nil, err
		}
		toks = []string{tok}
	case 1, len(addrs):
	default:
		return nil, cli.Exit(fmt.Sprintf("%d admin tokens for %d nodes: give one token for all, or one per --admin", len(toks), len(addrs)), 2)
	}
	roots, err := cliRoots(c)
	if err != nil {
		return nil, err
	}
	out := make([]*adminapi.Client, len(addrs))
	for i, a := range addrs {
		out[i] = adminapi.NewClient(a, toks[min(i, len(toks)-1)], &adminapi.ClientOptions{Roots: roots, Timeout: timeout})
	}
	return out, nil
}

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "show the audit records of every node, newest first, or verify their hash chains",
		Description: "Each node keeps its own hash-chained audit log: one record per session open and close, per\n" +
			"tools/call and per refused session. Pass every node's admin API with --admin to see them all,\n" +
			"merged by time.",
		Flags: append(auditAdminFlags(),
			&cli.StringFlag{Name: "since", Usage: "only records at or after this: a duration (1h means an hour ago) or an RFC 3339 time"},
			&cli.StringFlag{Name: "until", Usage: "only records at or before this: a duration or an RFC 3339 time"},
			&cli.StringFlag{Name: "service", Usage: "only this service"},
			&cli.StringFlag{Name: "org", Usage: "only this org"},
			&cli.StringFlag{Name: "account", Usage: "only this account"},
			&cli.StringFlag{Name: "route", Usage: "only this route"},
			&cli.StringFlag{Name: "tool", Usage: "only calls of this tool"},
			&cli.StringFlag{Name: "session", Usage: "only this session id"},
			&cli.StringFlag{Name: "kind", Usage: "only session_open, session_close, tool_call, refusal, oauth_consent, oauth_refresh, oauth_step_up or upstream_reestablished"},
			&cli.StringFlag{Name: "outcome", Usage: "only ok, error or refused"},
			&cli.IntFlag{Name: "limit", Value: 100, Usage: "most records to show, across all nodes"},
			&cli.BoolFlag{Name: "oldest-first", Usage: "oldest record first"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array of the records, with every field"},
		),
		Action: runAudit,
		Subcommands: []*cli.Command{{
			Name:   "verify",
			Usage:  "check the hash chain of every node's audit log; exits 3 if one is broken, 1 if a node cannot be asked",
			Flags:  auditAdminFlags(),
			Action: runAuditVerify,
		}, auditExportCommand()},
	}
}

// auditQueryString turns the command's filters into GET /v1/audit's query.
// Relative times are resolved here, so every node is asked about the same
// instants.
func auditQueryString(c *cli.Context, now time.Time) (string, error) {
	q := url.Values{}
	for _, name := range []string{"since", "until"} {
		v := c.String(name)
		if v == "" {
			continue
		}
		if d, err := time.ParseDuration(v); err == nil {
			if d < 0 {
				return "", cli.Exit(fmt.Sprintf("--%s %s: use a positive duration (how long ago)", name, v), 2)
			}
			v = now.Add(-d).UTC().Format(time.RFC3339Nano)
		} else if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			return "", cli.Exit(fmt.Sprintf("--%s %q: use a duration like 1h or an RFC 3339 time like 2026-03-01T12:00:00Z", name, v), 2)
		}
		q.Set(name, v)
	}
	for _, name := range []string{"service", "org", "account", "route", "tool", "session", "kind", "outcome"} {
		if v := c.String(name); v != "" {
			q.Set(name, v)
		}
	}
	if c.Int("limit") < 1 {
		return "", cli.Exit("--limit must be at least 1", 2)
	}
	q.Set("limit", strconv.Itoa(c.Int("limit")))
	if c.Bool("oldest-first") {
		q.Set("order", "oldest")
	}
	return q.Encode(), nil
}

// fanOut calls fn for every node at once and returns the errors, one per
// node (nil where it succeeded).
func fanOut(clients []*adminapi.Client, fn func(i int, a *adminapi.Client) error) []error {
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, a := range clients {
		wg.Go(func() { errs[i] = fn(i, a) })
	}
	wg.Wait()
	return errs
}

// nodeErrors prints what went wrong per node and sums it up.
func nodeErrors(w io.Writer, clients []*adminapi.Client, errs []error) error {
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			fmt.Fprintf(w, "mcpgw: %s: %v\n", clients[i].Base(), err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d nodes failed; the output above lacks their part", failed, len(clients))
	}
	return nil
}

func runAudit(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("unexpected argument %q: use `mcpgw audit [flags]` or `mcpgw audit verify`", c.Args().First()), 2)
	}
	query, err := auditQueryString(c, time.Now())
	if err != nil {
		return err
	}
	clients, err := auditClients(c, 0)
	if err != nil {
		return err
	}
	perNode := make([][]adminapi.AuditRecord, len(clients))
	errs := fanOut(clients, func(i int, a *adminapi.Client) error {
		return a.Do(c.Context, "GET", "/v1/audit?"+query, nil, &perNode[i])
	})
	recs := mergeAudit(perNode, c.Bool("oldest-first"), c.Int("limit"))
	var out error
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		out = enc.Encode(recs)
	} else {
		out = printAudit(c.App.Writer, recs)
	}
	return cmp.Or(nodeErrors(c.App.ErrWriter, clients, errs), out)
}

// mergeAudit merges the nodes' answers by time and keeps the first limit.
func mergeAudit(perNode [][]adminapi.AuditRecord, oldestFirst bool, limit int) []adminapi.AuditRecord {
	all := slices.Concat(perNode...)
	slices.SortStableFunc(all, func(a, b adminapi.AuditRecord) int {
		c := cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Seq, b.Seq))
		if oldestFirst {
			return c
		}
		return -c
	})
	if len(all) > limit {
		all = all[:limit]
	}
	return nonNilSlice(all)
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func printAudit(w io.Writer, recs []adminapi.AuditRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tNODE\tKIND\tOUTCOME\tSERVICE\tORG\tACCOUNT\tROUTE\tTOOL\tLATENCY\tCREDENTIAL KEY")
	dash := func(s string) string { return cmp.Or(s, "-") }
	for _, r := range recs {
		outcome := r.Outcome
		if r.Reason != "" {
			outcome += "(" + r.Reason + ")"
		}
		latency := "-"
		if r.LatencyMicros > 0 {
			latency = (time.Duration(r.LatencyMicros) * time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format("2006-01-02T15:04:05.000Z"), r.Node, r.Kind, outcome,
			dash(r.Service), dash(r.Org), dash(r.Account), dash(r.Route), dash(r.Tool), latency, dash(r.CredentialKeyID))
	}
	return tw.Flush()
}

func runAuditVerify(c *cli.Context) error {
	clients, err := auditClients(c, 10*time.Minute) // a node walks its whole chain
	if err != nil {
		return err
	}
	results := make([]adminapi.AuditVerifyResult, len(clients))
	errs := fanOut(clients, func(i int, a *adminapi.Client) error {
		return a.Do(c.Context, "GET", "/v1/audit/verify", nil, &results[i])
	})
	broken := 0
	for i, r := range results {
		if errs[i] != nil {
			continue
		}
		if r.OK {
			cp := ""
			if r.CheckpointSeq > 0 {
				cp = fmt.Sprintf(", matches its signed checkpoint at seq %d", r.CheckpointSeq)
			}
			fmt.Fprintf(c.App.Writer, "%s (%s): %d records, chain intact%s\n", r.Node, clients[i].Base(), r.Checked, cp)
			continue
		}
		broken++
		fmt.Fprintf(c.App.Writer, "%s (%s): chain BROKEN at record %d after %d good ones: %s%s\n", r.Node, clients[i].Base(), r.BrokenSeq, r.Checked, r.Error, tamperNote(r.Tamper))
	}
	err = nodeErrors(c.App.ErrWriter, clients, errs)
	if broken > 0 {
		// Its own exit code: a script must tell a tampered log from a node
		// it could not ask.
		err = cli.Exit(errors.Join(fmt.Errorf("the audit log of %d node(s) has been altered or damaged: keep a copy of its audit.db for investigation", broken), err), exitTampered)
	}
	return err
}

// tamperNote names the kind of tampering verification found, if any.
func tamperNote(kind string) string {
	if kind == "" {
		return ""
	}
	return " [" + kind + "]"
}
