package cluster_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
)

// TestSnapshotFilesArePrivate: the snapshots a node takes, and those a
// follower receives from the leader, are 0700 directories of 0600 files
// like every other data file, even under a umask that lets everyone read.
func TestSnapshotFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	_, leader, follower := catchUpFromSnapshot(t)
	for _, n := range []*clustertest.Node{leader, follower} {
		dir := filepath.Join(n.Dir, cluster.RaftDir)
		files := 0
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // renamed or removed by raft while the walk ran
			}
			if err != nil {
				return err
			}
			if d.IsDir() && strings.HasSuffix(d.Name(), ".tmp") {
				// A snapshot still being written: raft creates it 0755 and
				// Create narrows it a moment later. The 0700 raft dir
				// above keeps it unreachable in between.
				return fs.SkipDir
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = fs.ModeDir | 0o700
			} else {
				files++
			}
			if got := info.Mode(); got != want {
				t.Errorf("%s: mode %v, want %v", path, got, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if matches, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin")); len(matches) == 0 {
			t.Fatalf("node %s has no snapshot under %s", n.ID, dir)
		}
		t.Logf("node %s: %d files checked", n.ID, files)
	}
}
