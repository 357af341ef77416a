package upstreamtest

//lint:file-ignore SA1019 sampling is deprecated from 2026-07-28 on, but the gateway carries the older protocol versions that have it

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/transport"
)

// FeatureURI is the resource the feature server lets clients subscribe to.
const FeatureURI = "test://watched"

// FeatureServer is a test upstream exercising the protocol features that
// flow both ways on a session: elicitation (form and URL mode), roots,
// logging, resource subscriptions and list_changed, cancellation in both
// directions, progress and ping. Each server-initiated feature is a tool,
// so a client drives it with tools/call:
//
//   - elicit_form asks the client for a name (form mode) and returns
//     "<action>:<name>".
//   - elicit_url sends the client to a URL (URL mode), then notifies it the
//     elicitation completed, and returns the action.
//   - roots lists the client's roots and returns their URIs, comma
//     separated.
//   - log sends one info and one error message, which the client receives
//     as its logging level lets through.
//   - ping_client pings the client.
//   - sample_cancel asks the client to sample and cancels that request when
//     CancelSampling is called, returning the error it got.
//   - slow reports progress, then waits until cancelled.
//   - touch announces an update of FeatureURI to its subscribers.
//   - add_resource adds a resource, so the server announces
//     resources/list_changed.
type FeatureServer struct {
	MCP *mcp.Server
	// Cancelled counts slow calls that saw their context cancelled.
	Cancelled atomic.Int32
	// RootsChanged receives a value for each roots/list_changed
	// notification; it does not block.
	RootsChanged chan struct{}
	// Subscribed receives the URI of each resources/subscribe and
	// "-"+URI of each unsubscribe; it does not block.
	Subscribed chan string

	cancelSampling chan struct{}
}

// NewFeatureServer builds the feature test server.
func NewFeatureServer() *FeatureServer {
	s := &FeatureServer{
		RootsChanged:   make(chan struct{}, 16),
		Subscribed:     make(chan string, 16),
		cancelSampling: make(chan struct{}),
	}
	nonBlocking := func(c chan string, v string) {
		select {
		case c <- v:
		default:
		}
	}
	srv := mcp.NewServer(&mcp.Implementation{Name: "upstreamtest-features", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler: func(_ context.Context, req *mcp.SubscribeRequest) error {
			nonBlocking(s.Subscribed, req.Params.URI)
			return nil
		},
		UnsubscribeHandler: func(_ context.Context, req *mcp.UnsubscribeRequest) error {
			nonBlocking(s.Subscribed, "-"+req.Params.URI)
			return nil
		},
		RootsListChangedHandler: func(context.Context, *mcp.RootsListChangedRequest) {
			select {
			case s.RootsChanged <- struct{}{}:
			default:
			}
		},
	})
	s.MCP = srv
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "elicit_form", Description: "asks the client for a name in a form"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{
			Mode:    "form",
			Message: "What is your name?",
			RequestedSchema: map[string]any{
				"type":       "object",
				"properties": map[string]any{"name": map[string]any{"type": "string"}},
				"required":   []string{"name"},
			},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("elicitation failed: %w", err)
		}
		return text(fmt.Sprintf("%s:%v", res.Action, res.Content["name"])), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "elicit_url", Description: "sends the client to a URL, then says the elicitation completed"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{
			Mode:          "url",
			Message:       "Grant access",
			URL:           "https://consent.example/grant?flow=1",
			ElicitationID: "flow-1",
		})
		if err != nil {
			return nil, nil, fmt.Errorf("elicitation failed: %w", err)
		}
		if err := req.Session.NotifyElicitationComplete(ctx, &mcp.ElicitationCompleteParams{ElicitationID: "flow-1"}); err != nil {
			return nil, nil, err
		}
		return text(res.Action), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "roots", Description: "lists the client's roots"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.ListRoots(ctx, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("roots/list failed: %w", err)
		}
		var uris []string
		for _, r := range res.Roots {
			uris = append(uris, r.URI)
		}
		return text(strings.Join(uris, ",")), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "log", Description: "sends an info and an error log message"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		for _, l := range []mcp.LoggingLevel{"info", "error"} {
			if err := req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: l, Logger: "upstreamtest", Data: "a " + string(l) + " message"}); err != nil {
				return nil, nil, err
			}
		}
		return text("logged"), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "ping_client", Description: "pings the client"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if err := req.Session.Ping(ctx, nil); err != nil {
			return nil, nil, fmt.Errorf("ping failed: %w", err)
		}
		return text("pong"), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "sample_cancel", Description: "asks the client to sample, then cancels the request"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-s.cancelSampling:
				cancel()
			case <-sctx.Done():
			}
		}()
		_, err := req.Session.CreateMessage(sctx, &mcp.CreateMessageParams{
			MaxTokens: 10,
			Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "never answered"}}},
		})
		if err == nil {
			return text("sampling was not cancelled"), nil, nil
		}
		return text("cancelled: " + err.Error()), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "slow", Description: "reports progress, then waits until cancelled"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			for i := 1; i <= 3; i++ {
				req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: 3, Message: fmt.Sprintf("step %d", i)})
			}
		}
		<-ctx.Done()
		s.Cancelled.Add(1)
		return nil, nil, ctx.Err()
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "touch", Description: "announces an update of " + FeatureURI}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if err := srv.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: FeatureURI}); err != nil {
			return nil, nil, err
		}
		return text("touched"), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "add_resource", Description: "adds a resource, so the server announces resources/list_changed"}, func(ctx context.Context, req *mcp.CallToolRequest, a EchoArgs) (*mcp.CallToolResult, any, error) {
		srv.AddResource(&mcp.Resource{URI: "test://" + a.Text, Name: a.Text}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: a.Text}}}, nil
		})
		return text("added"), nil, nil
	})
	srv.AddResource(&mcp.Resource{URI: FeatureURI, Name: "watched", MIMEType: "text/plain"}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: "watched"}}}, nil
	})
	return s
}

// CancelSampling makes the sample_cancel call in progress cancel its
// sampling request. It blocks until a sample_cancel call takes it, or ctx
// ends.
func (s *FeatureServer) CancelSampling(ctx context.Context) error {
	select {
	case s.cancelSampling <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StreamableHandler serves the server over stateful streamable HTTP.
func (s *FeatureServer) StreamableHandler() http.Handler {
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.MCP }, nil)
}

// WebSocketHandler serves the server over WebSocket, one session per
// connection, as the gateway dials a websocket route.
func (s *FeatureServer) WebSocketHandler() http.Handler {
	return WebSocketHandler(s.MCP)
}

// WebSocketHandler serves srv over WebSocket (subprotocol mcp, one message
// per text frame), one session per connection, until the peer hangs up.
func WebSocketHandler(srv *mcp.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := transport.AcceptWebSocket(w, r, transport.WebSocketOptions{})
		if err != nil {
			return // Accept has written the HTTP error
		}
		ss, err := srv.Connect(r.Context(), connTransport{conn}, nil)
		if err != nil {
			conn.Close()
			return
		}
		ss.Wait()
	})
}

// connTransport hands an open connection to an mcp.Server.
type connTransport struct{ conn mcp.Connection }

func (c connTransport) Connect(context.Context) (mcp.Connection, error) { return c.conn, nil }
