package node

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
)

// collector is a loopback OTLP/HTTP trace receiver recording what it got.
type collector struct {
	mu     sync.Mutex
	paths  []string
	bodies [][]byte
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.paths = append(c.paths, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
	c.bodies = append(c.bodies, body)
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// TestTracingExportsOTLPOnClose checks that with --otlp-endpoint set a
// node sends its spans to the collector over OTLP/HTTP, and that Close
// flushes those still batched, none of them holding the call's arguments
// or the service token.
func TestTracingExportsOTLPOnClose(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	n, route := gatewayTo(t, func(c *Config) { c.OTLPEndpoint = srv.URL })
	ctx := testContext(t, 20*time.Second)
	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", viaGateway(n)...)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "argument-that-must-not-be-exported"
	if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": secret}}); err != nil {
		t.Fatal(err)
	}
	sess.Close()
	token := testToken(n)
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.paths) == 0 {
		t.Fatal("the collector received nothing by the time Close returned")
	}
	for _, p := range col.paths {
		if p != "POST /v1/traces application/x-protobuf" {
			t.Errorf("collector got %q, want POST /v1/traces application/x-protobuf", p)
		}
	}
	all := bytes.Join(col.bodies, nil)
	for _, want := range []string{"gateway tools/call", "upstream tools/call", "session", "mcpgw", "echo"} {
		if !bytes.Contains(all, []byte(want)) {
			t.Errorf("exported spans lack %q", want)
		}
	}
	for _, leak := range []string{secret, token, strings.SplitN(token, ".", 2)[0]} {
		if bytes.Contains(all, []byte(leak)) {
			t.Errorf("exported spans carry %q", leak)
		}
	}
}

func TestTracingConfigRefusals(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		ratio    float64
		want     string
	}{
		{"ratio above 1", "", 1.5, "--trace-sample-ratio"},
		{"negative ratio", "http://127.0.0.1:4318", -0.1, "--trace-sample-ratio"},
		{"gRPC-style host:port", "127.0.0.1:4317", 1, "--otlp-endpoint"},
		{"other scheme", "grpc://collector:4317", 1, "--otlp-endpoint"},
	}
	ok := DefaultConfig()
	ok.OTLPEndpoint = "https://collector.internal:4318"
	if err := ok.validateTracing(); err != nil {
		t.Fatalf("validateTracing(%s) = %v, want nil", ok.OTLPEndpoint, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.OTLPEndpoint, cfg.TraceSampleRatio = tt.endpoint, tt.ratio
			err := cfg.validateTracing()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validateTracing() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
