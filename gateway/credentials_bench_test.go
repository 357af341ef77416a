package gateway

import (
	"testing"

	"github.com/mcpgw/mcpgw/storage"
)

// BenchmarkCredentialHeader measures what injecting a credential costs per
// upstream request once a session has unsealed it (the steady state), what
// a session's first request costs when no session used the credential
// lately (or after a rotation), and when one did (a stateless caller's
// next request).
func BenchmarkCredentialHeader(b *testing.B) {
	tg := newTestGateway(b)
	tg.addRoute(b, storage.Route{Name: "gh", URL: "https://api.example.com/mcp"})
	tg.putCredential(b, "acme", "alice", "gh", "bench-token")
	spec := sessionSpec{route: storage.Route{Name: "gh", Credential: storage.CredentialRequired}, org: "acme", account: "alice"}

	b.Run("per-request", func(b *testing.B) {
		src := tg.credentialSource(spec)
		if _, err := src.header(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := src.header(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("session-open-unseal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tg.unsealed.stop() // as if no session had used it lately
			if _, err := tg.credentialSource(spec).header(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("session-open", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tg.credentialSource(spec).header(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
