package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"filippo.io/age"
)

func skipOnWindows(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not enforced on windows")
	}
}

func passphrase(p string) func() ([]byte, error) {
	return func() ([]byte, error) { return []byte(p), nil }
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// assertNoTempFiles checks that a write left nothing but the key file behind.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Fatalf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}

func TestKeyFilePlain(t *testing.T) {
	skipOnWindows(t)
	dir := filepath.Join(t.TempDir(), "etc", "mcpgw")
	path := filepath.Join(dir, "vault.key")
	id := mustGenerate(t)
	if err := WriteKeyFile(path, id); err != nil {
		t.Fatalf("WriteKeyFile: %v", err)
	}
	if got, want := mode(t, path), os.FileMode(0o600); got != want {
		t.Fatalf("key file mode=%04o, want %04o", got, want)
	}
	if got, want := mode(t, dir), os.FileMode(0o700); got != want {
		t.Fatalf("created dir mode=%04o, want %04o", got, want)
	}
	assertNoTempFiles(t, dir)

	// The file is a plain age identity file.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("age.ParseIdentities: %v", err)
	}
	if got, want := len(ids), 1; got != want {
		t.Fatalf("identities in file=%d, want %d", got, want)
	}
	if !bytes.Contains(data, []byte("# public key: "+id.Recipient()+"\n")) {
		t.Fatalf("key file lacks the public key comment:\n%s", bytes.ReplaceAll(data, []byte(id.x.String()), []byte("<secret>")))
	}

	got, err := LoadKeyFile(path, nil)
	if err != nil {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	if got.ID() != id.ID() {
		t.Fatalf("loaded ID()=%s, want %s", got.ID(), id.ID())
	}
	// The loaded identity opens what the original sealed.
	sealed, err := NewKeys(id).Seal(Credential{Kind: KindBearer, Token: "t"}, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeys(got).Unseal(sealed, testAAD); err != nil {
		t.Fatalf("Unseal with loaded identity: %v", err)
	}
}

func TestKeyFilePassphrase(t *testing.T) {
	skipOnWindows(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "vault.key")
	id := mustGenerate(t)
	if err := WriteKeyFilePassphrase(path, id, []byte("correct horse")); err != nil {
		t.Fatalf("WriteKeyFilePassphrase: %v", err)
	}
	if got, want := mode(t, path), os.FileMode(0o600); got != want {
		t.Fatalf("key file mode=%04o, want %04o", got, want)
	}
	assertNoTempFiles(t, dir)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN AGE ENCRYPTED FILE-----\n")) {
		t.Fatalf("passphrase key file is not armored age: %q", data[:min(len(data), 40)])
	}
	if bytes.Contains(data, []byte("AGE-SECRET-KEY")) || bytes.Contains(data, []byte(id.x.String())) {
		t.Fatal("passphrase key file contains the private key in the clear")
	}

	t.Run("right passphrase", func(t *testing.T) {
		var given []byte
		got, err := LoadKeyFile(path, func() ([]byte, error) {
			given = []byte("correct horse")
			return given, nil
		})
		if err != nil {
			t.Fatalf("LoadKeyFile: %v", err)
		}
		if got.ID() != id.ID() {
			t.Fatalf("loaded ID()=%s, want %s", got.ID(), id.ID())
		}
		if !bytes.Equal(given, make([]byte, len(given))) {
			t.Fatal("passphrase slice not cleared after use")
		}
	})
	t.Run("wrong passphrase", func(t *testing.T) {
		_, err := LoadKeyFile(path, passphrase("battery staple"))
		if !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("LoadKeyFile error=%v, want ErrWrongPassphrase", err)
		}
		if got, want := err.Error(), "load "+path+": wrong passphrase for the vault key file"; got != want {
			t.Fatalf("LoadKeyFile error=%q, want %q", got, want)
		}
	})
	t.Run("empty passphrase", func(t *testing.T) {
		if _, err := LoadKeyFile(path, passphrase("")); !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("LoadKeyFile error=%v, want ErrWrongPassphrase", err)
		}
	})
	t.Run("no passphrase source", func(t *testing.T) {
		_, err := LoadKeyFile(path, nil)
		if got, want := err.Error(), "load "+path+": the key file is passphrase-protected and no passphrase was given"; got != want {
			t.Fatalf("LoadKeyFile error=%q, want %q", got, want)
		}
	})
	t.Run("passphrase source fails", func(t *testing.T) {
		errTTY := errors.New("no terminal")
		_, err := LoadKeyFile(path, func() ([]byte, error) { return nil, errTTY })
		if !errors.Is(err, errTTY) {
			t.Fatalf("LoadKeyFile error=%v, want it to wrap %v", err, errTTY)
		}
	})
	t.Run("empty passphrase refused on write", func(t *testing.T) {
		err := WriteKeyFilePassphrase(filepath.Join(dir, "other.key"), id, nil)
		if got, want := err.Error(), "write vault key file "+filepath.Join(dir, "other.key")+": empty passphrase"; got != want {
			t.Fatalf("WriteKeyFilePassphrase error=%q, want %q", got, want)
		}
	})
}

// TestLoadKeyFileBinaryPassphrase reads a passphrase file in age's binary
// (unarmored) form, as `age -p -o vault.key` writes it.
func TestLoadKeyFileBinaryPassphrase(t *testing.T) {
	skipOnWindows(t)
	id := mustGenerate(t)
	r, err := age.NewScryptRecipient("pw")
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(encodeKeys(NewKeys(id))); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vault.key")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadKeyFile(path, passphrase("pw"))
	if err != nil {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	if got.ID() != id.ID() {
		t.Fatalf("loaded ID()=%s, want %s", got.ID(), id.ID())
	}
}

func TestLoadKeyFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.key")
	_, err := LoadKeyFile(path, nil)
	if !errors.Is(err, ErrKeyFileMissing) {
		t.Fatalf("LoadKeyFile error=%v, want ErrKeyFileMissing", err)
	}
	if got, want := err.Error(), "load "+path+": vault key file not found: run `mcpgw init` or pass --vault-key"; got != want {
		t.Fatalf("LoadKeyFile error=%q, want %q", got, want)
	}
}

func TestWriteKeyFileRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vault.key")
	if err := WriteKeyFile(path, mustGenerate(t)); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, write := range map[string]func() error{
		"plain":      func() error { return WriteKeyFile(path, mustGenerate(t)) },
		"passphrase": func() error { return WriteKeyFilePassphrase(path, mustGenerate(t), []byte("pw")) },
	} {
		t.Run(name, func(t *testing.T) {
			err := write()
			if !errors.Is(err, ErrKeyFileExists) {
				t.Fatalf("second write error=%v, want ErrKeyFileExists", err)
			}
			if got, want := err.Error(), "write vault key file "+path+": vault key file already exists; refusing to overwrite it"; got != want {
				t.Fatalf("second write error=%q, want %q", got, want)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Fatal("existing key file was changed")
			}
			assertNoTempFiles(t, dir)
		})
	}
}

func TestLoadKeyFileRefusesLooseMode(t *testing.T) {
	skipOnWindows(t)
	path := filepath.Join(t.TempDir(), "vault.key")
	if err := WriteKeyFile(path, mustGenerate(t)); err != nil {
		t.Fatal(err)
	}
	for _, m := range []os.FileMode{0o640, 0o604, 0o620, 0o644} {
		if err := os.Chmod(path, m); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyFile(path, nil)
		if !errors.Is(err, ErrKeyFileMode) {
			t.Fatalf("mode %04o: LoadKeyFile error=%v, want ErrKeyFileMode", m, err)
		}
		want := "load " + path + ": vault key file permissions are too open: group or others have access (mode " + octal(m) + "); run chmod 600 " + path
		if got := err.Error(); got != want {
			t.Fatalf("mode %04o: LoadKeyFile error=%q, want %q", m, got, want)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path, nil); err != nil {
		t.Fatalf("mode 0400: LoadKeyFile error=%v, want nil", err)
	}
}

func octal(m os.FileMode) string {
	const digits = "01234567"
	return string([]byte{'0', digits[m>>6&7], digits[m>>3&7], digits[m&7]})
}

func TestLoadKeyFileInvalid(t *testing.T) {
	skipOnWindows(t)
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{"empty", "", "vault key file is invalid: no identities found"},
		{"comments only", "# nothing\n", "vault key file is invalid: no identities found"},
		{"garbage", "not a key\n", "vault key file is invalid: error at line 1: unknown identity type"},
		{"armored garbage", "-----BEGIN AGE ENCRYPTED FILE-----\n!!!\n-----END AGE ENCRYPTED FILE-----\n",
			// age's own message follows; it is not pinned here.
			"vault key file is invalid: failed to read header: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadKeyFile(path, passphrase("pw"))
			if !errors.Is(err, ErrKeyFileInvalid) {
				t.Fatalf("LoadKeyFile error=%v, want ErrKeyFileInvalid", err)
			}
			got, want := err.Error(), "load "+path+": "+tt.want
			if strings.HasSuffix(want, ": ") {
				if !strings.HasPrefix(got, want) {
					t.Fatalf("LoadKeyFile error=%q, want prefix %q", got, want)
				}
			} else if got != want {
				t.Fatalf("LoadKeyFile error=%q, want %q", got, want)
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeyFile(sub, nil); !errors.Is(err, ErrKeyFileInvalid) {
			t.Fatalf("LoadKeyFile(dir) error=%v, want ErrKeyFileInvalid", err)
		}
	})
}

func TestKeysFileRotation(t *testing.T) {
	skipOnWindows(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "vault.key")
	oldID, newID := mustGenerate(t), mustGenerate(t)
	if err := WriteKeyFilePassphrase(path, oldID, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	oldKeys, err := LoadKeys(path, passphrase("pw"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := oldKeys.Seal(Credential{Kind: KindBearer, Token: "t"}, testAAD)
	if err != nil {
		t.Fatal(err)
	}

	rotating := oldKeys.Rotate(newID)
	if err := ReplaceKeysFile(path, rotating, []byte("pw")); err != nil {
		t.Fatalf("ReplaceKeysFile: %v", err)
	}
	if got, want := mode(t, path), os.FileMode(0o600); got != want {
		t.Fatalf("replaced key file mode=%04o, want %04o", got, want)
	}
	assertNoTempFiles(t, dir)
	loaded, err := LoadKeys(path, passphrase("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := loaded.Current().ID(), newID.ID(); got != want {
		t.Fatalf("Current()=%s, want %s", got, want)
	}
	if got := loaded.Retired(); len(got) != 1 || got[0].ID() != oldID.ID() {
		t.Fatalf("Retired()=%v, want [%s]", got, oldID.ID())
	}
	if _, err := loaded.Unseal(sealed, testAAD); err != nil {
		t.Fatalf("rotated keys cannot open a credential sealed before rotation: %v", err)
	}

	// Retire the old key once everything is re-sealed.
	if err := ReplaceKeysFile(path, NewKeys(newID), nil); err != nil {
		t.Fatal(err)
	}
	final, err := LoadKeys(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(final.Retired()), 0; got != want {
		t.Fatalf("len(Retired())=%d, want %d", got, want)
	}

	missing := filepath.Join(dir, "missing.key")
	if err := ReplaceKeysFile(missing, final, nil); !errors.Is(err, ErrKeyFileMissing) {
		t.Fatalf("ReplaceKeysFile(missing) error=%v, want ErrKeyFileMissing", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReplaceKeysFile(missing) created the file: %v", err)
	}
}

func TestEncodeKeysDoesNotReallocate(t *testing.T) {
	ids := make([]*Identity, 5)
	for i := range ids {
		ids[i] = mustGenerate(t)
	}
	b := encodeKeys(NewKeys(ids[0], ids[1:]...))
	if got, want := cap(b), keysFileCap(len(ids)); got != want {
		t.Fatalf("cap(encodeKeys())=%d, want %d: the buffer grew and left copies of keys behind", got, want)
	}
}

func TestLoadKeysOrder(t *testing.T) {
	skipOnWindows(t)
	data, err := os.ReadFile(filepath.Join("testdata", "test-keys.txt"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vault.key")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKeys(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.Current().ID(), "19aa58571131f8b4"; got != want {
		t.Fatalf("Current()=%s, want %s", got, want)
	}
	if got := k.Retired(); len(got) != 1 || got[0].ID() != "42c99b73a0acf5e5" {
		t.Fatalf("Retired()=%v, want [42c99b73a0acf5e5]", got)
	}
}
