package node

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/client"
)

func TestUnixSocketFile(t *testing.T) {
	n, _, route := startGateway(t)
	path := n.cfg.UnixPath
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s has mode %v, want a socket", path, fi.Mode())
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o660); got != want {
		t.Fatalf("socket mode = %v, want %v", got, want)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("socket dir holds %d entries, want only the socket", len(entries))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", append([]client.Option{client.WithGateway("unix://" + path)}, tokenOpts(n)...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoErr(ctx, sess, "over unix"); err != nil {
		t.Fatal(err)
	}
	sess.Close()

	n.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after Close: %v, want it removed", err)
	}
}

func TestUnixSocketStartup(t *testing.T) {
	withSocket := func(path string) func(*Config) { return func(c *Config) { c.UnixPath = path } }
	startErr := func(t *testing.T, path string) error {
		t.Helper()
		cfg := DefaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.HTTPAddr, cfg.AdminAddr, cfg.QUICAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
		cfg.UnixPath = path
		cfg.VaultKeys = testVaultKeys(t)
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		return n.Start(context.Background())
	}

	t.Run("stale socket is replaced", func(t *testing.T) {
		path := filepath.Join(shortTempDir(t), "gw.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // leaves the file, as a crashed node would
		n := startNode(t, withSocket(path))
		c, err := net.Dial("unix", n.cfg.UnixPath)
		if err != nil {
			t.Fatalf("dial the new socket: %v", err)
		}
		c.Close()
	})
	t.Run("live socket is refused", func(t *testing.T) {
		path := filepath.Join(shortTempDir(t), "gw.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := startErr(t, path); err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Fatalf("Start = %v, want an in-use error", err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("the other process's socket was removed: %v", err)
		}
	})
	t.Run("regular file is refused", func(t *testing.T) {
		path := filepath.Join(shortTempDir(t), "gw.sock")
		if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := startErr(t, path); err == nil || !strings.Contains(err.Error(), "is not a socket") {
			t.Fatalf("Start = %v, want a not-a-socket error", err)
		}
		if data, _ := os.ReadFile(path); string(data) != "keep me" {
			t.Fatal("the regular file was touched")
		}
	})
}
