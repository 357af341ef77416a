// Package vault owns the cryptography of the credential vault: upstream
// credentials (Credential), the age X25519 identities that protect them
// (Identity, Keys), the key files those identities live in, and the sealed
// envelopes that storage and the raft log hold instead of plaintext.
//
// It must never write a plaintext credential anywhere: not to a file, a log
// line, an error string or a formatted value. It does no storage and no
// network I/O; callers store the sealed bytes Seal returns. The only files it
// writes are key files.
//
// # Credentials
//
// A Credential is one of four kinds: a bearer token, a set of HTTP headers, a
// set of environment variables for a stdio upstream, or an OAuth token set.
// ParseCredential reads one from what an operator pipes on stdin; HTTPHeaders
// and Environ present it to an upstream. Formatting a Credential with fmt,
// logging it with slog or marshaling it with encoding/json shows its kind and
// names only.
//
// # Envelope
//
// Seal returns a self-describing, versioned envelope:
//
//	offset  size  field
//	0       4     magic "MGVE"
//	4       1     version, 1
//	5       8     key id: first 8 bytes of SHA-256 of the sealing identity's
//	              age recipient string ("age1..."); Identity.ID is its hex
//	13      4     ciphertext length N, big-endian uint32
//	17      N     age v1 ciphertext (binary), one X25519 recipient stanza
//
// An envelope is at most MaxEnvelopeSize (1 MiB) bytes, and exactly 17+N:
// DecodeEnvelope rejects trailing bytes. The key id is not authenticated; it
// only selects which identity to try, and a wrong one makes age fail. The
// version byte decides how the rest is read, so a future format can be told
// apart (ErrUnknownVersion) from corruption (ErrCorrupt).
//
// The age plaintext of a version 1 envelope is a JSON object:
//
//	{"aad":{"org":"..","account":"..","route":".."},
//	 "kind":"bearer"|"headers"|"env"|"oauth",
//	 "token":"..",                        (bearer)
//	 "headers":{"Name":"value",..},       (headers)
//	 "env":{"NAME":"value",..},           (env)
//	 "oauth":{"access_token":"..","refresh_token":"..","token_type":"..",
//	          "expiry":"RFC 3339, or empty","scope":".."}}
//
// # Binding to a record
//
// age has no associated data, so the AAD (org, account, route) is sealed
// inside the plaintext and compared on Unseal: an envelope copied or moved to
// another record decrypts but is refused with ErrAADMismatch. age's
// ciphertext is authenticated (header MAC and STREAM AEAD), so the embedded
// AAD cannot be changed without the file key, which only the identity
// unwraps. An HMAC keyed from the identity would add sender authentication,
// i.e. stop someone holding only the public recipient from sealing a new
// credential; it is left out because anyone able to write sealed records to
// the raft log can already put credentials through the admin API, and the
// binding only has to stop existing envelopes from being replayed elsewhere.
//
// # Keys and rotation
//
// A key file is age's identity file format: comment lines, then one
// AGE-SECRET-KEY-1... line per identity, the current one first and retired
// ones after. It is mode 0600 and may be encrypted with a passphrase (age
// scrypt, armored), in which case `age -d` opens it too. LoadKeys refuses a
// file whose mode gives group or others any access.
//
// The key file holds the key-encryption keys (KEK), as Vault's barrier
// keyring does: they never leave the node. Credentials and signing keys are
// sealed with data keys (DEK), age X25519 identities too, which replicated
// storage holds only wrapped: WrapDataKey seals a data key to a KEK (age, one
// X25519 stanza, the plaintext naming the data key id, so a wrap cannot be
// swapped for another key's) and Keys.UnwrapDataKey opens it. NewKeyring
// assembles what a node seals and unseals with: the active data key seals;
// decrypt-only data keys and the KEKs open (records written before the
// keyring existed are sealed with the KEK itself, and keep opening).
//
// Data keys being X25519 identities, a data key rotation changes nothing in
// the envelope: its key id names the data key. Rotating the data key needs
// no file written; rotating the KEK (Keys.Rotate, ReplaceKeysFile) re-wraps
// the data keys only. An envelope sealed with a key no longer held fails
// with ErrUnknownKey, naming the key id; a data key wrapped only to KEKs a
// node lacks fails with ErrNoKEK.
//
// # Plaintext in memory
//
// Seal and Unseal clear the plaintext buffers they own once done, and build
// them so they never reallocate (which would leave copies behind). This is
// best effort: Go strings cannot be cleared, so the fields of a Credential
// stay in memory until collected, and age keeps one plaintext chunk in a
// buffer of its own.
package vault
