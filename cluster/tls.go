package cluster

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

	"github.com/mcpgw/mcpgw/internal/atomicfile"
)

// Files of a TLS directory (by convention <data-dir>/tls). Every node holds
// ca.crt, node.crt and node.key; ca.key exists only where the CA was created
// or a join bundle was unpacked on purpose.
const (
	CACertFile   = "ca.crt"
	CAKeyFile    = "ca.key"
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
)

// Certificate lifetimes. Clocks of air-gapped VMs drift, so certificates
// are valid from an hour before they are made.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	nodeLifetime = 2 * 365 * 24 * time.Hour
	clockSkew    = time.Hour
)

// CA is the cluster certificate authority: the root every node verifies its
// peers against. Its key signs node certificates.
type CA struct {
	Cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// NewCA creates a cluster CA (ECDSA P-256, valid 10 years) and writes
// dir/ca.crt and dir/ca.key (0600). It refuses to replace an existing CA.
func NewCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "mcpgw cluster CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key first: a crash between the two leaves no certificate that
	// looks like a usable CA without its key.
	if err := atomicfile.Create(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write CA key: %w", err)
	}
	if err := atomicfile.Create(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	return parseCA(certPEM, keyPEM)
}

// LoadCA reads the CA certificate and key from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w (only the node that created the CA, or one given a join bundle, holds it)", err)
	}
	return parseCA(certPEM, keyPEM)
}

// IssueNodeCert signs a certificate for nodeID (ECDSA P-256, valid 2 years,
// for both server and client authentication) naming hosts — the IPs and DNS
// names other nodes dial, that is the advertise address's host — and writes
// dir/node.crt, dir/node.key (0600) and dir/ca.crt.
func IssueNodeCert(ca *CA, dir, nodeID string, hosts []string) error {
	if ca.key == nil {
		return errors.New("issue node certificate: the CA key is not loaded")
	}
	if err := validNodeID(nodeID); err != nil {
		return fmt.Errorf("issue node certificate: node id: %w", err)
	}
	if len(hosts) == 0 {
		return errors.New("issue node certificate: no hosts: name the host other nodes dial (the raft advertise address)")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	notAfter := now.Add(nodeLifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:   randomSerial(),
		Subject:        pkix.Name{CommonName: nodeID},
		NotBefore:      now.Add(-clockSkew),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		SubjectKeyId:   keyID(&key.PublicKey),
		AuthorityKeyId: ca.Cert.SubjectKeyId,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("issue node certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{NodeKeyFile, keyPEM, 0o600},
		{NodeCertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{CACertFile, ca.certPEM, 0o644},
	}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// LoadTLS reads dir/ca.crt, dir/node.crt and dir/node.key and returns the
// mutual TLS configuration Config.TLS wants: this node's certificate on
// both sides, and peers verified against the cluster CA on both sides.
func LoadTLS(dir string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", filepath.Join(dir, CACertFile))
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, NodeCertFile), filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load node certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// WriteJoinBundle writes the CA certificate and key to path (0600) for an
// operator to carry to a new node, which then issues its own certificate
// with ReadJoinBundle and IssueNodeCert. It refuses to replace a file.
//
// The bundle holds the CA key: whoever has it can mint certificates the
// cluster trusts, so it must be handled like the vault identity and deleted
// once the new node is initialised. The alternative, a signing request
// carried to a node holding the CA key and a certificate carried back,
// keeps the key on one machine but costs the operator a second trip
// between air-gapped hosts.
func WriteJoinBundle(ca *CA, path string) error {
	if ca.key == nil {
		return errors.New("write join bundle: the CA key is not loaded")
	}
	keyPEM, err := encodeKey(ca.key)
	if err != nil {
		return err
	}
	bundle := append(append([]byte{}, ca.certPEM...), keyPEM...)
	if err := atomicfile.Create(path, bundle, 0o600); err != nil {
		return fmt.Errorf("write join bundle: %w", err)
	}
	return nil
}

// ReadJoinBundle reads a bundle written by WriteJoinBundle.
func ReadJoinBundle(path string) (*CA, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read join bundle: %w", err)
	}
	var certPEM, keyPEM []byte
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			certPEM = pem.EncodeToMemory(block)
		case "PRIVATE KEY":
			keyPEM = pem.EncodeToMemory(block)
		}
	}
	if certPEM == nil || keyPEM == nil {
		return nil, fmt.Errorf("join bundle %s: want a CERTIFICATE and a PRIVATE KEY block", path)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("join bundle %s: %w", path, err)
	}
	return ca, nil
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("CA certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("CA certificate is not a CA")
	}
	ca := &CA{Cert: cert, certPEM: certPEM}
	block, _ = pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("CA key is not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	ca.key = key
	return ca, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] &= 0x7f // positive
	return new(big.Int).SetBytes(b)
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return sum[:20]
}
