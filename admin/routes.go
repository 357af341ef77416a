package admin

import (
	"context"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// Routes lists the routes.
func (s *Service) Routes(ctx context.Context) ([]storage.Route, error) {
	routes, err := s.d.State.Routes()
	if err != nil {
		return nil, internal("read routes", err)
	}
	return routes, nil
}

// PutRoute adds or replaces a route, filling in its defaults. It returns
// the route as stored and whether it is new; a replaced route keeps its
// creation time.
func (s *Service) PutRoute(ctx context.Context, route storage.Route) (storage.Route, bool, error) {
	if err := s.d.Checks.Route(&route); err != nil {
		return storage.Route{}, false, invalid(err)
	}
	created := true
	old, err := s.d.State.Route(route.Name)
	switch found, err := exists(err); {
	case err != nil:
		return storage.Route{}, false, internal("read route", err)
	case found:
		route.Created = old.Created
		created = false
	default:
		route.Created = s.now().UTC().Truncate(time.Second)
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpPutRoute, Route: &route}); err != nil {
		return storage.Route{}, false, writeError("write route", err)
	}
	return route, created, nil
}

// DeleteRoute removes the route named name.
func (s *Service) DeleteRoute(ctx context.Context, name string) error {
	ok, err := s.found(ctx, func() (bool, error) {
		_, err := s.d.State.Route(name)
		return exists(err)
	})
	if err != nil {
		return internal("read route", err)
	}
	if !ok {
		return notFoundf("no route named %q; list them with `mcpgw route list`", name)
	}
	if err := s.d.Writes.Apply(ctx, cluster.Command{Op: cluster.OpDeleteRoute, Name: name}); err != nil {
		return writeError("delete route", err)
	}
	return nil
}
