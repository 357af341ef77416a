package adminapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// UseCases are the admin use cases the API serves.
type UseCases interface {
	Routes(ctx context.Context) ([]storage.Route, error)
	PutRoute(ctx context.Context, r storage.Route) (storage.Route, bool, error)
	DeleteRoute(ctx context.Context, name string) error

	Credentials(ctx context.Context) ([]storage.Credential, error)
	PutCredential(ctx context.Context, in admin.CredentialInput) (storage.Credential, bool, error)
	DeleteCredential(ctx context.Context, org, account, route string) error
	RotateVaultKey(ctx context.Context) (admin.RotateResult, error)
	RotateKEK(ctx context.Context, finish bool) (admin.KEKRotateResult, error)
	VaultStatus(ctx context.Context) (admin.VaultStatus, error)

	IssueToken(ctx context.Context, req admin.TokenRequest) (admin.IssuedToken, error)
	Tokens(ctx context.Context) ([]admin.TokenStatus, error)
	RevokeToken(ctx context.Context, id string) error
	RotateTokenKey(ctx context.Context) (string, error)

	Rules(ctx context.Context) ([]storage.Rule, error)
	PutRule(ctx context.Context, r storage.Rule) (storage.Rule, error)
	DeleteRule(ctx context.Context, id string) error
	Limits(ctx context.Context) ([]storage.Limit, error)
	PutLimit(ctx context.Context, l storage.Limit) (storage.Limit, error)
	DeleteLimit(ctx context.Context, id string) error

	QueryAudit(ctx context.Context, q storage.AuditQuery) ([]storage.AuditRecord, error)
	VerifyAudit(ctx context.Context) (admin.AuditVerification, error)
	ExportAudit(ctx context.Context, since uint64, follow bool, emit func([]storage.AuditRecord) error) error

	ClusterStatus(ctx context.Context) (cluster.Status, error)
	JoinNode(ctx context.Context, id, addr string) (cluster.Status, error)
	RemoveNode(ctx context.Context, id string) (cluster.Status, error)
	BackupInfo(ctx context.Context) admin.BackupInfo
	WriteBackup(ctx context.Context, w io.Writer) (int64, error)
}

var _ UseCases = (*admin.Service)(nil)

// Options tune the handler.
type Options struct {
	// TokenHint names where the admin token is kept, for the refusal of a
	// request without it, e.g. "/var/lib/mcpgw/admin.token".
	TokenHint string
	// Open are served without the admin token, beside /v1/: typically
	// "GET /healthz" and "GET /metrics". Patterns as for http.ServeMux.
	Open map[string]http.Handler
	// Protected are served beside /v1/ and, like it, only with the admin
	// token: typically the Go profiles under /debug/pprof/. Patterns as for
	// http.ServeMux, each under /v1/ or /debug/.
	Protected map[string]http.Handler
	// Logger receives the causes of internal errors. Default: discard.
	Logger *slog.Logger
	// Clock is the time relative audit queries (since=1h) count back
	// from. Default: time.Now.
	Clock func() time.Time
	// Consistency gives answers read-your-writes (see IndexHeader). Default
	// nil: a node outside raft, whose reads always see its writes.
	Consistency Consistency
	// MinIndexWait bounds the wait for MinIndexHeader and for the leader's
	// applied index. Default DefaultMinIndexWait.
	MinIndexWait time.Duration
}

// MaxBodyBytes is the largest request body the API reads.
const MaxBodyBytes = 1 << 20

// Audit query limit when the request names none.
const auditDefaultLimit = 100

// retryAfterSeconds is the Retry-After of a write refused while the
// cluster has no reachable leader: about one election.
const retryAfterSeconds = 1

type server struct {
	uc     UseCases
	token  []byte
	opts   Options
	logger *slog.Logger
}

// NewHandler serves the admin API over uc: every /v1/ and /debug/ path
// requires Authorization: Bearer <token>.
func NewHandler(uc UseCases, token []byte, opts *Options) http.Handler {
	s := &server{uc: uc, token: token}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Clock == nil {
		s.opts.Clock = time.Now
	}
	s.logger = s.opts.Logger
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	for pattern, h := range s.opts.Open {
		mux.Handle(pattern, h)
	}
	for pattern, h := range s.opts.Protected {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("GET /v1/routes", s.listRoutes)
	mux.HandleFunc("POST /v1/routes", s.putRoute)
	mux.HandleFunc("DELETE /v1/routes/{name}", s.deleteRoute)
	mux.HandleFunc("GET /v1/credentials", s.listCredentials)
	mux.HandleFunc("PUT /v1/credentials", s.putCredential)
	mux.HandleFunc("DELETE /v1/credentials", s.deleteCredential)
	mux.HandleFunc("POST /v1/vault/rotate", s.rotateVault)
	mux.HandleFunc("POST /v1/vault/rotate-kek", s.rotateKEK)
	mux.HandleFunc("GET /v1/vault/status", s.vaultStatus)
	mux.HandleFunc("POST /v1/tokens", s.issueToken)
	mux.HandleFunc("GET /v1/tokens", s.listTokens)
	mux.HandleFunc("POST /v1/tokens/{id}/revoke", s.revokeToken)
	mux.HandleFunc("POST /v1/token-keys/rotate", s.rotateTokenKey)
	mux.HandleFunc("GET /v1/rules", s.listRules)
	mux.HandleFunc("POST /v1/rules", s.putRule)
	mux.HandleFunc("DELETE /v1/rules/{id}", s.deleteRule)
	mux.HandleFunc("GET /v1/limits", s.listLimits)
	mux.HandleFunc("POST /v1/limits", s.putLimit)
	mux.HandleFunc("DELETE /v1/limits/{id}", s.deleteLimit)
	mux.HandleFunc("GET /v1/audit", s.queryAudit)
	mux.HandleFunc("GET /v1/audit/verify", s.verifyAudit)
	mux.HandleFunc("GET /v1/audit/export", s.exportAudit)
	mux.HandleFunc("GET /v1/cluster/status", s.clusterStatus)
	mux.HandleFunc("POST /v1/cluster/join", s.clusterJoin)
	mux.HandleFunc("POST /v1/cluster/remove", s.clusterRemove)
	mux.HandleFunc("GET /v1/backup", s.backup)
	s.mountOAuth(mux)
	return http.MaxBytesHandler(s.requireToken(s.consistent(mux)), MaxBodyBytes)
}

func (s *server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") || strings.HasPrefix(r.URL.Path, "/debug/") {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(tok), s.token) != 1 {
				writeError(w, http.StatusUnauthorized, "admin token missing or wrong: send Authorization: Bearer <token from %s>", s.opts.TokenHint)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, ErrorBody{Error: fmt.Sprintf(format, args...)})
}

// HTTPStatus maps a use case's error to the status the API answers it
// with. It is the only place that does.
func HTTPStatus(err error) int {
	switch {
	case errors.Is(err, admin.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, admin.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, admin.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, admin.ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// fail answers a failed use case. The message of an internal error (or of
// anything not an *admin.Error) names only the operation: its cause is
// nothing the caller can act on and may name internal keys, so it goes to
// the log for the operator.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := HTTPStatus(err)
	var e *admin.Error
	if !errors.As(err, &e) || errors.Is(err, admin.ErrInternal) {
		op := "request"
		if e != nil && e.Op != "" {
			op = e.Op
		}
		s.logger.Error("admin request failed on the gateway's side", slog.String("op", op), slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
		writeError(w, http.StatusInternalServerError, "%s: internal error; see the gateway log", op)
		return
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	writeError(w, status, "%s", err.Error())
}

// decodeBody decodes one JSON object, refusing unknown fields.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body is not the expected JSON object: %v", err)
	}
	if dec.More() {
		return errors.New("body must hold one JSON object")
	}
	return nil
}
