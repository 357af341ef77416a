package vault

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSealUnsealRoundTrip(t *testing.T) {
	keys := testKeys(t)
	for _, s := range sampleCredentials() {
		t.Run(s.name, func(t *testing.T) {
			sealed, err := keys.Seal(s.cred, testAAD)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			got, err := keys.Unseal(sealed, testAAD)
			if err != nil {
				t.Fatalf("Unseal: %v", err)
			}
			if diff := cmp.Diff(s.cred, got); diff != "" {
				t.Fatalf("Unseal mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	keys := testKeys(t)
	c := sampleCredentials()[0].cred
	a, err := keys.Seal(c, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	b, err := keys.Seal(c, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same credential are identical")
	}
}

func TestEnvelopeLayout(t *testing.T) {
	keys := testKeys(t)
	sealed, err := keys.Seal(sampleCredentials()[0].cred, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(sealed[:4]), "MGVE"; got != want {
		t.Fatalf("magic=%q, want %q", got, want)
	}
	if got, want := sealed[4], byte(1); got != want {
		t.Fatalf("version=%d, want %d", got, want)
	}
	env, err := DecodeEnvelope(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := env.KeyID, "19aa58571131f8b4"; got != want {
		t.Fatalf("KeyID=%q, want %q", got, want)
	}
	if got, want := env.Version, uint8(1); got != want {
		t.Fatalf("Version=%d, want %d", got, want)
	}
	if got, want := int(binary.BigEndian.Uint32(sealed[13:17])), len(sealed)-17; got != want {
		t.Fatalf("length field=%d, want %d", got, want)
	}
	if got, want := string(env.Ciphertext[:22]), "age-encryption.org/v1\n"; got != want {
		t.Fatalf("ciphertext starts %q, want %q", got, want)
	}
}

func TestUnsealAADMismatch(t *testing.T) {
	keys := testKeys(t)
	sealed, err := keys.Seal(sampleCredentials()[1].cred, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	for name, aad := range map[string]AAD{
		"org":     {Org: "org_43", Account: testAAD.Account, Route: testAAD.Route},
		"account": {Org: testAAD.Org, Account: "acct_8", Route: testAAD.Route},
		"route":   {Org: testAAD.Org, Account: testAAD.Account, Route: "github"},
		"zero":    {},
		// Field boundaries are part of the binding, not just the bytes.
		"shifted": {Org: "org_42acct_7", Account: "", Route: "linear"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := keys.Unseal(sealed, aad)
			if !errors.Is(err, ErrAADMismatch) {
				t.Fatalf("Unseal error=%v, want ErrAADMismatch", err)
			}
			if got.Kind != "" || got.Headers != nil {
				t.Fatalf("Unseal returned %v with an error, want zero Credential", got)
			}
		})
	}
}

func TestUnsealTampered(t *testing.T) {
	keys := testKeys(t)
	sealed, err := keys.Seal(sampleCredentials()[0].cred, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	// Every single-bit flip in the ciphertext must be detected.
	for i := envelopeHdrLen; i < len(sealed); i++ {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		if _, err := keys.Unseal(b, testAAD); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at byte %d: Unseal error=%v, want ErrCorrupt", i, err)
		}
	}

	tests := []struct {
		name    string
		edit    func([]byte) []byte
		want    error
		wantMsg string
	}{
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, ErrCorrupt,
			"sealed credential is corrupt: not a vault envelope (bad magic)"},
		{"version", func(b []byte) []byte { b[4] = 2; return b }, ErrUnknownVersion,
			"sealed credential has an unknown envelope version: version 2 (this build reads 1)"},
		{"length field", func(b []byte) []byte { b[16]++; return b }, ErrCorrupt, ""},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, ErrCorrupt, ""},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, ErrCorrupt, ""},
		{"truncated header", func(b []byte) []byte { return b[:10] }, ErrCorrupt,
			"sealed credential is corrupt: truncated header"},
		{"empty", func(b []byte) []byte { return nil }, ErrCorrupt, ""},
		{"key id of retired key", func(b []byte) []byte {
			copy(b[5:13], keys.all[1].rawID[:])
			return b
		}, ErrCorrupt, "sealed credential is corrupt: age header does not open with key 42c99b73a0acf5e5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := keys.Unseal(tt.edit(bytes.Clone(sealed)), testAAD)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unseal error=%v, want %v", err, tt.want)
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Fatalf("Unseal error=%q, want %q", err, tt.wantMsg)
			}
		})
	}
}

func TestUnsealUnknownKey(t *testing.T) {
	other := NewKeys(mustGenerate(t))
	sealed, err := other.Seal(sampleCredentials()[0].cred, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	_, err = testKeys(t).Unseal(sealed, testAAD)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Unseal error=%v, want ErrUnknownKey", err)
	}
	want := "sealed credential is for a vault key this node does not hold (key id " + other.Current().ID() +
		"): run `mcpgw vault status` against this node: if the key is a data key it cannot open, copy the current vault key file to it; otherwise restore the key file that sealed it, or put the credential again"
	if got := err.Error(); got != want {
		t.Fatalf("Unseal error=%q, want %q", got, want)
	}
}

func TestUnsealWithRetiredKey(t *testing.T) {
	keys := testKeys(t)
	retiredOnly := NewKeys(keys.Retired()[0])
	sealed, err := retiredOnly.Seal(sampleCredentials()[0].cred, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Unseal(sealed, testAAD); err != nil {
		t.Fatalf("Unseal with the key set retiring the sealing key: %v", err)
	}
}

func TestReseal(t *testing.T) {
	oldID, newID := mustGenerate(t), mustGenerate(t)
	oldKeys := NewKeys(oldID)
	rotating := oldKeys.Rotate(newID)
	newKeys := NewKeys(newID)

	if got, want := rotating.Current().ID(), newID.ID(); got != want {
		t.Fatalf("Rotate: Current()=%s, want %s", got, want)
	}
	if got, want := len(rotating.Retired()), 1; got != want {
		t.Fatalf("Rotate: len(Retired())=%d, want %d", got, want)
	}

	for _, s := range sampleCredentials() {
		t.Run(s.name, func(t *testing.T) {
			sealed, err := oldKeys.Seal(s.cred, testAAD)
			if err != nil {
				t.Fatal(err)
			}
			resealed, err := rotating.Reseal(sealed, testAAD, newKeys)
			if err != nil {
				t.Fatalf("Reseal: %v", err)
			}
			if _, err := oldKeys.Unseal(resealed, testAAD); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("old keys Unseal(resealed) error=%v, want ErrUnknownKey", err)
			}
			if _, err := newKeys.Unseal(sealed, testAAD); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("new keys Unseal(original) error=%v, want ErrUnknownKey", err)
			}
			got, err := newKeys.Unseal(resealed, testAAD)
			if err != nil {
				t.Fatalf("new keys Unseal(resealed): %v", err)
			}
			if diff := cmp.Diff(s.cred, got); diff != "" {
				t.Fatalf("resealed credential mismatch (-want +got):\n%s", diff)
			}
			if _, err := rotating.Reseal(sealed, AAD{Org: "other"}, newKeys); !errors.Is(err, ErrAADMismatch) {
				t.Fatalf("Reseal with another AAD error=%v, want ErrAADMismatch", err)
			}
		})
	}
}

func TestNewKeysDropsDuplicates(t *testing.T) {
	a, b := mustGenerate(t), mustGenerate(t)
	k := NewKeys(a, b, a, b)
	if got, want := len(k.Retired()), 1; got != want {
		t.Fatalf("len(Retired())=%d, want %d", got, want)
	}
	if got, want := k.Retired()[0].ID(), b.ID(); got != want {
		t.Fatalf("Retired()[0]=%s, want %s", got, want)
	}
}

func TestSealRejects(t *testing.T) {
	keys := testKeys(t)
	tests := []struct {
		name string
		cred Credential
		aad  AAD
		want string
	}{
		{"invalid credential", Credential{Kind: KindBearer, Token: "a b"}, testAAD,
			"seal: invalid bearer credential: token has a space, control or non-ASCII byte at offset 1"},
		{"aad not utf8", Credential{Kind: KindBearer, Token: "a"}, AAD{Org: "\xff"}, "seal: aad org is not valid UTF-8"},
		{"aad too long", Credential{Kind: KindBearer, Token: "a"}, AAD{Route: strings.Repeat("r", 1025)}, "seal: aad route is longer than 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := keys.Seal(tt.cred, tt.aad)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Seal error=%v, want %q", err, tt.want)
			}
		})
	}
}

func TestSealLargestCredential(t *testing.T) {
	keys := testKeys(t)
	// Control bytes escape to six bytes each: the worst case for size.
	v := strings.Repeat("\x01", MaxCredentialSize-1)
	c := Credential{Kind: KindEnv, Env: map[string]string{"A": v}}
	sealed, err := keys.Seal(c, testAAD)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if len(sealed) > MaxEnvelopeSize {
		t.Fatalf("len(sealed)=%d, over MaxEnvelopeSize", len(sealed))
	}
	got, err := keys.Unseal(sealed, testAAD)
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if got.Env["A"] != v {
		t.Fatal("round trip changed the value")
	}
}

// TestPlaintextCap checks that the plaintext buffer is sized once (so no
// copy of a secret is left behind by a reallocation) and is valid JSON that
// encoding/json reads back to the same record.
func TestPlaintextCap(t *testing.T) {
	creds := sampleCredentials()
	creds = append(creds, struct {
		name string
		cred Credential
	}{"escapes", Credential{Kind: KindEnv, Env: map[string]string{"A": "\x00\x01\"\\\n\r\t\x1f<>&\u2028é"}}})
	aad := AAD{Org: "\"\\\x01", Account: "é", Route: ""}
	for _, s := range creds {
		t.Run(s.name, func(t *testing.T) {
			capacity := plaintextCap(s.cred, aad)
			pt := appendPlaintext(make([]byte, 0, capacity), s.cred, aad)
			if cap(pt) != capacity {
				t.Fatalf("plaintext buffer grew from %d to %d", capacity, cap(pt))
			}
			var rec sealedRecord
			if err := json.Unmarshal(pt, &rec); err != nil {
				t.Fatalf("plaintext is not JSON: %v", err)
			}
			if got, want := rec.AAD, sealedAAD(aad); got != want {
				t.Fatalf("AAD=%+v, want %+v", got, want)
			}
			got, err := rec.credential()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s.cred, got); diff != "" {
				t.Fatalf("decoded plaintext mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSealedRecordOnDiskHasNoPlaintext stores sealed records the way a
// caller would and scans the file for any secret.
func TestSealedRecordOnDiskHasNoPlaintext(t *testing.T) {
	keys := testKeys(t)
	var file []byte
	for _, s := range sampleCredentials() {
		sealed, err := keys.Seal(s.cred, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		file = append(file, sealed...)
	}
	path := filepath.Join(t.TempDir(), "records.bin")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	needles := append([]string{`"token"`, `"access_token"`, "Authorization", "API_KEY", testAAD.Org}, allSecrets...)
	for _, n := range needles {
		if bytes.Contains(onDisk, []byte(n)) {
			t.Errorf("sealed records on disk contain %q", n)
		}
	}
}

func TestSealConcurrent(t *testing.T) {
	keys := testKeys(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for _, s := range sampleCredentials() {
				sealed, err := keys.Seal(s.cred, testAAD)
				if err != nil {
					errs <- err
					return
				}
				if _, err := keys.Unseal(sealed, testAAD); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDecodeEnvelope(t *testing.T) {
	valid := func() []byte {
		b := appendEnvelopeHeader(nil, [keyIDLen]byte{1, 2, 3, 4, 5, 6, 7, 8}, len(ageIntro)+3)
		return append(append(b, ageIntro...), "abc"...)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"valid", valid(), ""},
		{"empty", nil, "sealed credential is corrupt: not a vault envelope (bad magic)"},
		{"magic only", []byte("MGVE"), "sealed credential is corrupt: truncated header"},
		{"future version", []byte("MGVE\x02"), "sealed credential has an unknown envelope version: version 2 (this build reads 1)"},
		{"version zero", []byte("MGVE\x00rest"), "sealed credential has an unknown envelope version: version 0 (this build reads 1)"},
		{"short length", valid()[:len(valid())-1], "sealed credential is corrupt: ciphertext length 25 does not match the 24 bytes present"},
		{"not age", func() []byte {
			b := appendEnvelopeHeader(nil, [keyIDLen]byte{}, 3)
			return append(b, "abc"...)
		}(), "sealed credential is corrupt: ciphertext is not age v1"},
		{"too large", make([]byte, MaxEnvelopeSize+1), "sealed credential is corrupt: 1048577 bytes is over the 1048576 byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := DecodeEnvelope(tt.in)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Fatalf("DecodeEnvelope error=%q, want %q", got, tt.want)
			}
			if err == nil {
				if got, want := env.KeyID, "0102030405060708"; got != want {
					t.Fatalf("KeyID=%q, want %q", got, want)
				}
				if got, want := string(env.Ciphertext), ageIntro+"abc"; got != want {
					t.Fatalf("Ciphertext=%q, want %q", got, want)
				}
			}
		})
	}
}

func BenchmarkSeal(b *testing.B) {
	keys := testKeys(b)
	c := Credential{Kind: KindBearer, Token: secretBearer}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := keys.Seal(c, testAAD); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnseal(b *testing.B) {
	keys := testKeys(b)
	sealed, err := keys.Seal(Credential{Kind: KindBearer, Token: secretBearer}, testAAD)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := keys.Unseal(sealed, testAAD); err != nil {
			b.Fatal(err)
		}
	}
}
