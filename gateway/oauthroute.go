package gateway

// RouteName returns the name of the route that serves target, as a
// session for target would be routed: the route whose URL is its longest
// prefix. Its error says how to add a route.
func (g *Gateway) RouteName(target string) (string, error) {
	st, err := g.policy()
	if err != nil {
		return "", err
	}
	r, _, err := st.routes.match(target)
	if err != nil {
		return "", err
	}
	return r.Name, nil
}
