package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
)

func TestQUICCertificate(t *testing.T) {
	clusterDir := filepath.Join(t.TempDir(), "cluster")
	if err := CreateClusterTLS(clusterDir, "n1", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cert, err := servingCertificate("", "", clusterDir)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate does not cover 127.0.0.1: %v", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(clusterDir, cluster.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("the QUIC certificate does not chain to the cluster CA: %v", err)
	}

	again, _ := servingCertificate("", "", clusterDir)
	otherDir := filepath.Join(t.TempDir(), "cluster")
	if err := CreateClusterTLS(otherDir, "n2", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	other, _ := servingCertificate("", "", otherDir)
	k1, err := statelessResetKey(cert)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := statelessResetKey(again)
	k3, _ := statelessResetKey(other)
	if *k1 != *k2 || *k1 == *k3 {
		t.Fatal("QUIC stateless reset key must be stable per node and differ between nodes")
	}

	t.Run("operator certificate", func(t *testing.T) {
		certFile, keyFile := filepath.Join(otherDir, cluster.NodeCertFile), filepath.Join(otherDir, cluster.NodeKeyFile)
		got, err := servingCertificate(certFile, keyFile, clusterDir)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, _ := os.ReadFile(certFile)
		block, _ := pemBlock(certPEM)
		if !bytes.Equal(got.Certificate[0], block) {
			t.Fatal("operator certificate not used")
		}
	})
	t.Run("half a pair", func(t *testing.T) {
		if _, err := servingCertificate("cert.pem", "", clusterDir); err == nil || !strings.Contains(err.Error(), "--tls-cert and --tls-key go together") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no cluster certificate", func(t *testing.T) {
		if _, err := servingCertificate("", "", t.TempDir()); err == nil || !strings.Contains(err.Error(), "mcpgw init") {
			t.Fatalf("err = %v, want advice to run mcpgw init", err)
		}
	})
}

// TestQUICTrust checks the client trusts a gateway through MCPGW_CA_FILE
// and refuses one it has no CA for.
func TestQUICTrust(t *testing.T) {
	n, _, route := startGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw := client.WithGateway("quic://" + n.QUICAddr())
	tok := tokenOpts(n)[0]

	t.Run("CA file", func(t *testing.T) {
		t.Setenv(client.EnvCAFile, filepath.Join(n.cfg.clusterTLSDir(), cluster.CACertFile))
		sess, err := client.Connect(ctx, route.URL, "org1", "acct1", gw, tok)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		if err := echoErr(ctx, sess, "trusted"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown CA", func(t *testing.T) {
		t.Setenv(client.EnvCAFile, "")
		_, err := client.Connect(ctx, route.URL, "org1", "acct1", gw, tok, client.WithRootCAs(x509.NewCertPool()))
		var uae x509.UnknownAuthorityError
		if !errors.As(err, &uae) {
			t.Fatalf("Connect = %v, want an unknown-authority error", err)
		}
	})
	t.Run("CA file without certificates", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(bad, []byte("not a certificate"), 0o644)
		t.Setenv(client.EnvCAFile, bad)
		_, err := client.Connect(ctx, route.URL, "org1", "acct1", gw, tok)
		if err == nil || !strings.Contains(err.Error(), client.EnvCAFile) {
			t.Fatalf("Connect = %v, want an error naming %s", err, client.EnvCAFile)
		}
	})
}

func pemBlock(data []byte) ([]byte, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	return block.Bytes, nil
}
