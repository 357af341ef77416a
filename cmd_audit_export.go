package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/internal/atomicfile"
)

func auditExportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "print one node's audit records as JSON lines in sequence order; --follow keeps printing new ones",
		Description: "Each line is one record with its node, seq and hash. To resume, pass the seq of the last line\n" +
			"received as --since, or keep it in a --cursor file: the cursor is written after each line is\n" +
			"printed, so a restart repeats at most the line in flight (same node and seq), never skips one.",
		Flags: append(auditAdminFlags(),
			&cli.Uint64Flag{Name: "since", Usage: "print records after this sequence number (default 0: all, or the --cursor file's)"},
			&cli.BoolFlag{Name: "follow", Usage: "keep the stream open and print records as the node writes them"},
			&cli.StringFlag{Name: "cursor", Usage: "file holding the seq of the last record printed: read at start, updated after each line"},
		),
		Action: runAuditExport,
	}
}

func runAuditExport(c *cli.Context) error {
	clients, err := auditClients(c, 0)
	if err != nil {
		return err
	}
	if len(clients) != 1 {
		return cli.Exit(fmt.Sprintf("%d --admin given: export one node at a time (sequence numbers are per node), with a --cursor file each", len(clients)), 2)
	}
	since := c.Uint64("since")
	cursor := c.String("cursor")
	if cursor != "" && !c.IsSet("since") {
		b, err := os.ReadFile(cursor)
		switch {
		case err == nil:
			if since, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
				return cli.Exit(fmt.Sprintf("--cursor %s does not hold a sequence number: fix or delete it (then every record is printed again)", cursor), 2)
			}
		case !os.IsNotExist(err):
			return fmt.Errorf("read --cursor: %w", err)
		}
	}
	w := &exportWriter{out: c.App.Writer, cursor: cursor}
	path := "/v1/audit/export?since=" + strconv.FormatUint(since, 10)
	if c.Bool("follow") {
		path += "&follow=true"
	}
	_, err = clients[0].Download(c.Context, path, w)
	if err != nil && c.Context.Err() != nil {
		return nil // interrupted while following
	}
	return err
}

// exportWriter prints whole lines and records each one's seq in the
// cursor file once it is printed.
type exportWriter struct {
	out     io.Writer
	cursor  string
	partial []byte
}

func (e *exportWriter) Write(p []byte) (int, error) {
	e.partial = append(e.partial, p...)
	for {
		i := bytes.IndexByte(e.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := e.partial[:i+1]
		var rec struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return 0, fmt.Errorf("the node sent a line that is not an audit record: %v", err)
		}
		if _, err := e.out.Write(line); err != nil {
			return 0, err
		}
		if e.cursor != "" {
			if err := atomicfile.Write(e.cursor, []byte(strconv.FormatUint(rec.Seq, 10)+"\n"), 0o600); err != nil {
				return 0, fmt.Errorf("write --cursor: %w", err)
			}
		}
		e.partial = e.partial[i+1:]
	}
}
