package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/mcpgw/mcpgw/internal/atomicfile"
)

// maxKeyFileSize bounds what LoadKeys reads; a key file holds a few keys of
// about 75 bytes each.
const maxKeyFileSize = 64 << 10

// scryptWorkFactor is the scrypt cost (log2 N) for passphrase-protected key
// files: age's default, about a second and 256 MiB. Tests lower it.
var scryptWorkFactor = 18

// WriteKeyFile creates a key file at path holding id, unencrypted, readable by
// the owner only. See WriteKeysFile.
func WriteKeyFile(path string, id *Identity) error {
	return WriteKeysFile(path, NewKeys(id), nil)
}

// WriteKeyFilePassphrase creates a key file at path holding id, encrypted with
// passphrase (age scrypt, ASCII-armored, so `age -d` opens it too). See
// WriteKeysFile.
func WriteKeyFilePassphrase(path string, id *Identity, passphrase []byte) error {
	if len(passphrase) == 0 {
		return fmt.Errorf("write vault key file %s: empty passphrase", path)
	}
	return WriteKeysFile(path, NewKeys(id), passphrase)
}

// WriteKeysFile creates a key file at path holding every identity of k,
// current first, in age's identity file format. With a non-empty passphrase
// the file is encrypted with it. The parent directory is created with mode
// 0700 if missing; the file gets mode 0600, is written to a temporary file,
// synced and then linked into place, so it appears complete or not at all. It
// refuses to replace an existing file (ErrKeyFileExists).
func WriteKeysFile(path string, k *Keys, passphrase []byte) error {
	if err := writeKeysFile(path, k, passphrase, false); err != nil {
		return fmt.Errorf("write vault key file %s: %w", path, err)
	}
	return nil
}

// ReplaceKeysFile atomically replaces the existing key file at path with one
// holding k, as key rotation needs: the new file is complete before the old one
// goes away. It fails with ErrKeyFileMissing if there is no file to replace.
func ReplaceKeysFile(path string, k *Keys, passphrase []byte) error {
	if err := writeKeysFile(path, k, passphrase, true); err != nil {
		return fmt.Errorf("replace vault key file %s: %w", path, err)
	}
	return nil
}

func writeKeysFile(path string, k *Keys, passphrase []byte, replace bool) error {
	text := encodeKeys(k)
	defer clear(text)
	data := text
	if len(passphrase) > 0 {
		var err error
		if data, err = encryptWithPassphrase(text, passphrase); err != nil {
			return err
		}
	}
	return writeFileAtomic(path, data, replace)
}

// encodeKeys writes k in age's identity file format, which also ignores the
// comment lines.
func encodeKeys(k *Keys) []byte {
	// Sized up front: growing would leave copies of earlier keys in freed
	// memory, out of reach of clear.
	b := make([]byte, 0, keysFileCap(len(k.all)))
	b = append(b, "# mcpgw vault keys: keep this file secret (mode 0600).\n"...)
	b = append(b, "# The first key seals new credentials; the others only open older ones.\n"...)
	for i, id := range k.all {
		state := "current"
		if i > 0 {
			state = "retired"
		}
		b = fmt.Appendf(b, "# key id: %s (%s)\n# public key: %s\n", id.id, state, id.recipient)
		b = append(b, id.x.String()...)
		b = append(b, '\n')
	}
	return b
}

// keysFileCap bounds the length of encodeKeys for n identities: two header
// lines of about 130 bytes, then per identity two comment lines of about 110
// bytes and a 74 byte key.
func keysFileCap(n int) int { return 256 + 256*n }

func encryptWithPassphrase(text, passphrase []byte) ([]byte, error) {
	r, err := age.NewScryptRecipient(string(passphrase))
	if err != nil {
		return nil, err
	}
	r.SetWorkFactor(scryptWorkFactor)
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(text); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFileAtomic(path string, data []byte, replace bool) error {
	if !replace {
		if err := atomicfile.Create(path, data, 0o600); err != nil {
			if errors.Is(err, atomicfile.ErrExists) {
				return ErrKeyFileExists
			}
			return err
		}
		return nil
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return ErrKeyFileMissing
	}
	return atomicfile.Write(path, data, 0o600)
}

// LoadKeyFile reads the key file at path and returns its current identity.
// See LoadKeys.
func LoadKeyFile(path string, passphrase func() ([]byte, error)) (*Identity, error) {
	k, err := LoadKeys(path, passphrase)
	if err != nil {
		return nil, err
	}
	return k.Current(), nil
}

// LoadKeys reads the key file at path: age X25519 identities, one per line,
// current first and retired after, optionally encrypted with a passphrase
// (binary or armored age scrypt). For an encrypted file it calls passphrase
// once and clears the returned slice after use. It refuses a file whose mode
// gives group or others any access (ErrKeyFileMode), and reports
// ErrKeyFileMissing, ErrWrongPassphrase or ErrKeyFileInvalid.
func LoadKeys(path string, passphrase func() ([]byte, error)) (*Keys, error) {
	k, err := loadKeys(path, passphrase)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return k, nil
}

func loadKeys(path string, passphrase func() ([]byte, error)) (*Keys, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrKeyFileMissing
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Stat the open file, not the path, so the checks apply to what is read.
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrKeyFileInvalid)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w (mode %04o); run chmod 600 %s", ErrKeyFileMode, perm, path)
	}
	if fi.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrKeyFileInvalid, maxKeyFileSize)
	}
	data := make([]byte, maxKeyFileSize+1)
	defer clear(data)
	n, err := io.ReadFull(f, data)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	if n > maxKeyFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrKeyFileInvalid, maxKeyFileSize)
	}
	text := data[:n]
	if src, ok := passphraseProtected(text); ok {
		pt, err := decryptWithPassphrase(src, passphrase)
		if err != nil {
			return nil, err
		}
		defer clear(pt)
		text = pt
	}
	return parseKeys(text)
}

// passphraseProtected reports whether data is an age file rather than an
// identity list, and returns a reader for its binary form.
func passphraseProtected(data []byte) (io.Reader, bool) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	switch {
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN AGE ENCRYPTED FILE-----")):
		return armor.NewReader(bytes.NewReader(data)), true
	case bytes.HasPrefix(data, []byte("age-encryption.org/")):
		return bytes.NewReader(data), true
	}
	return nil, false
}

func decryptWithPassphrase(src io.Reader, passphrase func() ([]byte, error)) ([]byte, error) {
	if passphrase == nil {
		return nil, errors.New("the key file is passphrase-protected and no passphrase was given")
	}
	pass, err := passphrase()
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	defer clear(pass)
	if len(pass) == 0 {
		return nil, fmt.Errorf("%w: empty passphrase", ErrWrongPassphrase)
	}
	sid, err := age.NewScryptIdentity(string(pass))
	if err != nil {
		return nil, err
	}
	r, err := age.Decrypt(src, sid)
	if nomatch := (*age.NoIdentityMatchError)(nil); errors.As(err, &nomatch) {
		if slices.Contains(nomatch.StanzaTypes, "scrypt") {
			return nil, ErrWrongPassphrase
		}
		return nil, fmt.Errorf("%w: encrypted, but not with a passphrase", ErrKeyFileInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFileInvalid, err)
	}
	// The plaintext is shorter than the file, so this buffer never grows.
	pt := make([]byte, maxKeyFileSize)
	n, err := readAll(r, pt)
	if err != nil {
		clear(pt)
		return nil, fmt.Errorf("%w: cannot decrypt: %v", ErrKeyFileInvalid, err)
	}
	return pt[:n], nil
}

func parseKeys(text []byte) (*Keys, error) {
	ids, err := age.ParseIdentities(bytes.NewReader(text))
	if err != nil {
		// age's parse errors name a line number, never key material.
		return nil, fmt.Errorf("%w: %v", ErrKeyFileInvalid, err)
	}
	all := make([]*Identity, 0, len(ids))
	for i, id := range ids {
		x, ok := id.(*age.X25519Identity)
		if !ok {
			return nil, fmt.Errorf("%w: key %d is not an age X25519 identity", ErrKeyFileInvalid, i+1)
		}
		all = append(all, newIdentity(x))
	}
	return NewKeys(all[0], all[1:]...), nil
}
