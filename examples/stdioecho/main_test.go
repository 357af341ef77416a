package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "…"},
		{"short value shows nothing", "abc1234", "…"},
		{"long value shows its first 2 characters", "sk-demo-1234567890", "sk…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redact(tt.in); got != tt.want {
				t.Fatalf("redact(%q)=%q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestStdioServer runs the built binary the way the gateway runs a stdio
// route: a clean environment of PATH, HOME and the credential's variables.
func TestStdioServer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "stdioecho")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const secret = "sk-demo-1234567890"
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "DEMO_API_KEY=" + secret, "DEMO_REGION=eu1"}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "stdioecho-test", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { cs.Close() })

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}})
	if err != nil {
		t.Fatalf("echo: %v", err)
	}
	if got, want := text(t, res), "hello"; got != want {
		t.Fatalf("echo=%q, want %q", got, want)
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	got := text(t, res)
	if want := "DEMO_API_KEY=sk… (18 chars)\nDEMO_REGION=… (3 chars)\n"; got != want {
		t.Fatalf("whoami=%q, want %q", got, want)
	}
	structured, ok := res.StructuredContent.(map[string]any)
	if !ok {
		t.Fatalf("whoami structured content is %T, want an object", res.StructuredContent)
	}
	wantStructured := map[string]any{"vars": []any{
		map[string]any{"name": "DEMO_API_KEY", "redacted": "sk…", "length": float64(18)},
		map[string]any{"name": "DEMO_REGION", "redacted": "…", "length": float64(3)},
	}}
	if diff := cmp.Diff(wantStructured, structured); diff != "" {
		t.Fatalf("whoami structured content (-want +got):\n%s", diff)
	}
	if strings.Contains(got, secret[2:]) {
		t.Fatalf("whoami shows the secret: %q", got)
	}
}

func text(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("result: isError=%v, %d content items, want one text", res.IsError, len(res.Content))
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("content is %T, want text", res.Content[0])
	}
	return tc.Text
}
