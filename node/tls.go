package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"
)

// Files of the self-signed certificate under the data dir, used when the
// operator gives no certificate.
const (
	TLSDir      = "tls"
	TLSCertName = "cert.pem" // mode 0644: clients trust it (MCPGW_CA_FILE)
	TLSKeyName  = "key.pem"  // mode 0600
)

// selfSignedValidity is how long a generated certificate lasts.
const selfSignedValidity = 5 * 365 * 24 * time.Hour

// loadOrCreateTLS returns the certificate the QUIC listener presents: the
// operator's when certFile and keyFile are given, otherwise a self-signed
// ECDSA certificate generated into <dataDir>/tls on first start and reused
// after.
func loadOrCreateTLS(dataDir, certFile, keyFile string) (tls.Certificate, error) {
	if (certFile == "") != (keyFile == "") {
		return tls.Certificate{}, errors.New("--tls-cert and --tls-key go together: give both, or neither for a self-signed certificate")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load --tls-cert %s and --tls-key %s: %w", certFile, keyFile, err)
		}
		return cert, nil
	}
	dir := filepath.Join(dataDir, TLSDir)
	certFile, keyFile = filepath.Join(dir, TLSCertName), filepath.Join(dir, TLSKeyName)
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	if certErr == nil && keyErr == nil {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load %s: %w; delete %s to have a new certificate generated", certFile, err, dir)
		}
		if now := time.Now(); now.After(cert.Leaf.NotAfter) {
			return tls.Certificate{}, fmt.Errorf("certificate %s expired on %s; delete %s to have a new one generated, or pass --tls-cert and --tls-key",
				certFile, cert.Leaf.NotAfter.Format(time.DateOnly), dir)
		}
		return cert, nil
	}
	// Either file missing (first start, or a start interrupted between the
	// two writes): generate both.
	certPEM, keyPEM, err := selfSignedCert()
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// selfSignedCert makes a certificate for this host's names and addresses,
// loopback included.
func selfSignedCert() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "mcpgw node " + host, Organization: []string{"mcpgw"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if host != "" && host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ipn.IP)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create self-signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
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

// writeFileAtomic writes data to path with mode perm through a temporary
// file, so a crash never leaves a half-written file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
