// Package upstreamtest provides a real go-sdk MCP server for tests and
// benchmarks to proxy to: tools, resources, prompts, a tool that asks the
// client to sample, one that reports progress and waits to be cancelled, and
// one that adds a tool (so the server announces list_changed).
package upstreamtest

//lint:file-ignore SA1019 sampling is deprecated from 2026-07-28 on, but the gateway carries the older protocol versions that have it

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// EchoArgs are the arguments of the echo tool.
type EchoArgs struct {
	Text string `json:"text" jsonschema:"text to echo back"`
}

// Server is a test upstream and what it observed.
type Server struct {
	MCP *mcp.Server
	// legacy serves the same tools over HTTP+SSE, offering only the
	// protocol versions that transport carries. The go-sdk SSE handler
	// announces the session's endpoint before it records which versions
	// the transport supports, so a server/discover arriving in that window
	// would otherwise be told 2026-07-28 is on offer.
	legacy *mcp.Server
	// Cancelled counts tool calls that saw their context cancelled.
	Cancelled atomic.Int32
	// Initializes counts the initialize requests received.
	Initializes atomic.Int32
	// LastAuth is the Authorization header of the latest HTTP request.
	LastAuth atomic.Pointer[string]
	// RequireBearer, when set, is the only bearer token the HTTP server
	// accepts; anything else gets 401.
	RequireBearer atomic.Pointer[string]
}

// New builds the test server.
func New() *Server {
	s := &Server{}
	s.MCP = s.build(nil)
	var legacy []string
	for _, v := range mcp.SupportedProtocolVersions() {
		if v < "2026-07-28" {
			legacy = append(legacy, v)
		}
	}
	s.legacy = s.build(&mcp.ServerOptions{SupportedProtocolVersions: legacy})
	return s
}

// build makes an MCP server with the test tools, resources and prompts.
func (s *Server) build(opts *mcp.ServerOptions) *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "upstreamtest", Version: "1"}, opts)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "echoes text"}, func(ctx context.Context, req *mcp.CallToolRequest, a EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "whoami", Description: "returns the Authorization header the upstream saw"}, func(ctx context.Context, req *mcp.CallToolRequest, _ EchoArgs) (*mcp.CallToolResult, any, error) {
		auth := ""
		if req.Extra != nil && req.Extra.Header != nil {
			auth = req.Extra.Header.Get("Authorization")
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: auth}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "traceparent", Description: "returns the W3C traceparent it received: in params._meta, then (over HTTP) the header, one line each"}, func(ctx context.Context, req *mcp.CallToolRequest, _ EchoArgs) (*mcp.CallToolResult, any, error) {
		meta, _ := req.Params.GetMeta()["traceparent"].(string)
		header := ""
		if req.Extra != nil && req.Extra.Header != nil {
			header = req.Extra.Header.Get("Traceparent")
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: meta + "\n" + header}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "ask_llm", Description: "asks the client to sample"}, func(ctx context.Context, req *mcp.CallToolRequest, a EchoArgs) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
			MaxTokens: 10,
			Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: a.Text}}},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("sampling failed: %w", err)
		}
		text := ""
		if tc, ok := res.Content.(*mcp.TextContent); ok {
			text = tc.Text
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sampled: " + text}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "slow", Description: "reports progress, then waits until cancelled"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			for i := 1; i <= 3; i++ {
				req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: 3, Message: fmt.Sprintf("step %d", i)})
			}
		}
		select {
		case <-ctx.Done():
			s.Cancelled.Add(1)
			return nil, nil, ctx.Err()
		case <-time.After(2 * time.Second):
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "not cancelled"}}}, nil, nil
		}
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "cancelled", Description: "how many slow calls saw their cancellation (works across processes, for stdio)"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint(s.Cancelled.Load())}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "getenv", Description: "returns the server process's environment variable named by text (for stdio credential injection)"}, func(ctx context.Context, req *mcp.CallToolRequest, a EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: os.Getenv(a.Text)}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "fail", Description: "a tool that runs and reports a failure (isError)"}, func(ctx context.Context, req *mcp.CallToolRequest, a EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "failed: " + a.Text}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "add_tool", Description: "adds a tool named by text, so the server announces tools/list_changed"}, func(ctx context.Context, req *mcp.CallToolRequest, a EchoArgs) (*mcp.CallToolResult, any, error) {
		mcp.AddTool(srv, &mcp.Tool{Name: a.Text}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "added " + a.Text}}}, nil, nil
	})
	srv.AddResource(&mcp.Resource{URI: "test://greeting", Name: "greeting", MIMEType: "text/plain"}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: "hello from upstream"}}}, nil
	})
	srv.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "name", Required: true}}}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "Hello, " + req.Params.Arguments["name"]}}}}, nil
	})
	return srv
}

// authCheck records the Authorization header and enforces RequireBearer.
func (s *Server) authCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		s.LastAuth.Store(&auth)
		if want := s.RequireBearer.Load(); want != nil && auth != "Bearer "+*want {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// StreamableHandler serves the server over stateful streamable HTTP.
func (s *Server) StreamableHandler() http.Handler {
	return s.authCheck(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.MCP }, nil))
}

// StatelessHandler serves the server over stateless streamable HTTP, which
// also speaks the 2026-07-28 protocol.
func (s *Server) StatelessHandler() http.Handler {
	return s.authCheck(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.MCP }, &mcp.StreamableHTTPOptions{Stateless: true, PropagateRequestCancellation: true}))
}

// SSEHandler serves the server over the legacy HTTP+SSE transport.
func (s *Server) SSEHandler() http.Handler {
	return s.authCheck(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s.legacy }, nil))
}

// StartHTTP serves h on a loopback listener for the test's lifetime and
// returns its URL.
func StartHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

// StdioArg is the argument that makes a test binary act as a stdio
// upstream (see RunStdioIfAsked).
const StdioArg = "-mcpgw.stdio-upstream"

// StdioIntrospectArg is StdioArg for a server that also has the tools
// "pid" (its process id) and "initializes" (how many initialize requests
// it received), to tell one process of a session from the next.
const StdioIntrospectArg = "-mcpgw.stdio-upstream-introspect"

// RunStdioIfAsked serves the test server on stdin/stdout and reports true
// when the process was started with StdioArg or StdioIntrospectArg; call
// it first in TestMain.
func RunStdioIfAsked(args []string) bool {
	for _, a := range args[1:] {
		switch strings.TrimLeft(a, "-") {
		case strings.TrimLeft(StdioArg, "-"):
			New().MCP.Run(context.Background(), &mcp.StdioTransport{})
			return true
		case strings.TrimLeft(StdioIntrospectArg, "-"):
			s := New()
			s.introspect(s.MCP)
			s.MCP.Run(context.Background(), &mcp.StdioTransport{})
			return true
		}
	}
	return false
}

// introspect adds the StdioIntrospectArg tools to srv.
func (s *Server) introspect(srv *mcp.Server) {
	mcp.AddTool(srv, &mcp.Tool{Name: "pid", Description: "returns the server's process id (a stdio session's process)"}, func(ctx context.Context, req *mcp.CallToolRequest, _ EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint(os.Getpid())}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "initializes", Description: "returns how many initialize requests the server received"}, func(ctx context.Context, req *mcp.CallToolRequest, _ EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint(s.Initializes.Load())}}}, nil, nil
	})
	srv.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "initialize" {
				s.Initializes.Add(1)
			}
			return next(ctx, method, req)
		}
	})
}

// Sessions returns the number of sessions the server holds, over every
// transport.
func (s *Server) Sessions() int {
	n := 0
	for _, srv := range []*mcp.Server{s.MCP, s.legacy} {
		for range srv.Sessions() {
			n++
		}
	}
	return n
}
