package node

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/mcpgw/mcpgw/cluster"
)

// servingCertificate returns the certificate the QUIC listener, and the
// session and admin listeners when they serve TLS, present: the operator's when certFile and keyFile are given, otherwise
// this node's certificate from the cluster CA in clusterDir, so clients
// trust every node of a cluster through one CA file (<cluster TLS
// dir>/ca.crt).
func servingCertificate(certFile, keyFile, clusterDir string) (tls.Certificate, error) {
	if (certFile == "") != (keyFile == "") {
		return tls.Certificate{}, errors.New("--tls-cert and --tls-key go together: give both, or neither to use the node's cluster certificate")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load --tls-cert %s and --tls-key %s: %w", certFile, keyFile, err)
		}
		return cert, nil
	}
	certFile, keyFile = filepath.Join(clusterDir, cluster.NodeCertFile), filepath.Join(clusterDir, cluster.NodeKeyFile)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load the node's cluster certificate %s for the session listeners: %w; run `mcpgw init` or pass --tls-cert and --tls-key", certFile, err)
	}
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("certificate %s expired on %s; issue a new one from the cluster CA (`mcpgw init --ca-from <bundle>`), or pass --tls-cert and --tls-key",
			certFile, cert.Leaf.NotAfter.Format(time.DateOnly))
	}
	return cert, nil
}

// servingCertFile names the file of the certificate servingCertificate
// loads, for log lines.
func (c *Config) servingCertFile() string {
	if c.TLSCertFile != "" {
		return c.TLSCertFile
	}
	return filepath.Join(c.clusterTLSDir(), cluster.NodeCertFile)
}

// statelessResetKey derives the QUIC stateless reset key from the node's
// private key, so it survives restarts without a file of its own.
func statelessResetKey(cert tls.Certificate) (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("derive QUIC stateless reset key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("mcpgw quic stateless reset key v1\x00"))
	h.Write(der)
	var key quic.StatelessResetKey
	copy(key[:], h.Sum(nil))
	return &key, nil
}
