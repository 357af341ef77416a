package gateway

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/transport"
)

// tokenCheckInterval is how often the node re-checks the tokens of its live
// sessions. A revocation applied on any node reaches this one through raft,
// so a revoked or expired token's sessions end within this interval of the
// write being applied here.
const tokenCheckInterval = 500 * time.Millisecond

// liveSessions indexes the node's running sessions by the id of the token
// that opened them, so that a revocation or an expiry ends each of them.
type liveSessions struct {
	mu      sync.Mutex
	byToken map[string]map[*session]struct{} // token id → sessions; guarded by mu
}

func (l *liveSessions) add(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byToken == nil {
		l.byToken = make(map[string]map[*session]struct{})
	}
	set := l.byToken[s.claims.ID]
	if set == nil {
		set = make(map[*session]struct{})
		l.byToken[s.claims.ID] = set
	}
	set[s] = struct{}{}
}

func (l *liveSessions) remove(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	set := l.byToken[s.claims.ID]
	delete(set, s)
	if len(set) == 0 {
		delete(l.byToken, s.claims.ID)
	}
}

// watchSessionTokens ends sessions whose token is revoked or expired, until
// the node closes. Tokens are checked against the local policy view, which
// every replicated write (a revocation made through any node) rebuilds.
func (g *Gateway) watchSessionTokens() {
	if g.opts.InsecureDev {
		return // sessions carry no token
	}
	g.watchers.Add(1)
	go func() {
		defer g.watchers.Done()
		t := time.NewTicker(tokenCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-g.ctx.Done():
				return
			case <-t.C:
				g.checkSessionTokens()
			}
		}
	}()
}

// checkSessionTokens ends every live session whose token the current policy
// view no longer accepts.
func (g *Gateway) checkSessionTokens() {
	st, err := g.policy()
	if err != nil {
		g.logger.Warn("cannot re-check the tokens of live sessions", slog.Any("error", err))
		return
	}
	now := g.now()
	type ending struct {
		s   *session
		err error
	}
	var end []ending
	g.live.mu.Lock()
	for _, set := range g.live.byToken {
		var err error
		checked := false
		for s := range set {
			if !checked {
				// Every session in set holds the same claims.
				err, checked = st.keyring.Check(s.claims, now), true
			}
			if err == nil {
				break
			}
			end = append(end, ending{s, err})
		}
	}
	g.live.mu.Unlock()
	for _, e := range end {
		e.s.endForToken(e.err)
	}
}

// endForToken ends the session because its token stopped being valid:
// calls outstanding and any read before the end get
// transport.CodeUnauthorized with what happened and what to do, and a
// WebSocket closes with that reason.
func (s *session) endForToken(cause error) {
	end := &sessionEnd{
		reason: "token_expired",
		close:  "service token expired; get a new one with `mcpgw token issue`",
	}
	if errors.Is(cause, policy.ErrTokenRevoked) {
		end.reason = "token_revoked"
		end.close = "service token revoked; get a new one with `mcpgw token issue`"
	}
	end.err = rpcError(transport.CodeUnauthorized, "session ended: "+cause.Error(), map[string]string{"reason": end.reason})
	if !s.ended.CompareAndSwap(nil, end) {
		return
	}
	s.g.metrics.refusalsTotal.WithLabelValues(end.reason).Inc()
	s.logger.Info("ending session: its service token is no longer valid", slog.String("reason", end.reason), slog.String("token_id", s.claims.ID))
	s.stop()
}
