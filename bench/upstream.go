package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Paths the echo upstream serves: a stateful streamable HTTP handler,
// which speaks the protocol versions up to 2025-11-25, and a stateless one,
// the only way the go-sdk serves 2026-07-28.
const (
	StatefulPath  = "/mcp"
	StatelessPath = "/stateless"
)

// echoArgs are the arguments of the echo tool.
type echoArgs struct {
	Text string `json:"text" jsonschema:"text to echo back"`
}

// EchoHandler serves an MCP server with one tool, echo, at StatefulPath and
// StatelessPath: the cheapest real upstream, so that what a run measures is
// the path to it.
func EchoHandler() http.Handler {
	srv := echoServer()
	get := func(*http.Request) *mcp.Server { return srv }
	mux := http.NewServeMux()
	mux.Handle(StatefulPath, mcp.NewStreamableHTTPHandler(get, nil))
	mux.Handle(StatelessPath, mcp.NewStreamableHTTPHandler(get, &mcp.StreamableHTTPOptions{Stateless: true}))
	return mux
}

// echoServer is the MCP server every form of the echo upstream serves.
func echoServer() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "mcpgw-bench-echo", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "echoes text"}, func(ctx context.Context, req *mcp.CallToolRequest, a echoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	return srv
}

// ServeStdio serves the echo upstream's MCP server over stdin and stdout
// until ctx ends or stdin closes, for proxies that front stdio servers
// only (they are then measured against the same server).
func ServeStdio(ctx context.Context) error {
	return echoServer().Run(ctx, &mcp.StdioTransport{})
}

// ServeUpstream serves EchoHandler on addr until ctx ends, calling ready
// with the base URL (http://host:port) once it listens.
func ServeUpstream(ctx context.Context, addr string, ready func(baseURL string)) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: EchoHandler(), ReadHeaderTimeout: 10 * time.Second}
	ready("http://" + ln.Addr().String())
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
