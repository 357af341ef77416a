package oauth_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/oauth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

func TestDynamicRegistrationFailures(t *testing.T) {
	const secret = "issued-secret-value"
	tests := []struct {
		name   string
		status int
		body   string
		code   string // ASError code expected, "" for none
	}{
		{"refused metadata", 400, `{"error":"invalid_redirect_uri","error_description":"not allowed"}`, "invalid_redirect_uri"},
		{"server error", 500, `oops`, ""},
		{"malformed success holding a secret", 201, `{"client_secret":"` + secret + `","client_id":`, ""},
		{"success without client id", 201, `{"client_secret":"` + secret + `"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := countingServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			d := &oauth.Discovery{Issuer: srv.URL, AuthServer: &oauthex.AuthServerMeta{Issuer: srv.URL, RegistrationEndpoint: srv.URL + "/register", TokenEndpoint: srv.URL + "/token"}}
			_, err := newClient(t, nil).Register(context.Background(), d, oauth.RegisterOptions{RedirectURL: callbackURL})
			if !errors.Is(err, oauth.ErrRegistration) {
				t.Fatalf("Register: err=%v, want ErrRegistration", err)
			}
			var ase *oauth.ASError
			if got := errors.As(err, &ase); got != (tt.code != "") || (got && ase.Code != tt.code) {
				t.Fatalf("Register: err=%v, want ASError code %q", err, tt.code)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q contains the issued secret", err)
			}
		})
	}
}

func TestCIMDDocument(t *testing.T) {
	doc, err := oauth.CIMDDocument(oauth.CIMDConfig{URL: "https://gw.example/oauth/client.json", RedirectURLs: []string{"https://gw.example/oauth/callback"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"client_id": "https://gw.example/oauth/client.json"`, `"redirect_uris": [`, `"token_endpoint_auth_method": "none"`, `"refresh_token"`} {
		if !bytes.Contains(doc, []byte(want)) {
			t.Errorf("document lacks %s:\n%s", want, doc)
		}
	}
	for _, bad := range []oauth.CIMDConfig{
		{URL: "https://gw.example/", RedirectURLs: []string{"https://gw.example/cb"}},           // no path
		{URL: "http://gw.example/client.json", RedirectURLs: []string{"https://gw.example/cb"}}, // not https
		{URL: "https://gw.example/client.json?x=1", RedirectURLs: []string{"https://gw.example/cb"}},
		{URL: "https://gw.example/client.json"}, // no redirect
	} {
		if _, err := oauth.CIMDDocument(bad); err == nil {
			t.Errorf("CIMDDocument(%+v) succeeded, want refusal", bad)
		}
	}
}

// TestLogValuesHideSecrets: the values the gateway stores log without their secrets.
func TestLogValuesHideSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x",
		"pending", oauth.Pending{State: "state-secret", Verifier: "verifier-secret", Registration: oauth.Registration{ClientSecret: "client-secret"}, ExpiresAt: time.Now()},
		"token", oauth.Token{AccessToken: "access-secret", RefreshToken: "refresh-secret", IDToken: "id-secret"},
		"reg", oauth.Registration{ClientID: "cid", ClientSecret: "client-secret"})
	for _, s := range []string{"state-secret", "verifier-secret", "client-secret", "access-secret", "refresh-secret", "id-secret"} {
		if strings.Contains(buf.String(), s) {
			t.Fatalf("log line contains %s: %s", s, buf.String())
		}
	}
	if !strings.Contains(buf.String(), `"client_id":"cid"`) {
		t.Fatalf("log line lacks the client id: %s", buf.String())
	}
}
