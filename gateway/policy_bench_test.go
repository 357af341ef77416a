package gateway

import (
	"testing"
)

// BenchmarkServiceToken measures checking a service token at session open:
// the first time (an Ed25519 verification) and again (the per-view cache
// that spares stateless-protocol clients a verification per request).
func BenchmarkServiceToken(b *testing.B) {
	tg := newTestGateway(b)
	b.Run("first", func(b *testing.B) {
		toks := make([]string, b.N)
		for i := range toks {
			toks[i] = tg.issueToken(b, "bench", "*")
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := tg.verifyToken(toks[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		tok := tg.issueToken(b, "bench", "*")
		if _, err := tg.verifyToken(tok); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tg.verifyToken(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
