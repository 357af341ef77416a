package node

import "testing"

// BenchmarkServiceToken measures checking a service token at session open:
// the first time (an Ed25519 verification) and again (the per-view cache
// that spares stateless-protocol clients a verification per request).
func BenchmarkServiceToken(b *testing.B) {
	n := startNode(b)
	b.Run("first", func(b *testing.B) {
		toks := make([]string, b.N)
		for i := range toks {
			toks[i] = issueToken(b, n, "bench", []string{"*"}, "1h").Token
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := n.verifyToken(toks[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		tok := testToken(n)
		if _, err := n.verifyToken(tok); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := n.verifyToken(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
