package node

//lint:file-ignore SA1019 sampling is deprecated from 2026-07-28 on, but the gateway carries the older protocol versions that have it

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// featureClient is a go-sdk client session through the gateway whose
// handlers report what the upstream sent it.
type featureClient struct {
	client *mcp.Client
	sess   *mcp.ClientSession

	elicitations chan *mcp.ElicitParams // every elicitation/create
	completed    chan string            // notifications/elicitation/complete ids
	logs         chan string            // notifications/message as "<level>: <data>"
	updated      chan string            // notifications/resources/updated URIs
	listChanged  chan struct{}          // notifications/resources/list_changed
	samplingSeen chan struct{}          // a sampling request reached the client
	samplingDone chan error             // ... and ended with this
	stop         chan struct{}          // closed when the test ends, releasing handlers

	mu       sync.Mutex
	progress []float64 // guarded by mu
}

func newFeatureClient() *featureClient {
	fc := &featureClient{
		elicitations: make(chan *mcp.ElicitParams, 4),
		completed:    make(chan string, 4),
		logs:         make(chan string, 8),
		updated:      make(chan string, 4),
		listChanged:  make(chan struct{}, 4),
		samplingSeen: make(chan struct{}, 1),
		samplingDone: make(chan error, 1),
		stop:         make(chan struct{}),
	}
	fc.client = mcp.NewClient(&mcp.Implementation{Name: "passthrough-test", Version: "1"}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
			RootsV2:     &mcp.RootCapabilities{ListChanged: true},
		},
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			fc.elicitations <- req.Params
			if req.Params.Mode == "url" {
				return &mcp.ElicitResult{Action: "accept"}, nil
			}
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
		},
		ElicitationCompleteHandler: func(ctx context.Context, req *mcp.ElicitationCompleteNotificationRequest) {
			fc.completed <- req.Params.ElicitationID
		},
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			fc.logs <- fmt.Sprintf("%s: %v", req.Params.Level, req.Params.Data)
		},
		ResourceUpdatedHandler: func(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			fc.updated <- req.Params.URI
		},
		ResourceListChangedHandler: func(ctx context.Context, req *mcp.ResourceListChangedRequest) {
			select {
			case fc.listChanged <- struct{}{}:
			default:
			}
		},
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			fc.samplingSeen <- struct{}{}
			select {
			case <-ctx.Done(): // only the server's cancellation ends this request
			case <-fc.stop:
				return nil, errors.New("test ended")
			}
			fc.samplingDone <- ctx.Err()
			return nil, ctx.Err()
		},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			fc.mu.Lock()
			fc.progress = append(fc.progress, req.Params.Progress)
			fc.mu.Unlock()
		},
	})
	fc.client.AddRoots(&mcp.Root{URI: "file:///work", Name: "work"})
	return fc
}

// toolText calls tool and returns the text of its result.
func toolText(t *testing.T, ctx context.Context, sess *mcp.ClientSession, tool string, args map[string]any) string {
	t.Helper()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("CallTool %s: %v", tool, err)
	}
	if res.IsError || len(res.Content) == 0 {
		t.Fatalf("CallTool %s: error result %+v", tool, res.Content)
	}
	return res.Content[0].(*mcp.TextContent).Text
}

// receive waits for a value on c or fails the test.
func receive[T any](t *testing.T, ctx context.Context, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// TestPassThrough drives every protocol feature that flows between a
// client and a server through the gateway, for each downstream transport
// and for a streamable HTTP and a WebSocket upstream: elicitation in form
// and URL mode, roots and roots/list_changed, logging/setLevel and log
// messages, resources/subscribe with updated and list_changed
// notifications, cancellation in both directions, progress, and ping both
// ways. Each arrives exactly as sent.
func TestPassThrough(t *testing.T) {
	upstreams := []struct {
		name  string
		route func(t *testing.T, up *upstreamtest.FeatureServer) storage.Route
	}{
		{"streamable", func(t *testing.T, up *upstreamtest.FeatureServer) storage.Route {
			return storage.Route{Name: "features", URL: upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"}
		}},
		{"websocket", func(t *testing.T, up *upstreamtest.FeatureServer) storage.Route {
			return storage.Route{Name: "features", URL: "ws" + strings.TrimPrefix(upstreamtest.StartHTTP(t, up.WebSocketHandler()), "http") + "/mcp", Transport: storage.TransportWebSocket}
		}},
	}
	for _, down := range downstreams {
		for _, upc := range upstreams {
			t.Run(down+"/"+upc.name, func(t *testing.T) {
				up := upstreamtest.NewFeatureServer()
				r := upc.route(t, up)
				n := startNode(t)
				route := addRoute(t, n, r)
				ctx := testContext(t, 20*time.Second)
				fc := newFeatureClient()
				t.Cleanup(func() { close(fc.stop) })
				fc.sess = connectWith(t, ctx, n, down, route, "2025-11-25", fc.client)
				// The go-sdk's streamable HTTP server never delivers the
				// notifications/cancelled of a request it sent the client
				// (so it is, without the gateway, too); its WebSocket
				// connection does.
				testFeatures(t, fc, up, upc.name != "streamable")
			})
		}
	}
}

// testFeatures drives each feature through fc's session to up. serverCancels
// says whether up's transport carries a server's cancellation of its own
// request.
func testFeatures(t *testing.T, fc *featureClient, up *upstreamtest.FeatureServer, serverCancels bool) {
	sess := fc.sess
	run := func(name string, f func(t *testing.T, ctx context.Context)) {
		t.Run(name, func(t *testing.T) { f(t, testContext(t, 15*time.Second)) })
	}
	run("elicitation form", func(t *testing.T, ctx context.Context) {
		if got, want := toolText(t, ctx, sess, "elicit_form", nil), "accept:Ada"; got != want {
			t.Fatalf("elicit_form=%q, want %q", got, want)
		}
		p := receive(t, ctx, fc.elicitations, "the form elicitation")
		if p.Mode != "form" || p.Message != "What is your name?" || p.RequestedSchema == nil {
			t.Fatalf("client got elicitation %+v, want the form the upstream sent", p)
		}
	})
	run("elicitation url", func(t *testing.T, ctx context.Context) {
		if got, want := toolText(t, ctx, sess, "elicit_url", nil), "accept"; got != want {
			t.Fatalf("elicit_url=%q, want %q", got, want)
		}
		p := receive(t, ctx, fc.elicitations, "the URL elicitation")
		if p.Mode != "url" || p.URL != "https://consent.example/grant?flow=1" || p.ElicitationID != "flow-1" {
			t.Fatalf("client got elicitation %+v, want the URL the upstream sent", p)
		}
		if got, want := receive(t, ctx, fc.completed, "notifications/elicitation/complete"), "flow-1"; got != want {
			t.Fatalf("elicitation complete for %q, want %q", got, want)
		}
	})
	run("roots", func(t *testing.T, ctx context.Context) {
		if got, want := toolText(t, ctx, sess, "roots", nil), "file:///work"; got != want {
			t.Fatalf("roots=%q, want %q", got, want)
		}
		fc.client.AddRoots(&mcp.Root{URI: "file:///more", Name: "more"})
		receive(t, ctx, up.RootsChanged, "notifications/roots/list_changed at the upstream")
		if got, want := toolText(t, ctx, sess, "roots", nil), "file:///more,file:///work"; got != want {
			t.Fatalf("roots after list_changed=%q, want %q", got, want)
		}
	})
	run("logging", func(t *testing.T, ctx context.Context) {
		if err := sess.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "warning"}); err != nil {
			t.Fatalf("SetLoggingLevel: %v", err)
		}
		if got, want := toolText(t, ctx, sess, "log", nil), "logged"; got != want {
			t.Fatalf("log=%q, want %q", got, want)
		}
		// The upstream filters by the level the client set: only the error
		// passes, which proves logging/setLevel reached it.
		if got, want := receive(t, ctx, fc.logs, "the error log message"), "error: a error message"; got != want {
			t.Fatalf("log message %q, want %q", got, want)
		}
		if err := sess.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			t.Fatalf("SetLoggingLevel: %v", err)
		}
		toolText(t, ctx, sess, "log", nil)
		for _, want := range []string{"info: a info message", "error: a error message"} {
			if got := receive(t, ctx, fc.logs, want); got != want {
				t.Fatalf("log message %q, want %q", got, want)
			}
		}
		select {
		case extra := <-fc.logs:
			t.Fatalf("unexpected log message %q", extra)
		default:
		}
	})
	run("resource subscription", func(t *testing.T, ctx context.Context) {
		if err := sess.Subscribe(ctx, &mcp.SubscribeParams{URI: upstreamtest.FeatureURI}); err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		if got, want := receive(t, ctx, up.Subscribed, "resources/subscribe at the upstream"), upstreamtest.FeatureURI; got != want {
			t.Fatalf("upstream saw a subscription to %q, want %q", got, want)
		}
		toolText(t, ctx, sess, "touch", nil)
		if got, want := receive(t, ctx, fc.updated, "notifications/resources/updated"), upstreamtest.FeatureURI; got != want {
			t.Fatalf("updated %q, want %q", got, want)
		}
		if err := sess.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: upstreamtest.FeatureURI}); err != nil {
			t.Fatalf("Unsubscribe: %v", err)
		}
		if got, want := receive(t, ctx, up.Subscribed, "resources/unsubscribe at the upstream"), "-"+upstreamtest.FeatureURI; got != want {
			t.Fatalf("upstream saw %q, want %q", got, want)
		}
	})
	run("resources list_changed", func(t *testing.T, ctx context.Context) {
		toolText(t, ctx, sess, "add_resource", map[string]any{"text": "late"})
		receive(t, ctx, fc.listChanged, "notifications/resources/list_changed")
		res, err := sess.ListResources(ctx, nil)
		if err != nil {
			t.Fatalf("ListResources: %v", err)
		}
		found := false
		for _, r := range res.Resources {
			found = found || r.URI == "test://late"
		}
		if !found {
			t.Fatal("ListResources after list_changed does not list test://late")
		}
	})
	run("cancellation server to client", func(t *testing.T, ctx context.Context) {
		if !serverCancels {
			t.Skip("the upstream's transport does not carry a server's cancellation of its own request")
		}
		type result struct {
			text string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "sample_cancel"})
			if err != nil {
				done <- result{err: err}
				return
			}
			done <- result{text: res.Content[0].(*mcp.TextContent).Text}
		}()
		receive(t, ctx, fc.samplingSeen, "the sampling request at the client")
		if err := up.CancelSampling(ctx); err != nil {
			t.Fatal(err)
		}
		if err := receive(t, ctx, fc.samplingDone, "the client to see the server cancel its request"); err != context.Canceled {
			t.Fatalf("client sampling handler ended with %v, want context.Canceled", err)
		}
		r := receive(t, ctx, done, "the sample_cancel result")
		if r.err != nil || !strings.HasPrefix(r.text, "cancelled: ") {
			t.Fatalf("sample_cancel = %q, %v; want the upstream's own cancellation", r.text, r.err)
		}
	})
	run("progress and cancellation client to server", func(t *testing.T, ctx context.Context) {
		callCtx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := sess.CallTool(callCtx, &mcp.CallToolParams{Name: "slow", Meta: mcp.Meta{"progressToken": "p1"}})
			errc <- err
		}()
		waitFor(t, "three progress notifications", func() bool {
			fc.mu.Lock()
			defer fc.mu.Unlock()
			return len(fc.progress) == 3
		})
		cancel()
		if err := <-errc; err == nil {
			t.Fatal("cancelled slow call returned no error")
		}
		waitFor(t, "the upstream to see the cancellation", func() bool { return up.Cancelled.Load() == 1 })
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if got, want := fmt.Sprint(fc.progress), "[1 2 3]"; got != want {
			t.Fatalf("progress %s, want %s", got, want)
		}
	})
	run("ping both ways", func(t *testing.T, ctx context.Context) {
		if err := sess.Ping(ctx, nil); err != nil {
			t.Fatalf("client ping: %v", err)
		}
		if got, want := toolText(t, ctx, sess, "ping_client", nil), "pong"; got != want {
			t.Fatalf("ping_client=%q, want %q", got, want)
		}
	})
}
