package admin

import (
	"context"
	"slices"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
)

// Rules lists the allow/deny rules.
func (s *Service) Rules(ctx context.Context) ([]storage.Rule, error) {
	rules, err := s.d.State.Rules()
	if err != nil {
		return nil, internal("read rules", err)
	}
	return rules, nil
}

// PutRule adds or replaces a rule.
func (s *Service) PutRule(ctx context.Context, rule storage.Rule) (storage.Rule, error) {
	pr := policy.Rule{ID: rule.ID, Service: rule.Service, Org: rule.Org, Account: rule.Account, Route: rule.Route, Tool: rule.Tool, Effect: policy.Effect(rule.Effect)}
	if err := pr.Validate(); err != nil {
		return storage.Rule{}, invalidf("rule: %v", err)
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpPutRule, Rule: &rule}); err != nil {
		return storage.Rule{}, writeError("write rule", err)
	}
	return rule, nil
}

// DeleteRule removes the rule with the given id.
func (s *Service) DeleteRule(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "rule", id, func() (bool, error) {
		rules, err := s.d.State.Rules()
		return slices.ContainsFunc(rules, func(x storage.Rule) bool { return x.ID == id }), err
	}, cluster.OpDeleteRule)
}

// Limits lists the rate limits.
func (s *Service) Limits(ctx context.Context) ([]storage.Limit, error) {
	limits, err := s.d.State.Limits()
	if err != nil {
		return nil, internal("read limits", err)
	}
	return limits, nil
}

// PutLimit adds or replaces a rate limit.
func (s *Service) PutLimit(ctx context.Context, l storage.Limit) (storage.Limit, error) {
	pl, err := s.d.Checks.Limit(l)
	if err == nil {
		err = pl.Validate()
	}
	if err != nil {
		return storage.Limit{}, invalidf("limit: %v", err)
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpPutLimit, Limit: &l}); err != nil {
		return storage.Limit{}, writeError("write limit", err)
	}
	return l, nil
}

// DeleteLimit removes the rate limit with the given id.
func (s *Service) DeleteLimit(ctx context.Context, id string) error {
	return s.deleteByID(ctx, "limit", id, func() (bool, error) {
		limits, err := s.d.State.Limits()
		return slices.ContainsFunc(limits, func(x storage.Limit) bool { return x.ID == id }), err
	}, cluster.OpDeleteLimit)
}

// deleteByID removes a rule or limit, refusing an unknown id.
func (s *Service) deleteByID(ctx context.Context, what, id string, exists func() (bool, error), op cluster.Op) error {
	ok, err := s.found(ctx, exists)
	if err != nil {
		return internal("read "+what+"s", err)
	}
	if !ok {
		return notFoundf("no %s with id %q; list them with `mcpgw %s list`", what, id, what)
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: op, Name: id}); err != nil {
		return writeError("delete "+what, err)
	}
	return nil
}
