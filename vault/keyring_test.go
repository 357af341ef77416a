package vault

import (
	"bytes"
	"errors"
	"testing"
)

// TestWrapDataKey: a wrapped data key opens only with the key-encryption
// key it was wrapped to, only as the key id it was wrapped as, and never
// holds the data key in the clear.
func TestWrapDataKey(t *testing.T) {
	kek := NewKeys(mustGenerate(t))
	dek := mustGenerate(t)
	w, err := WrapDataKey(dek, kek.Current())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(w, []byte("AGE-SECRET-KEY-")) {
		t.Fatal("the wrapped data key holds an age secret key in the clear")
	}
	got, err := kek.UnwrapDataKey(dek.ID(), map[string][]byte{kek.Current().ID(): w})
	if err != nil || got.ID() != dek.ID() {
		t.Fatalf("UnwrapDataKey = %v, %v; want %s", got, err, dek.ID())
	}
	// What the data key seals, the unwrapped one opens.
	sealed, err := NewKeys(dek).Seal(Credential{Kind: KindBearer, Token: "tok"}, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := NewKeyring(got, nil, kek).Unseal(sealed, testAAD); err != nil || c.Token != "tok" {
		t.Fatalf("unseal with the unwrapped key: %v", err)
	}

	other := mustGenerate(t)
	tests := []struct {
		name  string
		id    string
		wraps map[string][]byte
		want  error
	}{
		{"other key-encryption key", dek.ID(), map[string][]byte{other.ID(): w}, ErrNoKEK},
		{"no wraps", dek.ID(), nil, ErrNoKEK},
		{"wrap of another key", other.ID(), map[string][]byte{kek.Current().ID(): w}, ErrCorrupt},
		{"flipped byte", dek.ID(), map[string][]byte{kek.Current().ID(): func() []byte { c := bytes.Clone(w); c[len(c)-1] ^= 1; return c }()}, ErrCorrupt},
		{"truncated", dek.ID(), map[string][]byte{kek.Current().ID(): w[:len(w)-3]}, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kek.UnwrapDataKey(tc.id, tc.wraps); !errors.Is(err, tc.want) {
				t.Fatalf("UnwrapDataKey: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestNewKeyring: the active data key seals; decrypt-only data keys and
// the key-encryption keys (which sealed records before the keyring) open.
func TestNewKeyring(t *testing.T) {
	kek := NewKeys(mustGenerate(t))
	active, old := mustGenerate(t), mustGenerate(t)
	k := NewKeyring(active, []*Identity{old}, kek)
	if got, want := k.IDs(), []string{active.ID(), old.ID(), kek.Current().ID()}; !equalStrings(got, want) {
		t.Fatalf("IDs() = %v, want %v", got, want)
	}
	if k := NewKeyring(nil, nil, kek); k.Current().ID() != kek.Current().ID() {
		t.Fatalf("without a keyring %s seals, want the key-encryption key", k.Current().ID())
	}
	for _, sealer := range []*Keys{kek, NewKeys(old)} {
		b, err := sealer.Seal(Credential{Kind: KindBearer, Token: "tok"}, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Unseal(b, testAAD); err != nil {
			t.Fatalf("record sealed with %s does not open: %v", sealer.Current().ID(), err)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzUnwrapDataKey: a wrapped data key from replicated storage, however
// mangled, either opens to the data key it names or fails with ErrCorrupt.
func FuzzUnwrapDataKey(f *testing.F) {
	keys := testKeys(f)
	dekID := keys.Retired()[0].ID()
	f.Add([]byte(nil))
	f.Add([]byte(ageIntro))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := keys.UnwrapDataKey(dekID, map[string][]byte{keys.Current().ID(): b})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("UnwrapDataKey error=%v, want ErrCorrupt", err)
			}
			return
		}
		if id.ID() != dekID {
			t.Fatalf("unwrapped %s, want %s", id.ID(), dekID)
		}
	})
}

// TestUpdateKeyringFuzzSeeds rewrites testdata/fuzz/FuzzUnwrapDataKey with
// `go test -run TestUpdateKeyringFuzzSeeds -update-fuzz-seeds ./vault`.
func TestUpdateKeyringFuzzSeeds(t *testing.T) {
	if !*updateFuzzSeeds {
		t.Skip("run with -update-fuzz-seeds to rewrite the seed corpora")
	}
	keys := testKeys(t)
	w, err := WrapDataKey(keys.Retired()[0], keys.Current())
	if err != nil {
		t.Fatal(err)
	}
	otherKEK, err := WrapDataKey(keys.Retired()[0], mustGenerate(t))
	if err != nil {
		t.Fatal(err)
	}
	otherDEK, err := WrapDataKey(mustGenerate(t), keys.Current())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"valid":           w,
		"other-kek":       otherKEK,
		"other-data-key":  otherDEK,
		"truncated":       w[:len(w)-5],
		"flipped-payload": func() []byte { c := bytes.Clone(w); c[len(c)-1] ^= 1; return c }(),
		"trailing-byte":   append(bytes.Clone(w), 0),
	} {
		writeSeed(t, "FuzzUnwrapDataKey", name, b)
	}
}
