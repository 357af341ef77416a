package vault

import "errors"

// Sentinel errors callers branch on. Every error this package returns that
// matches one of them wraps it with context; none carries a secret.
var (
	// ErrCorrupt reports a sealed credential that does not decode or does
	// not authenticate: truncated, tampered with, or not an envelope at all.
	ErrCorrupt = errors.New("sealed credential is corrupt")

	// ErrUnknownKey reports a sealed credential whose key id names no
	// identity in the Keys used to open it. The wrapping error names the key
	// id and says what to do.
	ErrUnknownKey = errors.New("sealed credential is for a vault key this node does not hold")

	// ErrUnknownVersion reports an envelope written by a newer (or foreign)
	// format version.
	ErrUnknownVersion = errors.New("sealed credential has an unknown envelope version")

	// ErrAADMismatch reports a sealed credential that decrypts but was sealed
	// for another org, account or route: a record moved or swapped in storage.
	ErrAADMismatch = errors.New("sealed credential belongs to a different org, account or route")

	// ErrWrongPassphrase reports a passphrase that does not open a
	// passphrase-protected key file.
	ErrWrongPassphrase = errors.New("wrong passphrase for the vault key file")

	// ErrKeyFileMissing reports a key file that does not exist.
	ErrKeyFileMissing = errors.New("vault key file not found: run `mcpgw init` or pass --vault-key")

	// ErrKeyFileExists reports a refusal to overwrite an existing key file.
	ErrKeyFileExists = errors.New("vault key file already exists; refusing to overwrite it")

	// ErrKeyFileMode reports a key file whose mode gives group or others any
	// access.
	ErrKeyFileMode = errors.New("vault key file permissions are too open: group or others have access")

	// ErrKeyFileInvalid reports a key file whose contents are not a list of
	// age X25519 identities (after unwrapping the passphrase, if any).
	ErrKeyFileInvalid = errors.New("vault key file is invalid")
)
