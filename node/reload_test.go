package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/transport"
)

// TestReloadCertificate: Reload re-reads --tls-cert and --tls-key, so the
// session listener and QUIC present a renewed certificate on the next
// handshake; a broken file keeps the one in use.
func TestReloadCertificate(t *testing.T) {
	var certs [2][]byte
	var dirs [2]string
	for i, id := range []string{"old", "new"} {
		dirs[i] = filepath.Join(t.TempDir(), "cluster")
		if err := CreateClusterTLS(dirs[i], id, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		c, err := servingCertificate("", "", dirs[i])
		if err != nil {
			t.Fatal(err)
		}
		certs[i] = c.Certificate[0]
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	install := func(from string) {
		t.Helper()
		for src, dst := range map[string]string{cluster.NodeCertFile: certFile, cluster.NodeKeyFile: keyFile} {
			b, err := os.ReadFile(filepath.Join(from, src))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(dirs[0])
	n := startNode(t, func(c *Config) {
		// No token is issued: the admin listener presents the operator certificate, not one of the node CA.
		c.TLS, c.TLSCertFile, c.TLSKeyFile, c.InsecureDev = TLSMode("on"), certFile, keyFile, true
	})
	live := Live{MaxConns: n.cfg.MaxConns, MaxConnsPerIP: n.cfg.MaxConnsPerIP, AdminMaxConns: n.cfg.AdminMaxConns}

	// The tests read which certificate is presented; trust is not the point.
	presented := func() (httpCert, quicCert []byte) {
		t.Helper()
		conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
		c, err := tls.Dial("tcp", n.HTTPAddr(), conf)
		if err != nil {
			t.Fatal(err)
		}
		httpCert = c.ConnectionState().PeerCertificates[0].Raw
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		qc, err := transport.DialQUIC(ctx, n.QUICAddr(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		quicCert = qc.ConnectionState().TLS.PeerCertificates[0].Raw
		qc.CloseWithError(0, "")
		return httpCert, quicCert
	}
	if h, q := presented(); !bytes.Equal(h, certs[0]) || !bytes.Equal(q, certs[0]) {
		t.Fatal("the node does not present --tls-cert at start")
	}

	changed, err := n.Reload(live)
	if err != nil || len(changed) != 0 {
		t.Fatalf("Reload with nothing changed: %q, %v", changed, err)
	}

	install(dirs[1])
	changed, err = n.Reload(live)
	if err != nil || len(changed) != 1 || !strings.HasPrefix(changed[0], "TLS certificate "+certFile+" (valid until ") {
		t.Fatalf("Reload after renewal: %q, %v", changed, err)
	}
	if h, q := presented(); !bytes.Equal(h, certs[1]) || !bytes.Equal(q, certs[1]) {
		t.Fatal("the renewed certificate is not presented after Reload")
	}

	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Reload(Live{MaxConns: 7, MaxConnsPerIP: live.MaxConnsPerIP, AdminMaxConns: live.AdminMaxConns}); err == nil || !strings.Contains(err.Error(), "the certificate in use is kept") {
		t.Fatalf("Reload with a broken key: %v", err)
	}
	if h, _ := presented(); !bytes.Equal(h, certs[1]) {
		t.Fatal("a broken key file replaced the certificate in use")
	}
	if n.liveCaps.sessions == 7 {
		t.Fatal("a failed Reload changed the connection caps")
	}
}
