package cluster

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// snapshotDir is the directory raft's file snapshot store keeps under the
// raft dir.
const snapshotDir = "snapshots"

// privateSnapshots is raft's file snapshot store with every snapshot
// directory 0700 and every file in it 0600, whatever the umask: raft
// creates them 0755 and 0666, and a snapshot holds the whole replicated
// state. The raft dir above is 0700 as well, so nothing is reachable in
// the moment between raft creating a file and the mode being set.
type privateSnapshots struct {
	*raft.FileSnapshotStore
	dir string // the snapshots directory
}

var _ raft.SnapshotStore = privateSnapshots{}

// newPrivateSnapshots opens the snapshot store under raftDir.
func newPrivateSnapshots(raftDir string, retain int, logger hclog.Logger) (privateSnapshots, error) {
	store, err := raft.NewFileSnapshotStoreWithLogger(raftDir, retain, logger)
	if err != nil {
		return privateSnapshots{}, err
	}
	p := privateSnapshots{FileSnapshotStore: store, dir: filepath.Join(raftDir, snapshotDir)}
	// Snapshots an older version left behind get the same modes.
	if err := makePrivate(p.dir); err != nil {
		return privateSnapshots{}, err
	}
	return p, nil
}

// Create starts a snapshot, as taken on this node or received from the
// leader, with private modes. Raft writes its files in the directory it
// creates here, and renames it, modes kept, when the snapshot completes.
func (p privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := p.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	if err := makePrivate(filepath.Join(p.dir, sink.ID()+".tmp")); err != nil {
		sink.Cancel()
		return nil, err
	}
	return sink, nil
}

// makePrivate sets dir and the directories below it to 0700 and the files
// to 0600.
func makePrivate(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("make raft snapshot %s private: %w", path, err)
		}
		return nil
	})
}
