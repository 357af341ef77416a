package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/gateway/auditsink"
	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// AdminTokenFile is the file under the data dir holding the admin API token.
const AdminTokenFile = "admin.token"

// applier is the write path: raft in a cluster, the local store otherwise.
type applier interface {
	Apply(ctx context.Context, cmd cluster.Command) error
}

// Node is one running gateway node.
type Node struct {
	cfg     Config
	logger  *slog.Logger
	metrics *metrics

	store  *storage.Store
	raft   *cluster.Raft // nil before Start
	writes applier       // raft, or the local store in tests of the layers above
	gw     *gateway.Gateway
	oauth  *oauth.Client // nil without Config.PublicURL
	// cimdURL is the gateway's client id metadata document URL and cimdDoc
	// the document served at OAuthClientMetadataPath; both empty when the
	// gateway offers none.
	cimdURL string
	cimdDoc []byte
	// adminSvc is the admin use cases, set once Start built them; the data
	// path's refreshes, step-ups and consent links go through it.
	adminSvc atomic.Pointer[admin.Service]
	// tracing is the tracer provider the node built, flushed in Close;
	// nil when tracing is off or the Config gave one.
	tracing *sdktrace.TracerProvider

	adminToken []byte
	ring       *vaultRing
	// reseals counts the resealer's passes and the passes among them that
	// scanned every record, for tests.
	reseals struct{ passes, scans atomic.Int64 }
	audit   nodeAudit

	lns listeners
	// servingCert is the certificate the TLS listeners present; Reload
	// swaps it. Nil while no listener serves TLS.
	servingCert       atomic.Pointer[tls.Certificate]
	reloadMu          sync.Mutex // one Reload at a time; guards the two below
	liveCaps          connCaps   // the caps in force once reloaded
	reloaded          bool
	httpLn, adminLn   net.Listener
	httpTLS, adminTLS bool // whether the listeners serve TLS
	httpSrv           *http.Server
	adminSrv          *http.Server
	framed            framedListeners

	caughtUp  chan struct{} // closed once the state caught up with the cluster after Start
	listening atomic.Bool   // set once every listener serves

	ctx       context.Context // ends when the node closes
	cancel    context.CancelFunc
	served    sync.WaitGroup
	clusterWG sync.WaitGroup // goroutines following replicated state: the rate-limit re-split

	closeOnce sync.Once
	closeErr  error
}

// nodeAudit is this node's audit log: the gateway appends to it, the admin
// API queries and verifies it.
type nodeAudit struct {
	log  *storage.AuditLog // nil before Start and after Close
	node string            // this node's id, stamped on its records
	// cert signs this node's audit checkpoints; roots (the cluster CA)
	// verifies every node's.
	cert  tls.Certificate
	roots *x509.CertPool

	// sink ships the log to a syslog receiver; nil without AuditSyslog.
	sink *auditsink.Syslog
	// otlp ships the log to an OTLP collector; nil without
	// AuditOTLPEndpoint.
	otlp *auditsink.OTLP

	cpMu      sync.Mutex // guards committed
	committed uint64     // the last seq this node's checkpoint holds
}

// New checks cfg and prepares a node. It does no I/O.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, logger: logger, metrics: newMetrics(cfg.Version, cfg.Revision), caughtUp: make(chan struct{}), ctx: ctx, cancel: cancel}
	n.ring = newVaultRing(cfg.VaultKeys, cfg.VaultKeyFile, cfg.VaultPassphrase, logger)
	n.ring.obs = n.metrics.observeVault
	n.metrics.registerNode(n)
	return n, nil
}

// Start opens storage, joins or bootstraps the raft cluster and starts the
// listeners. On error everything it opened is closed again.
func (n *Node) Start(ctx context.Context) (err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", n.cfg.DataDir, err)
	}
	store, err := storage.Open(filepath.Join(n.cfg.DataDir, storage.StateFile))
	if err != nil {
		return err
	}
	n.store = store
	undo = append(undo, func() { store.Close(); n.store = nil })
	if err := n.ring.checkKEK(store, n.cfg.DataDir); err != nil {
		return err
	}
	n.ring.store.Store(store)
	if n.adminToken, err = loadOrCreateAdminToken(filepath.Join(n.cfg.DataDir, AdminTokenFile)); err != nil {
		return err
	}
	id, err := cluster.LoadNodeID(n.cfg.DataDir, n.cfg.NodeID)
	if err != nil {
		return err
	}

	err = n.startCluster(ctx, id)
	if n.raft != nil {
		// Raft closes before the store it writes into.
		undo = append(undo, func() { n.raft.Close(); n.raft = nil })
	}
	if err != nil {
		return err
	}
	auditOpts := storage.AuditOptions{MaxRecords: n.cfg.AuditMaxRecords, MaxAge: n.cfg.AuditMaxAge}
	if n.audit.log, err = storage.OpenAudit(filepath.Join(n.cfg.DataDir, storage.AuditFile), auditOpts); err != nil {
		return err
	}
	n.audit.node = id
	undo = append(undo, func() { n.audit.log.Close(); n.audit.log = nil })
	tp, err := n.startTracing(id)
	if err != nil {
		return err
	}
	undo = append(undo, func() { n.stopTracing(context.Background()) })
	gwOpts := n.gatewayOptions()
	gwOpts.TracerProvider = tp
	n.gw = gateway.New(store, n.vaultKeys, gwOpts)
	undo = append(undo, func() { n.gw.Close() })
	if err := n.startAuditSink(); err != nil {
		return err
	}
	undo = append(undo, n.stopAuditSink)
	n.watchLiveNodes()
	n.runResealer()
	n.runAuditCheckpoints()
	n.catchUp()
	undo = append(undo, func() { n.cancel(); n.clusterWG.Wait() })
	if n.cfg.InsecureDev {
		n.logger.Warn("INSECURE: --insecure-dev is set; sessions are accepted WITHOUT a service token. Never run this way outside a local trial.")
	}
	if err := n.setupListeners(); err != nil {
		return err
	}
	if n.httpLn, n.httpTLS, err = n.listenHTTP(ctx, "--http", n.cfg.HTTPAddr, "session", n.lns.sessions, "--max-conns", n.lns.caps.sessions); err != nil {
		return err
	}
	undo = append(undo, func() { n.httpLn.Close() })
	if n.adminLn, n.adminTLS, err = n.listenHTTP(ctx, "--admin", n.cfg.AdminAddr, "admin", n.lns.admin, "--admin-max-conns", n.lns.caps.admin); err != nil {
		return err
	}
	undo = append(undo, func() { n.adminLn.Close() })
	if err := n.listenFramed(ctx); err != nil {
		return err
	}
	svc, err := n.newAdmin()
	if err != nil {
		return err
	}
	n.adminSvc.Store(svc)
	if n.oauth != nil {
		n.serveOAuthRefresh(svc)
		n.runOAuthRefresher(svc)
	}
	n.httpSrv = n.newHTTPServer(n.sessionHandler(svc))
	// Shutdown waits for requests in flight; GET event streams never end by
	// themselves, so they end when it starts.
	n.httpSrv.RegisterOnShutdown(n.gw.Drain)
	n.adminSrv = n.newHTTPServer(n.adminHandler(svc))
	n.serve(n.httpSrv, n.httpLn)
	n.serve(n.adminSrv, n.adminLn)
	n.serveFramed()
	n.listening.Store(true)
	if n.cfg.InsecurePlaintext {
		n.logger.Warn("INSECURE: --insecure-plaintext is set; service and admin tokens cross the network in the clear unless something else protects it")
	}
	n.logStartSummary(id)
	return nil
}

// logStartSummary is the one line an operator reads at start: where the
// node listens, where its state and admin token are, and what to do next.
// The details (connection caps, raft's state changes) are at debug.
func (n *Node) logStartSummary(id string) {
	attrs := []any{
		slog.String("node_id", id),
		slog.String("http", n.HTTPAddr()),
		slog.String("admin", n.AdminAddr()),
	}
	if n.httpTLS || n.adminTLS {
		attrs = append(attrs, slog.Bool("http_tls", n.httpTLS), slog.Bool("admin_tls", n.adminTLS))
	}
	if q := n.QUICAddr(); q != "" {
		attrs = append(attrs, slog.String("quic", q))
	}
	if n.cfg.UnixPath != "" {
		attrs = append(attrs, slog.String("unix", n.cfg.UnixPath))
	}
	attrs = append(attrs, slog.String("raft", n.raft.Addr()), slog.String("data_dir", n.cfg.DataDir),
		slog.String("admin_token", filepath.Join(n.cfg.DataDir, AdminTokenFile)))
	n.logger.Info("mcpgw is up; next: allow an MCP server with `mcpgw route add <name> <url>`", attrs...)
}

func (n *Node) serve(srv *http.Server, ln net.Listener) {
	n.served.Add(1)
	go func() {
		defer n.served.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logger.Error("listener failed", slog.String("addr", ln.Addr().String()), slog.Any("error", err))
		}
	}()
}

// HTTPAddr returns the session listener's address.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// AdminAddr returns the admin listener's address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// HTTPURL returns the session listener's base URL: https:// when it serves
// TLS, http:// otherwise.
func (n *Node) HTTPURL() string { return schemeURL(n.httpTLS, n.HTTPAddr()) }

// AdminURL returns the admin listener's base URL, as HTTPURL does.
func (n *Node) AdminURL() string { return schemeURL(n.adminTLS, n.AdminAddr()) }

func schemeURL(tls bool, addr string) string {
	if tls {
		return "https://" + addr
	}
	return "http://" + addr
}

// Sessions returns the number of sessions open on this node, across
// transports.
func (n *Node) Sessions() int {
	if n.gw == nil {
		return 0
	}
	return n.gw.Sessions()
}

// AdminToken returns the token the admin API requires.
func (n *Node) AdminToken() string { return string(n.adminToken) }

// Close stops accepting sessions, drains open ones for up to
// ShutdownTimeout, then ends the rest. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
		defer cancel()
		if n.httpSrv != nil {
			// Stop new sessions; in-flight HTTP requests finish or time out.
			if err := n.httpSrv.Shutdown(ctx); err != nil {
				n.httpSrv.Close()
			}
		}
		n.cancel() // stops the QUIC and Unix socket listeners
		drained := make(chan struct{})
		go func() {
			if n.gw != nil {
				n.gw.Shutdown(ctx) // ends sessions on every transport
			}
			n.framed.wg.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-ctx.Done():
			n.logger.Warn("sessions did not drain before the shutdown deadline")
		}
		n.closeFramed()
		if n.adminSrv != nil {
			n.adminSrv.Close()
		}
		n.served.Wait()
		if n.oauth != nil {
			n.oauth.Close()
		}
		// Sessions have ended or been cut off: what they recorded is queued.
		var auditErr error
		if n.gw != nil {
			n.gw.Close()
		}
		// Every span has ended: flush them. The drain may have used up the
		// shutdown deadline, so the flush has its own bound.
		flushCtx, flushCancel := context.WithTimeout(context.Background(), 5*time.Second)
		traceErr := n.stopTracing(flushCtx)
		flushCancel()
		// The sink reads the log: it stops before the log closes, its
		// cursor saved; what it had not sent yet goes at the next start.
		n.stopAuditSink()
		if n.audit.log != nil {
			n.finalAuditCheckpoint()
			auditErr = n.audit.log.Close()
			n.audit.log = nil
		}
		n.clusterWG.Wait()
		var raftErr error
		if n.raft != nil {
			raftErr = n.raft.Close()
		}
		if n.store != nil {
			n.closeErr = n.store.Close()
		}
		n.closeErr = errors.Join(n.closeErr, auditErr, raftErr, traceErr)
	})
	return n.closeErr
}

// now reads the node's clock.
func (n *Node) now() time.Time {
	if n.cfg.Clock != nil {
		return n.cfg.Clock()
	}
	return time.Now()
}

// vaultKeys returns the vault keys in force.
func (n *Node) vaultKeys() *vault.Keys { return n.ring.Load() }

// loadOrCreateAdminToken reads the admin token, creating a random one (0600)
// on first start.
func loadOrCreateAdminToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := []byte(strings.TrimSpace(string(b)))
		if len(tok) < 32 {
			return nil, fmt.Errorf("admin token in %s is too short; delete the file to have a new one generated", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read admin token: %w", err)
	}
	tok := []byte(rand.Text() + rand.Text())
	if err := os.WriteFile(path, append(tok, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write admin token: %w", err)
	}
	return tok, nil
}
