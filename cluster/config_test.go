package cluster

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validConfig(t *testing.T) Config {
	t.Helper()
	ca, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := IssueNodeCert(ca, dir, "n1", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	conf, err := LoadTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.TLS = conf
	return cfg
}

func TestConfigValidate(t *testing.T) {
	base := validConfig(t)
	if err := base.Validate(); err != nil {
		t.Fatalf("DefaultConfig with TLS: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"bad node id", func(c *Config) { c.NodeID = "a b" }, "--node-id"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "--data-dir"},
		{"bad bind", func(c *Config) { c.BindAddr = "7421" }, "--raft"},
		{"wildcard advertise", func(c *Config) { c.AdvertiseAddr = "0.0.0.0:7421" }, "--raft-advertise"},
		{"advertise port 0", func(c *Config) { c.AdvertiseAddr = "10.0.0.1:0" }, "--raft-advertise"},
		{"no TLS", func(c *Config) { c.TLS = nil }, "mcpgw init"},
		{"no certificate", func(c *Config) { c.TLS.Certificates = nil }, "no node certificate"},
		{"client certs not verified", func(c *Config) { c.TLS.ClientAuth = tls.RequestClientCert }, "client certificates"},
		{"no client CA", func(c *Config) { c.TLS.ClientCAs = nil }, "client certificates"},
		{"no root CA", func(c *Config) { c.TLS.RootCAs = nil }, "verify servers"},
		{"skip verify", func(c *Config) { c.TLS.InsecureSkipVerify = true }, "verify servers"},
		{"zero timeout", func(c *Config) { c.ApplyTimeout = 0 }, "apply timeout"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second }, "lease"},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = 100 * time.Millisecond }, "election"},
		{"no snapshot threshold", func(c *Config) { c.SnapshotThreshold = 0 }, "snapshot threshold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.TLS = base.TLS.Clone()
			tc.change(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate() accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate()=%q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestNewDoesNoIO(t *testing.T) {
	cfg := validConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "never")
	cfg.BindAddr = "127.0.0.1:0"
	r, err := New(cfg, openStore(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
		t.Fatalf("New touched the data dir: %v", err)
	}
	if err := r.Apply(t.Context(), putRoute("a")); err != ErrClosed {
		t.Fatalf("Apply before Open = %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLoadNodeID(t *testing.T) {
	dir := t.TempDir()
	id, err := LoadNodeID(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if validNodeID(id) != nil {
		t.Fatalf("generated id %q is not valid", id)
	}
	checkFileMode(t, filepath.Join(dir, NodeIDFile), 0o600)
	for _, want := range []string{"", id} {
		got, err := LoadNodeID(dir, want)
		if err != nil || got != id {
			t.Fatalf("LoadNodeID(%q)=%q, %v; want the stored %q", want, got, err, id)
		}
	}
	_, err = LoadNodeID(dir, "other")
	if err == nil || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("LoadNodeID with a different id = %v, want an error naming the stored id and what to do", err)
	}

	chosen := t.TempDir()
	if got, err := LoadNodeID(chosen, "gw-1"); err != nil || got != "gw-1" {
		t.Fatalf("LoadNodeID(gw-1)=%q, %v", got, err)
	}
	if got, err := LoadNodeID(chosen, ""); err != nil || got != "gw-1" {
		t.Fatalf("reload = %q, %v; want gw-1", got, err)
	}
	if _, err := LoadNodeID(t.TempDir(), "bad/id"); err == nil {
		t.Fatal("an id with a slash was accepted")
	}
}

func checkFileMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("%s mode %v, want %v", path, got, want)
	}
}

func TestOpenRefusesCertificateOfAnotherNode(t *testing.T) {
	cfg := validConfig(t) // a certificate for n1
	cfg.NodeID = "n2"
	cfg.DataDir = t.TempDir()
	cfg.BindAddr = "127.0.0.1:0"
	r, err := New(cfg, openStore(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Open(t.Context())
	if err == nil || !strings.Contains(err.Error(), `certificate is for node "n1"`) {
		t.Fatalf("Open()=%v, want a refusal naming the certificate's node", err)
	}
}

// TestDefaultBindAddr: the raft listener defaults to the port the README
// and node.DefaultConfig give it, not to 7421, where QUIC sessions listen.
func TestDefaultBindAddr(t *testing.T) {
	if got, want := DefaultConfig().BindAddr, "127.0.0.1:7423"; got != want {
		t.Fatalf("DefaultConfig().BindAddr=%q, want %q", got, want)
	}
}
