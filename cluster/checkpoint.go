package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"

	"github.com/mcpgw/mcpgw/storage"
)

// ErrBadCheckpoint is what CheckpointError values match with errors.Is.
var ErrBadCheckpoint = errors.New("audit checkpoint does not verify")

// checkpointMessage is what a checkpoint's signature covers. The prefix
// keeps a checkpoint signature from being valid for anything else the node
// key signs (TLS handshakes sign with their own context strings).
func checkpointMessage(node string, seq uint64, hash string) []byte {
	return []byte("mcpgw audit checkpoint v1\n" + node + "\n" + strconv.FormatUint(seq, 10) + "\n" + hash)
}

// SignCheckpoint returns the checkpoint of node's audit chain head (seq,
// hash), signed with the key of cert, the node's cluster certificate.
func SignCheckpoint(cert tls.Certificate, node string, seq uint64, hash string) (storage.AuditCheckpoint, error) {
	if len(cert.Certificate) == 0 {
		return storage.AuditCheckpoint{}, errors.New("sign audit checkpoint: the node has no cluster certificate")
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return storage.AuditCheckpoint{}, errors.New("sign audit checkpoint: the cluster key cannot sign")
	}
	msg := checkpointMessage(node, seq, hash)
	var sig []byte
	var err error
	switch signer.(type) {
	case ed25519.PrivateKey:
		sig, err = signer.Sign(rand.Reader, msg, crypto.Hash(0))
	default:
		d := sha256.Sum256(msg)
		sig, err = signer.Sign(rand.Reader, d[:], crypto.SHA256)
	}
	if err != nil {
		return storage.AuditCheckpoint{}, fmt.Errorf("sign audit checkpoint: %w", err)
	}
	return storage.AuditCheckpoint{Node: node, Seq: seq, Hash: hash, Cert: cert.Certificate[0], Sig: sig}, nil
}

// VerifyCheckpoint checks that cp is signed by the key of a certificate
// the cluster CA (roots) issued to cp.Node. Expiry is not checked: a
// checkpoint stays evidence after the certificate that signed it expires.
func VerifyCheckpoint(cp storage.AuditCheckpoint, roots *x509.CertPool) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: checkpoint of node %s at seq %d: %s", ErrBadCheckpoint, cp.Node, cp.Seq, why)
	}
	cert, err := x509.ParseCertificate(cp.Cert)
	if err != nil {
		return bad("its certificate does not parse")
	}
	if cert.Subject.CommonName != cp.Node {
		return bad(fmt.Sprintf("its certificate is issued to %q", cert.Subject.CommonName))
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: cert.NotBefore, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return bad("its certificate is not from this cluster's CA")
	}
	msg := checkpointMessage(cp.Node, cp.Seq, cp.Hash)
	ok := false
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		ok = ecdsa.VerifyASN1(pub, d[:], cp.Sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, msg, cp.Sig)
	}
	if !ok {
		return bad("the signature does not match")
	}
	return nil
}
