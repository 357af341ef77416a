package vault

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Envelope layout, version 1 (see the package documentation):
//
//	offset  size  field
//	0       4     magic "MGVE"
//	4       1     version, 1
//	5       8     key id of the sealing identity
//	13      4     ciphertext length N, big-endian
//	17      N     age v1 binary ciphertext, one X25519 recipient stanza
const (
	envelopeMagic  = "MGVE"
	envelopeV1     = 1
	envelopeHdrLen = 4 + 1 + keyIDLen + 4
	ageIntro       = "age-encryption.org/v1\n"
)

// MaxEnvelopeSize bounds a sealed credential. DecodeEnvelope rejects anything
// larger before looking further.
const MaxEnvelopeSize = 1 << 20

// Envelope is the decoded, still encrypted form of a sealed credential.
type Envelope struct {
	Version    uint8
	KeyID      string // hex, as Identity.ID
	Ciphertext []byte // age ciphertext; aliases the decoded bytes

	rawKeyID [keyIDLen]byte
}

// DecodeEnvelope parses the envelope header of a sealed credential without
// decrypting it. It accepts exactly one complete envelope: no trailing bytes,
// nothing over MaxEnvelopeSize. Errors wrap ErrCorrupt, or ErrUnknownVersion
// for a well-formed header of another version.
func DecodeEnvelope(b []byte) (Envelope, error) {
	if len(b) > MaxEnvelopeSize {
		return Envelope{}, fmt.Errorf("%w: %d bytes is over the %d byte limit", ErrCorrupt, len(b), MaxEnvelopeSize)
	}
	if !bytes.HasPrefix(b, []byte(envelopeMagic)) {
		return Envelope{}, fmt.Errorf("%w: not a vault envelope (bad magic)", ErrCorrupt)
	}
	// The version decides the rest of the header, so read it first.
	if len(b) > len(envelopeMagic) && b[len(envelopeMagic)] != envelopeV1 {
		return Envelope{}, fmt.Errorf("%w: version %d (this build reads %d)", ErrUnknownVersion, b[len(envelopeMagic)], envelopeV1)
	}
	if len(b) < envelopeHdrLen {
		return Envelope{}, fmt.Errorf("%w: truncated header", ErrCorrupt)
	}
	e := Envelope{Version: envelopeV1}
	copy(e.rawKeyID[:], b[5:5+keyIDLen])
	e.KeyID = hex.EncodeToString(e.rawKeyID[:])
	n := binary.BigEndian.Uint32(b[5+keyIDLen : envelopeHdrLen])
	if uint64(n) != uint64(len(b)-envelopeHdrLen) {
		return Envelope{}, fmt.Errorf("%w: ciphertext length %d does not match the %d bytes present", ErrCorrupt, n, len(b)-envelopeHdrLen)
	}
	e.Ciphertext = b[envelopeHdrLen:]
	if !bytes.HasPrefix(e.Ciphertext, []byte(ageIntro)) {
		return Envelope{}, fmt.Errorf("%w: ciphertext is not age v1", ErrCorrupt)
	}
	return e, nil
}

// appendEnvelopeHeader appends a version 1 header for a ciphertext of n bytes.
func appendEnvelopeHeader(dst []byte, keyID [keyIDLen]byte, n int) []byte {
	dst = append(dst, envelopeMagic...)
	dst = append(dst, envelopeV1)
	dst = append(dst, keyID[:]...)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}
