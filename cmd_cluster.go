package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/node"
)

func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "show and change the raft cluster's membership",
		Subcommands: []*cli.Command{
			{
				Name:   "status",
				Usage:  "leader, term, applied index and every member's health, as the node at --admin sees them",
				Flags:  append(adminFlags(), jsonFlag()),
				Action: runClusterStatus,
			},
			{
				Name:        "join",
				Usage:       "add a node as a voter (the node must hold a certificate from the cluster CA)",
				ArgsUsage:   "<node-id> <raft-address>",
				Description: "Example:\n   mcpgw cluster join n2 10.0.0.2:7423",
				Flags:       adminFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return usagef("usage: mcpgw cluster join <node-id> <raft-address> (the new node's --node-id and --raft-advertise)")
					}
					return changeMembership(c, "/v1/cluster/join", adminapi.ClusterJoinRequest{ID: c.Args().Get(0), Addr: c.Args().Get(1)})
				},
			},
			{
				Name:        "remove",
				Usage:       "take a node out of the cluster (a dead node before replacing it, or one being retired)",
				ArgsUsage:   "<node-id>",
				Description: "Example:\n   mcpgw cluster remove n3     # ids: mcpgw cluster status",
				Flags:       adminFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usagef("usage: mcpgw cluster remove <node-id> (see mcpgw cluster status)")
					}
					return changeMembership(c, "/v1/cluster/remove", adminapi.ClusterRemoveRequest{ID: c.Args().Get(0)})
				},
			},
			{
				Name:  "bundle",
				Usage: "write a join bundle (cluster CA certificate AND KEY) for `mcpgw init --ca-from` on a new node",
				Description: `Reads the cluster CA from this host's cluster TLS dir; only the node that
created the cluster (or one given the CA key) has it. The bundle holds the CA
key: whoever has it can mint certificates the cluster trusts. Carry it like the
vault key and delete it once the new node is initialised.`,
				Flags: []cli.Flag{
					dataDirFlag(),
					clusterTLSDirFlag(),
					&cli.StringFlag{Name: "out", Required: true, Usage: "file to write (0600; must not exist)"},
				},
				Action: func(c *cli.Context) error {
					dir := c.String("cluster-tls-dir")
					if dir == "" {
						dir = node.DefaultClusterTLSDir(c.String("data-dir"))
					}
					ca, err := cluster.LoadCA(dir)
					if err != nil {
						return err
					}
					if err := cluster.WriteJoinBundle(ca, c.String("out")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "join bundle written to %s; it holds the cluster CA key: delete it once the new node has run `mcpgw init --ca-from %s`\n", c.String("out"), c.String("out"))
					return nil
				},
			},
		},
	}
}

func runClusterStatus(c *cli.Context) error {
	a, err := newAdminClient(c)
	if err != nil {
		return err
	}
	var st adminapi.ClusterStatus
	if err := a.Do(c.Context, http.MethodGet, "/v1/cluster/status", nil, &st); err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(c, st)
	}
	printClusterStatus(c.App.Writer, st)
	return nil
}

func printClusterStatus(w io.Writer, st adminapi.ClusterStatus) {
	leader := st.LeaderID
	if leader == "" {
		leader = "(none: no quorum reachable)"
	}
	fmt.Fprintf(w, "node %s (%s) is %s; leader %s; term %d; applied index %d of %d committed\n", st.ID, st.Addr, st.State, leader, st.Term, st.AppliedIndex, st.CommitIndex)
	fmt.Fprintf(w, "state database at index %d; %d leader changes seen since start\n", st.StateIndex, st.LeaderChanges)
	if st.Halted != "" {
		fmt.Fprintf(w, "HALTED: %s\n", st.Halted)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSUFFRAGE\tROLE\tHEALTH\tLAST CONTACT")
	for _, p := range st.Peers {
		role := "follower"
		if p.Leader {
			role = "leader"
		}
		if p.Self {
			role += " (this node)"
		}
		last := "-"
		if !p.LastContact.IsZero() {
			last = time.Since(p.LastContact).Round(time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Addr, p.Suffrage, role, p.Health, last)
	}
	tw.Flush()
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "short summary of a node and its cluster",
		Flags: append(adminFlags(), jsonFlag()),
		Action: func(c *cli.Context) error {
			a, err := newAdminClient(c)
			if err != nil {
				return err
			}
			var st adminapi.ClusterStatus
			if err := a.Do(c.Context, http.MethodGet, "/v1/cluster/status", nil, &st); err != nil {
				return err
			}
			up := 0
			for _, p := range st.Peers {
				if p.Health == adminapi.HealthUp {
					up++
				}
			}
			leader := st.LeaderID
			if leader == "" {
				leader = "none"
			}
			// The route count is this node's own copy, as the rest of the
			// summary is: it answers on a node that knows no leader.
			var routes []struct{}
			routeCount := "?"
			routesErr := a.DoStale(c.Context, http.MethodGet, "/v1/routes", nil, &routes)
			if routesErr == nil {
				routeCount = fmt.Sprint(len(routes))
			}
			if c.Bool("json") {
				s := statusSummary{Node: st.ID, State: strings.ToLower(st.State), RaftAddr: st.Addr, Members: len(st.Peers), MembersUp: up,
					Leader: st.LeaderID, Term: st.Term, AppliedIndex: st.AppliedIndex, Halted: st.Halted}
				if routesErr == nil {
					s.Routes = &[]int{len(routes)}[0]
				}
				return writeJSON(c, s)
			}
			fmt.Fprintf(c.App.Writer, "node:     %s (%s), raft %s\ncluster:  %d members, %d seen up, leader %s, term %d, applied %d\nroutes:   %s\n",
				st.ID, strings.ToLower(st.State), st.Addr, len(st.Peers), up, leader, st.Term, st.AppliedIndex, routeCount)
			if st.Halted != "" {
				fmt.Fprintf(c.App.Writer, "HALTED:   %s\n", st.Halted)
			}
			return nil
		},
	}
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "save a consistent copy of the replicated state (credentials stay sealed: keep the vault key too)",
		Flags: append(adminFlags(), &cli.StringFlag{Name: "out", Required: true, Usage: "file to write (0600; must not exist)"}),
		Action: func(c *cli.Context) error {
			a, err := newAdminClient(c)
			if err != nil {
				return err
			}
			out := c.String("out")
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			n, err := a.Download(c.Context, "/v1/backup", f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return fmt.Errorf("backup: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "backup of %d bytes written to %s\n", n, out)
			return nil
		},
	}
}

// changeMembership posts a join or remove and prints the cluster after it.
func changeMembership(c *cli.Context, path string, body any) error {
	a, err := newAdminClient(c)
	if err != nil {
		return err
	}
	var st adminapi.ClusterStatus
	if err := a.Do(c.Context, http.MethodPost, path, body, &st); err != nil {
		return err
	}
	printClusterStatus(c.App.Writer, st)
	return nil
}

// statusSummary is `mcpgw status --json`; the field names are stable.
type statusSummary struct {
	Node         string `json:"node"`
	State        string `json:"state"`
	RaftAddr     string `json:"raft_addr"`
	Members      int    `json:"members"`
	MembersUp    int    `json:"members_up"`
	Leader       string `json:"leader"` // empty: no quorum reachable
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	Routes       *int   `json:"routes"` // null when the node could not list them
	Halted       string `json:"halted,omitempty"`
}
