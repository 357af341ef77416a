package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "offline: put a backup (mcpgw backup) into a fresh data dir, to start a new cluster from it",
		Description: `Writes the backup as <data-dir>/state.db of a data dir that holds no state
and no raft log yet, ready to start a new cluster from it. Raft indexes of the old
cluster mean nothing in the new one, so the backup's applied index is reset.

Every node of the new cluster starts from the same backup: run restore into each
node's fresh data dir, start one node (it bootstraps), then start the others with
--join. A node added to the restored cluster later is also restored first.
The vault key of the old cluster must be given to every node (--vault-key).`,
		Flags: []cli.Flag{
			dataDirFlag(),
			&cli.StringFlag{Name: "from", Required: true, Usage: "backup file written by mcpgw backup"},
		},
		Action: func(c *cli.Context) error {
			dir := c.String("data-dir")
			for _, name := range []string{storage.StateFile, cluster.RaftDir} {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					return fmt.Errorf("%s already holds %s: restore only into a fresh data dir (stop the node and move the old dir aside first)", dir, name)
				}
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			in, err := os.Open(c.String("from"))
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			defer in.Close()
			path := filepath.Join(dir, storage.StateFile)
			out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			_, err = io.Copy(out, in)
			if err == nil {
				err = out.Sync()
			}
			err = errors.Join(err, out.Close())
			if err == nil {
				err = resetAppliedIndex(path)
			}
			if err != nil {
				os.Remove(path)
				return fmt.Errorf("restore %s: %w", c.String("from"), err)
			}
			fmt.Fprintf(c.App.Writer, "restored %s into %s\n", c.String("from"), path)
			return nil
		},
	}
}

// resetAppliedIndex opens a restored state database, which also checks it,
// and sets its applied raft index to 0, so the new cluster's log applies
// on top of it from its first entry.
func resetAppliedIndex(path string) error {
	s, err := storage.Open(path)
	if err != nil {
		return fmt.Errorf("not a state database: %w", err)
	}
	err = s.Update(func(tx *storage.Tx) error { return tx.SetAppliedIndex(0) })
	return errors.Join(err, s.Close())
}
