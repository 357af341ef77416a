package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/oauth"
)

// OAuthCallbackPath is where authorization servers send the browser back
// to, on the session listener.
const OAuthCallbackPath = "/oauth/callback"

// OAuthClientMetadataPath is where the session listener serves the
// gateway's Client ID Metadata Document: by default its URL is the
// gateway's client_id at authorization servers that fetch such documents.
const OAuthClientMetadataPath = "/oauth/client-metadata.json"

// setupOAuth creates the upstream OAuth client when Config.PublicURL is set
// and returns the callback URL ("" when off).
func (n *Node) setupOAuth(deps *admin.Deps) (string, error) {
	if n.cfg.PublicURL == "" {
		return "", nil
	}
	u, err := url.Parse(n.cfg.PublicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--public-url %q is not an http(s) base URL such as https://mcpgw.example.com", n.cfg.PublicURL)
	}
	cfg := oauth.DefaultConfig()
	cfg.Fetch.AllowLoopback = n.cfg.OAuthAllowLoopback
	if n.cfg.Clock != nil {
		cfg.Now = n.cfg.Clock
	}
	if n.oauth, err = oauth.New(cfg); err != nil {
		return "", err
	}
	deps.OAuth, deps.OAuthState = n.oauth, n.store
	base := strings.TrimSuffix(u.String(), "/")
	redirect := base + OAuthCallbackPath
	if err := n.setupCIMD(base, redirect); err != nil {
		return "", err
	}
	return redirect, nil
}

// setupCIMD renders the gateway's Client ID Metadata Document. A gateway
// whose public URL an authorization server could not take as a client id
// (plain http off loopback) offers none, unless the operator names where the
// document is published; then registration goes on to dynamic registration.
func (n *Node) setupCIMD(base, redirect string) error {
	cimd := oauth.CIMDConfig{URL: n.cfg.OAuthClientMetadataURL, RedirectURLs: []string{redirect}, AllowLoopback: n.cfg.OAuthAllowLoopback}
	explicit := cimd.URL != ""
	if !explicit {
		cimd.URL = base + OAuthClientMetadataPath
	}
	doc, err := oauth.CIMDDocument(cimd)
	switch {
	case err != nil && explicit:
		return fmt.Errorf("--oauth-client-metadata-url %q: %w", cimd.URL, err)
	case err != nil:
		n.logger.Info("oauth client id metadata document not offered: the public url is not one an authorization server accepts as a client id; dynamic registration or a pre-registered client is used",
			slog.String("public_url", base), slog.Any("reason", err))
		return nil
	}
	n.cimdURL, n.cimdDoc = cimd.URL, doc
	return nil
}

// clientMetadata serves the gateway's Client ID Metadata Document.
func (n *Node) clientMetadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	// Authorization servers may cache it; a short lifetime lets a changed
	// public URL take effect soon.
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(n.cimdDoc)
}

// sessionHandler is the session listener: the gateway's data path, and the
// OAuth callback browsers land on.
func (n *Node) sessionHandler(svc *admin.Service) http.Handler {
	if n.oauth == nil {
		return n.gw.Handler()
	}
	mux := http.NewServeMux()
	mux.Handle("/", n.gw.Handler())
	mux.HandleFunc("GET "+OAuthCallbackPath, n.oauthCallback(svc))
	if n.cimdDoc != nil {
		mux.HandleFunc("GET "+OAuthClientMetadataPath, n.clientMetadata)
	}
	mux.HandleFunc("POST /v1/oauth/authorize", n.serviceOAuth(svc, true))
	mux.HandleFunc("POST /v1/oauth/complete", n.serviceOAuth(svc, false))
	return mux
}

// serviceOAuth serves the client library's OAuth calls on the session
// listener, authorised by a service token: authorize for an org the token
// lists, or complete a flow by its state and code. The answer never holds a
// token.
func (n *Node) serviceOAuth(svc *admin.Service, authorize bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		answer := func(status int, v any) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(v)
		}
		refuse := func(status int, msg string) { answer(status, map[string]string{"error": msg}) }
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			refuse(http.StatusUnauthorized, "no service token: send Authorization: Bearer <service token> (mcpgw token issue)")
			return
		}
		claims, err := n.gw.VerifyToken(tok)
		if err != nil {
			refuse(http.StatusUnauthorized, err.Error())
			return
		}
		var in struct{ Target, Org, Account, Query string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil {
			refuse(http.StatusBadRequest, "body is not a JSON object: "+err.Error())
			return
		}
		fail := func(err error) {
			var e *admin.Error
			if !errors.As(err, &e) || errors.Is(err, admin.ErrInternal) {
				n.logger.Error("oauth request failed on the gateway's side", slog.Any("error", err))
				refuse(http.StatusInternalServerError, "oauth: internal error; see the gateway log")
				return
			}
			refuse(adminapi.HTTPStatus(err), err.Error())
		}
		if !authorize {
			q, err := url.ParseQuery(in.Query)
			if err != nil {
				refuse(http.StatusBadRequest, "query is not a URL query string: "+err.Error())
				return
			}
			done, err := svc.CompleteOAuth(r.Context(), q)
			if err != nil {
				fail(err)
				return
			}
			answer(http.StatusOK, map[string]string{"org": done.Org, "account": done.Account, "route": done.Route})
			return
		}
		if !claims.AllowsOrg(in.Org) {
			refuse(http.StatusForbidden, fmt.Sprintf("service %s may not act for org %q; issue a token listing it (mcpgw token issue --org)", claims.Service, in.Org))
			return
		}
		route, err := n.gw.RouteName(in.Target)
		if err != nil {
			refuse(http.StatusNotFound, err.Error())
			return
		}
		res, err := svc.AuthorizationURL(r.Context(), admin.OAuthStart{Org: in.Org, Account: in.Account, Route: route})
		if err != nil {
			fail(err)
			return
		}
		answer(http.StatusOK, map[string]any{"url": res.URL, "issuer": res.Issuer, "expires": res.Expires})
	}
}

var callbackPage = template.Must(template.New("callback").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mcpgw: {{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;line-height:1.5}</style></head>
<body><h1>{{.Title}}</h1><p>{{.Message}}</p>{{if .Next}}<p>{{.Next}}</p>{{end}}</body></html>
`))

type callbackView struct{ Title, Message, Next string }

// oauthCallback completes a flow and answers the browser with a small page.
// The page never holds a token, a code or the state.
func (n *Node) oauthCallback(svc *admin.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		done, err := svc.CompleteOAuth(r.Context(), r.URL.Query())
		view := callbackView{Title: "Connected",
			Message: fmt.Sprintf("Account %s of %s is now connected to %s.", done.Account, done.Org, done.Route),
			Next:    "You can close this window."}
		status := http.StatusOK
		if err != nil {
			status = adminapi.HTTPStatus(err)
			view = callbackView{Title: "Not connected", Message: err.Error(), Next: "Whoever gave you the sign-in link can give you a new one."}
			var e *admin.Error
			if !errors.As(err, &e) || errors.Is(err, admin.ErrInternal) {
				n.logger.Error("oauth callback failed on the gateway's side", slog.Any("error", err))
				view.Message = "The gateway failed to finish the sign-in; its operators find the cause in its log."
			}
			if status == http.StatusNotFound {
				status = http.StatusGone
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.WriteHeader(status)
		callbackPage.Execute(w, view)
	}
}
