package vault

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Passphrase-protected key files would cost a second and 256 MiB each at
	// the production work factor.
	scryptWorkFactor = 10
	os.Exit(m.Run())
}

// testKeys returns the fixed test key set in testdata/test-keys.txt: current
// 19aa58571131f8b4, retired 42c99b73a0acf5e5.
func testKeys(t testing.TB) *Keys {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "test-keys.txt"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := parseKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustGenerate(t testing.TB) *Identity {
	t.Helper()
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var testAAD = AAD{Org: "org_42", Account: "acct_7", Route: "linear"}

// Every secret value below is unique and long enough that finding it in any
// output is a leak, not a coincidence.
const (
	secretBearer   = "tok-bearer-s3cr3t-0001"
	secretHeader1  = "Basic aGVhZGVyLXNlY3JldC0wMDAy"
	secretHeader2  = "hdr-s3cr3t-0003"
	secretEnv1     = "env-s3cr3t-0004"
	secretEnv2     = "-----BEGIN KEY-----\nenv-s3cr3t-0005 \"q\" \\ \t\x01\n-----END KEY-----\n"
	secretAccess   = "oauth-access-s3cr3t-0006"
	secretRefresh  = "oauth-refresh-s3cr3t-0007"
	secretEnvInner = "env-s3cr3t-0005"
)

var allSecrets = []string{secretBearer, secretHeader1, secretHeader2, secretEnv1, secretEnvInner, secretAccess, secretRefresh}

// sampleCredentials returns one valid credential of each kind, fresh each call.
func sampleCredentials() []struct {
	name string
	cred Credential
} {
	return []struct {
		name string
		cred Credential
	}{
		{"bearer", Credential{Kind: KindBearer, Token: secretBearer}},
		{"headers", Credential{Kind: KindHeaders, Headers: map[string]string{
			"Authorization": secretHeader1,
			"X-Api-Key":     secretHeader2,
		}}},
		{"env", Credential{Kind: KindEnv, Env: map[string]string{
			"API_KEY":     secretEnv1,
			"SERVICE_PEM": secretEnv2,
			"EMPTY":       "",
		}}},
		{"oauth", Credential{Kind: KindOAuth, OAuth: &OAuthToken{
			AccessToken:  secretAccess,
			RefreshToken: secretRefresh,
			TokenType:    "bearer",
			Expiry:       time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC),
			Scope:        "issues:read issues:write",
		}}},
	}
}
