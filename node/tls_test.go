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
)

func TestLoadOrCreateTLS(t *testing.T) {
	dir := t.TempDir()
	cert, err := loadOrCreateTLS(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{TLSCertName: 0o644, TLSKeyName: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, TLSDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %v, want %v", name, got, want)
		}
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate does not cover 127.0.0.1: %v", err)
	}
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Errorf("certificate does not cover localhost: %v", err)
	}

	again, err := loadOrCreateTLS(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Certificate[0], cert.Certificate[0]) {
		t.Fatal("second start generated a new certificate instead of reusing the first")
	}

	k1, err := statelessResetKey(cert)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := statelessResetKey(again)
	other, _ := loadOrCreateTLS(t.TempDir(), "", "")
	k3, _ := statelessResetKey(other)
	if *k1 != *k2 || *k1 == *k3 {
		t.Fatal("QUIC stateless reset key must be stable per node and differ between nodes")
	}

	t.Run("operator certificate", func(t *testing.T) {
		opDir := t.TempDir()
		certPEM, keyPEM, err := selfSignedCert()
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := filepath.Join(opDir, "op.crt"), filepath.Join(opDir, "op.key")
		os.WriteFile(certFile, certPEM, 0o644)
		os.WriteFile(keyFile, keyPEM, 0o600)
		dataDir := t.TempDir()
		got, err := loadOrCreateTLS(dataDir, certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pemBlock(certPEM)
		if !bytes.Equal(got.Certificate[0], block) {
			t.Fatal("operator certificate not used")
		}
		if _, err := os.Stat(filepath.Join(dataDir, TLSDir)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("a self-signed certificate was generated despite operator certificates")
		}
	})
	t.Run("half a pair", func(t *testing.T) {
		if _, err := loadOrCreateTLS(t.TempDir(), "cert.pem", ""); err == nil || !strings.Contains(err.Error(), "--tls-cert and --tls-key go together") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("corrupt file", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := loadOrCreateTLS(dir, "", ""); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, TLSDir, TLSCertName), []byte("garbage"), 0o644)
		if _, err := loadOrCreateTLS(dir, "", ""); err == nil || !strings.Contains(err.Error(), "to have a new certificate generated") {
			t.Fatalf("err = %v, want advice to delete the files", err)
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
		t.Setenv(client.EnvCAFile, filepath.Join(n.cfg.DataDir, TLSDir, TLSCertName))
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
