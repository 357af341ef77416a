// Command stdioecho is a small MCP server over stdio for trying mcpgw's stdio
// routes and env credentials. It serves two tools:
//
//   - echo returns its text argument;
//   - whoami lists the environment variables the process received, other
//     than PATH and HOME, each with its value redacted (the first 2
//     characters of a value of 8 or more, and its length).
//
// The gateway starts a stdio server with only PATH and HOME plus the
// variables of the caller's env credential, so what whoami lists is what
// the vault injected:
//
//	go build -o /usr/local/bin/stdioecho ./examples/stdioecho
//	mcpgw route add echo-stdio --transport stdio -- /usr/local/bin/stdioecho
//	printf 'DEMO_API_KEY=sk-demo-1234567890\n' | mcpgw vault put --org default --account default --route echo-stdio --kind env
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sort"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// EchoArgs are the arguments of the echo tool.
type EchoArgs struct {
	Text string `json:"text" jsonschema:"the text to return"`
}

// Var is one environment variable as whoami shows it: never its value.
type Var struct {
	Name     string `json:"name"`
	Redacted string `json:"redacted" jsonschema:"the first 2 characters of a value of 8 or more, then …"`
	Length   int    `json:"length"`
}

// WhoamiResult is the structured result of the whoami tool.
type WhoamiResult struct {
	Vars []Var `json:"vars"`
}

// baseVars are set by the gateway for every stdio server, not by a credential.
var baseVars = map[string]bool{"PATH": true, "HOME": true}

// redact shows too little of a value to guess it: nothing of a short value,
// the first 2 characters of a longer one.
func redact(v string) string {
	if len(v) < 8 {
		return "…"
	}
	return v[:2] + "…"
}

func whoami(environ []string) WhoamiResult {
	res := WhoamiResult{Vars: []Var{}}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if baseVars[name] {
			continue
		}
		res.Vars = append(res.Vars, Var{Name: name, Redacted: redact(value), Length: len(value)})
	}
	sort.Slice(res.Vars, func(i, j int) bool { return res.Vars[i].Name < res.Vars[j].Name })
	return res
}

func (r WhoamiResult) String() string {
	if len(r.Vars) == 0 {
		return "no credential variables (only PATH and HOME)"
	}
	var b strings.Builder
	for _, v := range r.Vars {
		fmt.Fprintf(&b, "%s=%s (%d chars)\n", v.Name, v.Redacted, v.Length)
	}
	return b.String()
}

func newServer() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "stdioecho", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "returns text"}, func(ctx context.Context, req *mcp.CallToolRequest, a EchoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "whoami", Description: "lists the environment variables this server received (credentials injected by the gateway), values redacted"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, WhoamiResult, error) {
		res := whoami(os.Environ())
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: res.String()}}}, res, nil
	})
	return srv
}

func main() {
	// stdout carries the protocol: logs go to stderr, which the gateway logs
	// with credential values redacted.
	log.SetOutput(os.Stderr)
	if err := newServer().Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Fatal(err)
	}
}
