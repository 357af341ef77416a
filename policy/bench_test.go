package policy

import (
	"fmt"
	"testing"
	"time"
)

func BenchmarkVerify(b *testing.B) {
	ring := NewKeyring([]SigningKey{testKey(1, t0)}, map[string]time.Time{"other": t0}, KeyringOptions{})
	tok := mustIssue(b, ring, Claims{Service: "billing", Orgs: []string{"acme"}, ExpiresAt: t0.Add(time.Hour)}, t0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ring.Verify(tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRules is a realistic rule set: 50 routes with a handful of rules
// each, plus a few rules for every route.
func benchRules(b *testing.B) *Rules {
	var rules []Rule
	for i := range 50 {
		route := fmt.Sprint("route-", i)
		rules = append(rules,
			rule(route+"-ci", "ci", "*", "*", route, "*", EffectAllow),
			rule(route+"-read", "reader", "*", "*", route, "list_*", EffectAllow),
			rule(route+"-nodel", "*", "*", "*", route, "delete_*", EffectDeny),
			rule(route+"-acme", "bot", "acme", "a1", route, "create_issue", EffectAllow),
		)
	}
	rules = append(rules,
		rule("no-intern", "intern", "*", "*", "*", "*", EffectDeny),
		rule("no-danger", "*", "*", "*", "*", "drop_database", EffectDeny),
	)
	return mustCompile(b, rules)
}

func BenchmarkDecide(b *testing.B) {
	rs := benchRules(b)
	for _, bc := range []struct {
		name string
		req  Request
	}{
		{"allow", Request{"reader", "acme", "a1", "route-7", "list_issues"}},
		{"session", Request{"bot", "acme", "a1", "route-7", ""}},
		{"deny by rule", Request{"ci", "acme", "a1", "route-7", "delete_repo"}},
		{"deny by default", Request{"reader", "acme", "a1", "unruled", "list_issues"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rs.Decide(bc.req)
			}
		})
	}
}

func benchLimiter(b *testing.B) *Limiter {
	perAccount := lim("per-account", 1e9, 1<<20)
	perAccount.Pool = DimTool | DimService
	perTool := lim("per-tool", 1e9, 1<<20)
	perService := lim("per-service", 1e9, 1<<20)
	perService.Pool = DimOrg | DimAccount | DimRoute | DimTool
	l := mustLimiter(b, perAccount, perTool, perService)
	l.SetShare(3)
	return l
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := benchLimiter(b)
	key := Key{"ci", "acme", "a1", "route-7", "list_issues"}
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		if ok, _, _ := l.Allow(key, now); !ok {
			b.Fatal("refused")
		}
	}
}

func BenchmarkLimiterAllowParallel(b *testing.B) {
	l := benchLimiter(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := Key{"ci", "acme", "a1", "route-7", "list_issues"}
		now := t0
		for pb.Next() {
			now = now.Add(time.Millisecond)
			l.Allow(key, now)
		}
	})
}

// BenchmarkToolsCallPolicy is the policy work of one proxied tools/call
// with an already verified token: org check, rule decision, rate limit and
// in-flight cap.
func BenchmarkToolsCallPolicy(b *testing.B) {
	rs := benchRules(b)
	l := benchLimiter(b)
	g := NewGate(1 << 20)
	claims := &Claims{ID: "t", Service: "reader", Orgs: []string{"acme", "globex"}}
	req := Request{Service: claims.Service, Org: "acme", Account: "a1", Route: "route-7", Tool: "list_issues"}
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		if !claims.AllowsOrg(req.Org) {
			b.Fatal("org refused")
		}
		if d := rs.Decide(req); !d.Allowed {
			b.Fatal(d.Reason)
		}
		if ok, _, _ := l.Allow(Key(req), now); !ok {
			b.Fatal("rate limited")
		}
		if !g.TryAcquire() {
			b.Fatal("gate full")
		}
		g.Release()
	}
}
