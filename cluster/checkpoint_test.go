package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCheckpointSignature: a checkpoint verifies only against the CA that
// issued its signer's certificate, for the node named in it, with the
// fields it was signed over.
func TestCheckpointSignature(t *testing.T) {
	issue := func(t *testing.T, node string) (tls.Certificate, *x509.CertPool) {
		t.Helper()
		dir := t.TempDir()
		ca, err := NewCA(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := IssueNodeCert(ca, dir, node, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		conf, err := LoadTLS(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, NodeCertFile)); err != nil {
			t.Fatal(err)
		}
		return conf.Certificates[0], conf.RootCAs
	}
	cert, roots := issue(t, "gw1")
	_, otherRoots := issue(t, "gw1")
	good, err := SignCheckpoint(cert, "gw1", 42, "abc")
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyCheckpoint(good, roots); err != nil {
		t.Fatalf("VerifyCheckpoint(signed)=%v, want nil", err)
	}
	forged, err := SignCheckpoint(cert, "gw2", 42, "abc")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func() error{
		"seq changed":  func() error { cp := good; cp.Seq = 41; return VerifyCheckpoint(cp, roots) },
		"hash changed": func() error { cp := good; cp.Hash = "abd"; return VerifyCheckpoint(cp, roots) },
		"other CA":     func() error { return VerifyCheckpoint(good, otherRoots) },
		"other node":   func() error { return VerifyCheckpoint(forged, roots) },
		"no signature": func() error { cp := good; cp.Sig = nil; return VerifyCheckpoint(cp, roots) },
		"garbage cert": func() error { cp := good; cp.Cert = []byte("x"); return VerifyCheckpoint(cp, roots) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			if err := f(); !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("VerifyCheckpoint=%v, want ErrBadCheckpoint", err)
			}
		})
	}
}
