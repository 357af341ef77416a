package policy

import (
	"errors"
	"fmt"
	"strings"
)

// Effect is what a rule does to the requests it matches.
type Effect string

// Rule effects.
const (
	EffectAllow Effect = "allow"
	EffectDeny  Effect = "deny"
)

// Rule allows or denies a service the use of a route, or of some of its
// tools, for an org and account.
type Rule struct {
	ID      string // unique among the rules; named in decisions and audit records
	Service string // service name, or "*" for any
	Org     string // org, or "*" for any
	Account string // account, or "*" for any
	Route   string // route name, or "*" for any
	Tool    string // tool name, "*" for any, or a prefix pattern ending in "*" such as "list_*"
	Effect  Effect
}

// Validate reports whether the rule is well formed.
func (r Rule) Validate() error {
	if r.ID == "" {
		return errors.New("rule has no id; give every rule a unique id")
	}
	if len(r.ID) > maxIDLen {
		return fmt.Errorf("rule id %.20q... is longer than %d characters; use a shorter id", r.ID, maxIDLen)
	}
	if r.Effect != EffectAllow && r.Effect != EffectDeny {
		return fmt.Errorf("rule %q: effect %q is invalid; use %q or %q", r.ID, r.Effect, EffectAllow, EffectDeny)
	}
	for _, f := range [...]struct{ name, value string }{
		{"service", r.Service}, {"org", r.Org}, {"account", r.Account}, {"route", r.Route},
	} {
		if err := checkSelector(f.name, f.value); err != nil {
			return fmt.Errorf("rule %q: %w", r.ID, err)
		}
	}
	if r.Tool == "" {
		return fmt.Errorf("rule %q: tool is empty; use an exact name, \"*\" for any, or a prefix pattern like \"list_*\"", r.ID)
	}
	if i := strings.IndexByte(r.Tool, '*'); i >= 0 && i != len(r.Tool)-1 {
		return fmt.Errorf("rule %q: tool pattern %q is invalid; use an exact name, \"*\" for any, or a prefix ending in a single \"*\" like \"list_*\"", r.ID, r.Tool)
	}
	return nil
}

// checkSelector validates a field that is an exact name or "*".
func checkSelector(field, value string) error {
	if value == "" {
		return fmt.Errorf("%s is empty; use an exact name, or \"*\" for any", field)
	}
	if value != "*" && strings.Contains(value, "*") {
		return fmt.Errorf("%s %q is invalid: \"*\" must stand alone; use an exact name, or \"*\" for any", field, value)
	}
	return nil
}

// Request is what a rule decision is about. A Tool of "" asks whether the
// service may open a session to the route at all; tools/call must pass the
// called tool's name, and a call that names no tool must be refused before it
// gets here.
//
// Request has the same fields as Key, so Key(req) converts it.
type Request struct {
	Service, Org, Account, Route, Tool string
}

// Decision is the outcome of Rules.Decide.
type Decision struct {
	Allowed bool
	RuleID  string // the rule that decided; "" when a default applied
	Reason  string // a sentence for error messages, logs and audit
}

// reasonNoRules is the Reason for requests to routes that no rule governs.
const reasonNoRules = "route has no rules (allow by default)"

type toolMatch uint8

const (
	toolExact toolMatch = iota
	toolAny
	toolPrefix
)

type compiledRule struct {
	Rule
	tool        toolMatch
	prefix      string // for toolPrefix: Tool without its trailing "*"
	desc        string // "deny service=* org=acme account=* route=github tool=delete_*"
	allowReason string // Reason for requests this rule allows, built once
}

func (c *compiledRule) matchesWho(req *Request) bool {
	return (c.Service == "*" || c.Service == req.Service) &&
		(c.Org == "*" || c.Org == req.Org) &&
		(c.Account == "*" || c.Account == req.Account)
}

func (c *compiledRule) matchesTool(tool string) bool {
	switch c.tool {
	case toolAny:
		return true
	case toolPrefix:
		return strings.HasPrefix(tool, c.prefix)
	default:
		return tool == c.Tool
	}
}

// Rules is a compiled, immutable rule set, safe for concurrent use. A nil
// *Rules allows everything.
//
// Semantics: a route that no rule names (counting rules for route "*") is
// open: every request to it is allowed. Once any rule names a route, requests
// to it are denied unless a matching rule allows them, and any matching deny
// wins over every allow, whatever the order or specificity of the rules.
//
// For the session check (Tool ""), every matching allow rule counts, whatever
// its tool, because a service that may call some tool must be able to open
// the session; only deny rules with tool "*" deny the session. Tool-level
// denies still apply to each tools/call.
type Rules struct {
	byRoute  map[string][]*compiledRule // rules naming the route exactly, merged in list order with the "*" rules
	anyRoute []*compiledRule            // rules for route "*": all that govern a route absent from byRoute
	n        int
}

// CompileRules validates and compiles rules. IDs must be unique.
func CompileRules(rules []Rule) (*Rules, error) {
	rs := &Rules{byRoute: make(map[string][]*compiledRule), n: len(rules)}
	seen := make(map[string]bool, len(rules))
	compiled := make([]*compiledRule, 0, len(rules))
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("rule %d: id %q is used twice; give every rule a unique id", i+1, r.ID)
		}
		seen[r.ID] = true
		c := &compiledRule{Rule: r}
		switch {
		case r.Tool == "*":
			c.tool = toolAny
		case strings.HasSuffix(r.Tool, "*"):
			c.tool, c.prefix = toolPrefix, strings.TrimSuffix(r.Tool, "*")
		}
		c.desc = fmt.Sprintf("%s service=%s org=%s account=%s route=%s tool=%s",
			r.Effect, r.Service, r.Org, r.Account, r.Route, r.Tool)
		c.allowReason = fmt.Sprintf("allowed by rule %q (%s)", r.ID, c.desc)
		compiled = append(compiled, c)
		if r.Route == "*" {
			rs.anyRoute = append(rs.anyRoute, c)
		}
	}
	// Keep list order within each route so that the first matching rule of
	// a kind is the one reported.
	for _, c := range compiled {
		if c.Route != "*" {
			rs.byRoute[c.Route] = nil
		}
	}
	for _, c := range compiled {
		if c.Route == "*" {
			for route := range rs.byRoute {
				rs.byRoute[route] = append(rs.byRoute[route], c)
			}
		} else {
			rs.byRoute[c.Route] = append(rs.byRoute[c.Route], c)
		}
	}
	return rs, nil
}

// Len returns the number of rules.
func (r *Rules) Len() int {
	if r == nil {
		return 0
	}
	return r.n
}

// forRoute returns the rules that govern route; none means the route is open.
func (r *Rules) forRoute(route string) []*compiledRule {
	if r == nil {
		return nil
	}
	if rs, ok := r.byRoute[route]; ok {
		return rs
	}
	return r.anyRoute
}

// evaluate applies rules (non-empty) to req. It returns whether req is
// allowed and the deciding rule, nil when denied by default.
func evaluate(rules []*compiledRule, req *Request) (bool, *compiledRule) {
	var allow *compiledRule
	for _, c := range rules {
		if !c.matchesWho(req) {
			continue
		}
		if req.Tool == "" {
			if c.Effect == EffectDeny {
				if c.tool == toolAny {
					return false, c
				}
				continue
			}
		} else if !c.matchesTool(req.Tool) {
			continue
		} else if c.Effect == EffectDeny {
			return false, c
		}
		if allow == nil {
			allow = c
		}
	}
	return allow != nil, allow
}

// Decide decides req. It does not allocate unless it denies.
func (r *Rules) Decide(req Request) Decision {
	rules := r.forRoute(req.Route)
	if len(rules) == 0 {
		return Decision{Allowed: true, Reason: reasonNoRules}
	}
	allowed, c := evaluate(rules, &req)
	switch {
	case allowed:
		return Decision{Allowed: true, RuleID: c.ID, Reason: c.allowReason}
	case c != nil && req.Tool == "":
		return Decision{RuleID: c.ID, Reason: fmt.Sprintf("session to route %q denied by rule %q (%s)", req.Route, c.ID, c.desc)}
	case c != nil:
		return Decision{RuleID: c.ID, Reason: fmt.Sprintf("tool %q denied by rule %q (%s)", req.Tool, c.ID, c.desc)}
	case req.Tool == "":
		return Decision{Reason: fmt.Sprintf("no rule allows service %q (org %q, account %q) to use route %q (deny by default: route has rules)",
			req.Service, req.Org, req.Account, req.Route)}
	default:
		return Decision{Reason: fmt.Sprintf("no rule allows service %q (org %q, account %q) to call tool %q on route %q (deny by default: route has rules)",
			req.Service, req.Org, req.Account, req.Tool, req.Route)}
	}
}

// FilterTools reports, for each tool name, whether req's service may call it;
// req.Tool is ignored. It serves tools/list filtering. Empty names are
// refused: no tool has one.
func (r *Rules) FilterTools(req Request, names []string) []bool {
	ok := make([]bool, len(names))
	rules := r.forRoute(req.Route)
	for i, name := range names {
		if name == "" {
			continue
		}
		if len(rules) == 0 {
			ok[i] = true
			continue
		}
		req.Tool = name
		ok[i], _ = evaluate(rules, &req)
	}
	return ok
}
