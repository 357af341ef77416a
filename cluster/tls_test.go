package cluster_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode %v, want %v", path, got, want)
	}
}

func years(d time.Duration) float64 { return d.Hours() / 24 / 365 }

func TestCAIssuesNodeCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := cluster.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(dir, cluster.CAKeyFile), 0o600)
	caCert := readCert(t, filepath.Join(dir, cluster.CACertFile))
	if !caCert.IsCA || caCert.PublicKeyAlgorithm != x509.ECDSA || caCert.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Fatalf("CA certificate: IsCA=%v, key %v", caCert.IsCA, caCert.PublicKeyAlgorithm)
	}
	if y := years(caCert.NotAfter.Sub(caCert.NotBefore)); y < 9.9 || y > 10.1 {
		t.Errorf("CA valid %.1f years, want 10", y)
	}
	if _, err := cluster.NewCA(dir); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second NewCA in one dir = %v, want an error wrapping fs.ErrExist", err)
	}
	loaded, err := cluster.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("LoadCA returned another certificate")
	}

	nodeDir := filepath.Join(t.TempDir(), "tls")
	if err := cluster.IssueNodeCert(loaded, nodeDir, "node-a", []string{"10.0.0.7", "gw1.internal"}); err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(nodeDir, cluster.NodeKeyFile), 0o600)
	cert := readCert(t, filepath.Join(nodeDir, cluster.NodeCertFile))
	if got, want := cert.Subject.CommonName, "node-a"; got != want {
		t.Errorf("CN=%q, want %q", got, want)
	}
	if y := years(cert.NotAfter.Sub(cert.NotBefore)); y < 1.9 || y > 2.1 {
		t.Errorf("node certificate valid %.1f years, want 2", y)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, tc := range []struct {
		name  string
		host  string
		usage x509.ExtKeyUsage
	}{
		{"server by IP", "10.0.0.7", x509.ExtKeyUsageServerAuth},
		{"server by name", "gw1.internal", x509.ExtKeyUsageServerAuth},
		{"client", "", x509.ExtKeyUsageClientAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.0.0.8"}); err == nil {
		t.Fatal("certificate verifies for a host it does not name")
	}
	if _, err := cluster.LoadTLS(nodeDir); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		id    string
		hosts []string
	}{{"", []string{"h"}}, {"a/b", []string{"h"}}, {"ok", nil}} {
		if err := cluster.IssueNodeCert(ca, t.TempDir(), bad.id, bad.hosts); err == nil {
			t.Errorf("IssueNodeCert(%q, %q) succeeded", bad.id, bad.hosts)
		}
	}
}

func TestJoinBundle(t *testing.T) {
	ca, err := cluster.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "join.bundle")
	if err := cluster.WriteJoinBundle(ca, path); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path, 0o600)
	if err := cluster.WriteJoinBundle(ca, path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteJoinBundle = %v, want an error wrapping fs.ErrExist", err)
	}
	got, err := cluster.ReadJoinBundle(path)
	if err != nil {
		t.Fatal(err)
	}
	// The new node issues its own certificate, which the cluster trusts.
	dir := t.TempDir()
	if err := cluster.IssueNodeCert(got, dir, "node-new", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := readCert(t, filepath.Join(dir, cluster.NodeCertFile)).Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatal(err)
	}

	other, err := cluster.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mixed := filepath.Join(t.TempDir(), "mixed.bundle")
	keyOnly := filepath.Join(t.TempDir(), "other.bundle")
	if err := cluster.WriteJoinBundle(other, keyOnly); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(keyOnly)
	_, otherKey := pem.Decode(b)
	if err := os.WriteFile(mixed, append(ca.CertPEM(), otherKey...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.ReadJoinBundle(mixed); err == nil {
		t.Fatal("a bundle whose key does not match its certificate was accepted")
	}
}

// foreignTLS returns a client configuration with a certificate from a CA
// the cluster does not trust, trusting the cluster's CA.
func foreignTLS(t *testing.T, c *clustertest.Cluster) *tls.Config {
	t.Helper()
	other, err := cluster.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := cluster.IssueNodeCert(other, dir, "intruder", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	conf, err := cluster.LoadTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	conf.RootCAs = x509.NewCertPool()
	conf.RootCAs.AddCert(c.CA.Cert)
	return conf
}

func TestRaftListenerRefusesUnauthenticatedPeers(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.WaitForLeader(t)
	member, err := cluster.LoadTLS(c.Nodes[1].TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	noCert := member.Clone()
	noCert.Certificates = nil

	for _, tc := range []struct {
		name  string
		conf  *tls.Config
		proto string
	}{
		{"certificate from another CA", foreignTLS(t, c), "mcpgw-raft/1"},
		{"no client certificate", noCert, "mcpgw-raft/1"},
		{"member certificate, unknown protocol", member, "h2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := tc.conf.Clone()
			conf.NextProtos = []string{tc.proto}
			conn, err := tls.Dial("tcp", leader.Addr, conf)
			if err == nil {
				// TLS 1.3 clients finish before the server has checked
				// their certificate; the refusal shows on the first read.
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil {
				t.Fatal("the raft listener served an unauthenticated peer")
			}
			t.Logf("refused: %v", err)
		})
	}

	t.Run("member certificate, no protocol", func(t *testing.T) {
		conn, err := tls.Dial("tcp", leader.Addr, member)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("Read()=%d, %v; want the connection closed", n, err)
		}
	})

	t.Run("plain TCP", func(t *testing.T) {
		conn, err := net.Dial("tcp", leader.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		b, err := io.ReadAll(bufio.NewReader(conn))
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("read: %v", err)
		}
		// At most a TLS alert record (content type 21), nothing of raft.
		if len(b) > 0 && (b[0] != 21 || len(b) > 7) {
			t.Fatalf("plain client got %d bytes: %q", len(b), b)
		}
	})

	t.Run("servers outside the CA", func(t *testing.T) {
		// A member does not trust a server certificate from another CA
		// either: start a listener presenting one and dial it as a
		// member would.
		ln, err := tls.Listen("tcp", "127.0.0.1:0", foreignTLS(t, c))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if conn, err := ln.Accept(); err == nil {
				conn.(*tls.Conn).Handshake()
				conn.Close()
			}
		}()
		conf := member.Clone()
		conf.NextProtos = []string{"mcpgw-raft/1"}
		conn, err := tls.Dial("tcp", ln.Addr().String(), conf)
		if err == nil {
			conn.Close()
			t.Fatal("a member accepted a server certificate from another CA")
		}
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Logf("refused: %v", err)
		}
	})

	t.Run("node from another CA cannot join", func(t *testing.T) {
		intruder := c.NewForeignNode(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := intruder.RequestJoin(ctx, leader.Addr); err == nil {
			t.Fatal("a node with a certificate from another CA joined")
		} else {
			t.Logf("refused: %v", err)
		}
		c.WaitForVoters(t, 3)
	})

	// The cluster is unharmed.
	apply(t, leader, route("after-intruders"))
	waitRoutes(t, []string{"after-intruders"}, c.Nodes...)
}
