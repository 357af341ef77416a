package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func rule(id, service, org, account, route, tool string, effect Effect) Rule {
	return Rule{ID: id, Service: service, Org: org, Account: account, Route: route, Tool: tool, Effect: effect}
}

func mustCompile(t testing.TB, rules []Rule) *Rules {
	t.Helper()
	rs, err := CompileRules(rules)
	if err != nil {
		t.Fatalf("CompileRules: %v", err)
	}
	return rs
}

func TestRuleValidate(t *testing.T) {
	ok := rule("r1", "ci", "acme", "*", "github", "list_*", EffectAllow)
	with := func(f func(*Rule)) Rule { r := ok; f(&r); return r }
	tests := []struct {
		name    string
		rule    Rule
		wantErr string
	}{
		{"valid", ok, ""},
		{"all wildcards", rule("r", "*", "*", "*", "*", "*", EffectDeny), ""},
		{"exact tool", with(func(r *Rule) { r.Tool = "create_issue" }), ""},
		{"no id", with(func(r *Rule) { r.ID = "" }), "rule has no id"},
		{"long id", with(func(r *Rule) { r.ID = strings.Repeat("r", 65) }), "longer than 64"},
		{"no effect", with(func(r *Rule) { r.Effect = "" }), `effect "" is invalid; use "allow" or "deny"`},
		{"bad effect", with(func(r *Rule) { r.Effect = "permit" }), `effect "permit" is invalid`},
		{"empty service", with(func(r *Rule) { r.Service = "" }), `service is empty`},
		{"empty org", with(func(r *Rule) { r.Org = "" }), `org is empty`},
		{"empty account", with(func(r *Rule) { r.Account = "" }), `account is empty`},
		{"empty route", with(func(r *Rule) { r.Route = "" }), `route is empty`},
		{"org pattern", with(func(r *Rule) { r.Org = "ac*" }), `org "ac*" is invalid`},
		{"route pattern", with(func(r *Rule) { r.Route = "*hub" }), `route "*hub" is invalid`},
		{"empty tool", with(func(r *Rule) { r.Tool = "" }), `tool is empty`},
		{"tool suffix pattern", with(func(r *Rule) { r.Tool = "*_repo" }), `tool pattern "*_repo" is invalid`},
		{"tool infix pattern", with(func(r *Rule) { r.Tool = "a*b" }), `tool pattern "a*b" is invalid`},
		{"tool double star", with(func(r *Rule) { r.Tool = "**" }), `tool pattern "**" is invalid`},
		{"tool prefix double star", with(func(r *Rule) { r.Tool = "list**" }), `tool pattern "list**" is invalid`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValidate(t, tt.rule.Validate(), tt.wantErr)
		})
	}
}

// checkValidate fails t unless err is what a Validate table case wants:
// nil for an empty wantErr, else an error containing wantErr.
func checkValidate(t *testing.T, err error, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("Validate() = %v, want nil", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("Validate() = %v, want error containing %q", err, wantErr)
	}
}

func TestCompileRulesErrors(t *testing.T) {
	tests := []struct {
		name    string
		rules   []Rule
		wantErr string
	}{
		{"invalid rule names its position", []Rule{
			rule("a", "*", "*", "*", "*", "*", EffectAllow),
			rule("b", "*", "*", "*", "*", "x*y", EffectAllow),
		}, `rule 2: rule "b": tool pattern "x*y" is invalid`},
		{"duplicate id", []Rule{
			rule("a", "*", "*", "*", "r1", "*", EffectAllow),
			rule("a", "*", "*", "*", "r2", "*", EffectDeny),
		}, `rule 2: id "a" is used twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := CompileRules(tt.rules)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CompileRules() = %v, %v; want error containing %q", rs, err, tt.wantErr)
			}
		})
	}
}

// testRules covers each kind of rule on three governed routes; "slack" has
// no rules.
var testRules = []Rule{
	rule("gh-ci", "ci", "acme", "*", "github", "*", EffectAllow),
	rule("gh-no-delete", "*", "acme", "*", "github", "delete_*", EffectDeny),
	rule("gh-read", "reader", "*", "*", "github", "list_*", EffectAllow),
	rule("lin-no-intern", "intern", "*", "*", "linear", "*", EffectDeny),
	rule("lin-all", "*", "*", "*", "linear", "*", EffectAllow),
	rule("jira-bot", "bot", "acme", "a1", "jira", "create_issue", EffectAllow),
}

func TestDecide(t *testing.T) {
	rs := mustCompile(t, testRules)
	tests := []struct {
		name string
		req  Request
		want Decision
	}{
		{"route without rules", Request{"ci", "acme", "a1", "slack", "post"},
			Decision{Allowed: true, Reason: "route has no rules (allow by default)"}},
		{"route without rules, session", Request{"anyone", "x", "y", "slack", ""},
			Decision{Allowed: true, Reason: "route has no rules (allow by default)"}},
		{"allow rule", Request{"ci", "acme", "a1", "github", "list_repos"},
			Decision{Allowed: true, RuleID: "gh-ci", Reason: `allowed by rule "gh-ci" (allow service=ci org=acme account=* route=github tool=*)`}},
		{"deny beats an earlier allow", Request{"ci", "acme", "a1", "github", "delete_repo"},
			Decision{RuleID: "gh-no-delete", Reason: `tool "delete_repo" denied by rule "gh-no-delete" (deny service=* org=acme account=* route=github tool=delete_*)`}},
		{"prefix matches the bare prefix", Request{"ci", "acme", "a1", "github", "delete_"},
			Decision{RuleID: "gh-no-delete", Reason: `tool "delete_" denied by rule "gh-no-delete" (deny service=* org=acme account=* route=github tool=delete_*)`}},
		{"prefix is case sensitive", Request{"ci", "acme", "a1", "github", "Delete_repo"},
			Decision{Allowed: true, RuleID: "gh-ci", Reason: `allowed by rule "gh-ci" (allow service=ci org=acme account=* route=github tool=*)`}},
		{"other org denied by default", Request{"ci", "globex", "a1", "github", "list_repos"},
			Decision{Reason: `no rule allows service "ci" (org "globex", account "a1") to call tool "list_repos" on route "github" (deny by default: route has rules)`}},
		{"prefix allow", Request{"reader", "globex", "a9", "github", "list_issues"},
			Decision{Allowed: true, RuleID: "gh-read", Reason: `allowed by rule "gh-read" (allow service=reader org=* account=* route=github tool=list_*)`}},
		{"outside the prefix denied by default", Request{"reader", "globex", "a9", "github", "get_file"},
			Decision{Reason: `no rule allows service "reader" (org "globex", account "a9") to call tool "get_file" on route "github" (deny by default: route has rules)`}},
		{"unknown service denied by default", Request{"stranger", "acme", "a1", "github", "list_repos"},
			Decision{Reason: `no rule allows service "stranger" (org "acme", account "a1") to call tool "list_repos" on route "github" (deny by default: route has rules)`}},
		{"session allowed by tool-wide allow", Request{"ci", "acme", "a1", "github", ""},
			Decision{Allowed: true, RuleID: "gh-ci", Reason: `allowed by rule "gh-ci" (allow service=ci org=acme account=* route=github tool=*)`}},
		{"session allowed by prefix allow", Request{"reader", "acme", "a1", "github", ""},
			Decision{Allowed: true, RuleID: "gh-read", Reason: `allowed by rule "gh-read" (allow service=reader org=* account=* route=github tool=list_*)`}},
		{"session allowed by exact-tool allow", Request{"bot", "acme", "a1", "jira", ""},
			Decision{Allowed: true, RuleID: "jira-bot", Reason: `allowed by rule "jira-bot" (allow service=bot org=acme account=a1 route=jira tool=create_issue)`}},
		{"session denied by default", Request{"stranger", "acme", "a1", "github", ""},
			Decision{Reason: `no rule allows service "stranger" (org "acme", account "a1") to use route "github" (deny by default: route has rules)`}},
		{"session denied by tool-wide deny", Request{"intern", "acme", "a1", "linear", ""},
			Decision{RuleID: "lin-no-intern", Reason: `session to route "linear" denied by rule "lin-no-intern" (deny service=intern org=* account=* route=linear tool=*)`}},
		{"tool denied by tool-wide deny despite allow", Request{"intern", "acme", "a1", "linear", "list_issues"},
			Decision{RuleID: "lin-no-intern", Reason: `tool "list_issues" denied by rule "lin-no-intern" (deny service=intern org=* account=* route=linear tool=*)`}},
		{"wildcard allow", Request{"ci", "acme", "a1", "linear", "list_issues"},
			Decision{Allowed: true, RuleID: "lin-all", Reason: `allowed by rule "lin-all" (allow service=* org=* account=* route=linear tool=*)`}},
		{"exact account and tool", Request{"bot", "acme", "a1", "jira", "create_issue"},
			Decision{Allowed: true, RuleID: "jira-bot", Reason: `allowed by rule "jira-bot" (allow service=bot org=acme account=a1 route=jira tool=create_issue)`}},
		{"other account", Request{"bot", "acme", "a2", "jira", "create_issue"},
			Decision{Reason: `no rule allows service "bot" (org "acme", account "a2") to call tool "create_issue" on route "jira" (deny by default: route has rules)`}},
		{"other tool", Request{"bot", "acme", "a1", "jira", "delete_issue"},
			Decision{Reason: `no rule allows service "bot" (org "acme", account "a1") to call tool "delete_issue" on route "jira" (deny by default: route has rules)`}},
		{"quotes odd names", Request{"ci", "acme", "a1", "github", "delete_\"x\"\n"},
			Decision{RuleID: "gh-no-delete", Reason: `tool "delete_\"x\"\n" denied by rule "gh-no-delete" (deny service=* org=acme account=* route=github tool=delete_*)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, rs.Decide(tt.req)); diff != "" {
				t.Errorf("Decide(%+v) (-want +got):\n%s", tt.req, diff)
			}
		})
	}
}

func TestDecideSessionIgnoresToolLevelDeny(t *testing.T) {
	rs := mustCompile(t, []Rule{
		rule("no-list", "*", "*", "*", "r", "list_*", EffectDeny),
		rule("no-get", "*", "*", "*", "r", "get", EffectDeny),
		rule("all", "*", "*", "*", "r", "*", EffectAllow),
	})
	if d := rs.Decide(Request{"s", "o", "a", "r", ""}); !d.Allowed || d.RuleID != "all" {
		t.Errorf("session Decide = %+v, want allowed by %q", d, "all")
	}
	for _, tool := range []string{"list_x", "get"} {
		if d := rs.Decide(Request{"s", "o", "a", "r", tool}); d.Allowed {
			t.Errorf("Decide(tool %q) = %+v, want denied", tool, d)
		}
	}
}

func TestDecideWildcardRoute(t *testing.T) {
	rs := mustCompile(t, []Rule{
		rule("gh-ci", "ci", "*", "*", "github", "*", EffectAllow),
		rule("no-danger", "*", "*", "*", "*", "danger", EffectDeny),
		rule("ops-all", "ops", "*", "*", "*", "*", EffectAllow),
	})
	tests := []struct {
		name   string
		req    Request
		want   bool
		ruleID string
	}{
		{"exact route rule", Request{"ci", "o", "a", "github", "safe"}, true, "gh-ci"},
		{"wildcard deny reaches exact routes", Request{"ci", "o", "a", "github", "danger"}, false, "no-danger"},
		{"wildcard rules govern every route", Request{"ci", "o", "a", "gitlab", "safe"}, false, ""},
		{"wildcard allow on a route with exact rules", Request{"ops", "o", "a", "github", "safe"}, true, "ops-all"},
		{"wildcard allow elsewhere", Request{"ops", "o", "a", "gitlab", "safe"}, true, "ops-all"},
		{"wildcard deny elsewhere", Request{"ops", "o", "a", "gitlab", "danger"}, false, "no-danger"},
		{"empty route", Request{"ops", "o", "a", "", ""}, true, "ops-all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := rs.Decide(tt.req)
			if d.Allowed != tt.want || d.RuleID != tt.ruleID {
				t.Errorf("Decide(%+v) = %+v, want allowed=%v rule %q", tt.req, d, tt.want, tt.ruleID)
			}
		})
	}
}

// TestDecideOrderIndependent checks that the outcome does not depend on the
// order of the rules: any matching deny wins.
func TestDecideOrderIndependent(t *testing.T) {
	allow := rule("allow", "s", "*", "*", "r", "*", EffectAllow)
	deny := rule("deny", "*", "*", "*", "r", "t*", EffectDeny)
	for _, rules := range [][]Rule{{allow, deny}, {deny, allow}} {
		rs := mustCompile(t, rules)
		if d := rs.Decide(Request{"s", "o", "a", "r", "tool"}); d.Allowed || d.RuleID != "deny" {
			t.Errorf("rules %s,%s: Decide = %+v, want denied by %q", rules[0].ID, rules[1].ID, d, "deny")
		}
		if d := rs.Decide(Request{"s", "o", "a", "r", "other"}); !d.Allowed || d.RuleID != "allow" {
			t.Errorf("rules %s,%s: Decide = %+v, want allowed by %q", rules[0].ID, rules[1].ID, d, "allow")
		}
	}
}

func TestNoRules(t *testing.T) {
	empty := mustCompile(t, nil)
	for name, rs := range map[string]*Rules{"nil": nil, "empty": empty} {
		if d := rs.Decide(Request{"s", "o", "a", "r", "t"}); !d.Allowed {
			t.Errorf("%s rules: Decide = %+v, want allowed", name, d)
		}
		if got := rs.FilterTools(Request{Route: "r"}, []string{"a", "b"}); !cmp.Equal(got, []bool{true, true}) {
			t.Errorf("%s rules: FilterTools = %v, want all true", name, got)
		}
		if got := rs.Len(); got != 0 {
			t.Errorf("%s rules: Len() = %d, want 0", name, got)
		}
	}
}

func TestFilterTools(t *testing.T) {
	rs := mustCompile(t, testRules)
	names := []string{"list_repos", "get_file", "delete_repo", "", "list_"}
	tests := []struct {
		name string
		req  Request
		want []bool
	}{
		{"prefix allow", Request{Service: "reader", Org: "acme", Account: "a1", Route: "github"}, []bool{true, false, false, false, true}},
		{"allow all but denied prefix", Request{Service: "ci", Org: "acme", Account: "a1", Route: "github"}, []bool{true, true, false, false, true}},
		{"req.Tool is ignored", Request{Service: "ci", Org: "acme", Account: "a1", Route: "github", Tool: "delete_repo"}, []bool{true, true, false, false, true}},
		{"nothing allowed", Request{Service: "stranger", Org: "acme", Account: "a1", Route: "github"}, []bool{false, false, false, false, false}},
		{"open route", Request{Service: "stranger", Route: "slack"}, []bool{true, true, true, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, rs.FilterTools(tt.req, names)); diff != "" {
				t.Errorf("FilterTools (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecideAllowPathDoesNotAllocate(t *testing.T) {
	rs := mustCompile(t, testRules)
	for _, req := range []Request{
		{"ci", "acme", "a1", "github", "list_repos"},
		{"reader", "acme", "a1", "github", ""},
		{"ci", "acme", "a1", "slack", "post"},
	} {
		if n := testing.AllocsPerRun(100, func() { rs.Decide(req) }); n != 0 {
			t.Errorf("Decide(%+v) allocates %v times, want 0", req, n)
		}
	}
}
