// Command echoserver is a small MCP server for trying mcpgw: it serves the
// tools echo, whoami, ask_llm, slow, cancelled, getenv, fail and add_tool,
// a resource and a prompt over streamable HTTP at /mcp.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	flag.Parse()
	h := upstreamtest.New().StreamableHandler()
	log.Printf("MCP server on http://%s/mcp", *addr)
	log.Fatal(http.ListenAndServe(*addr, h))
}
