package gateway

import (
	"errors"
	"log/slog"

	"github.com/mcpgw/mcpgw/transport"
)

// ServeFramed serves one session over a framed stream (a QUIC stream, a
// Unix socket connection): it reads the open frame, prepares the session
// it asks for, answers, and runs the session until either side ends it or
// the gateway shuts down. transportName labels metrics and logs; remote is
// the peer's address for the audit log. It returns when the session ends.
func (g *Gateway) ServeFramed(st transport.FramedStream, transportName, remote string) {
	open, err := transport.ReadOpen(g.ctx, st, g.opts.OpenFrameTimeout)
	if err != nil {
		g.metrics.refusalsTotal.WithLabelValues("bad_open_frame").Inc()
		g.logger.Debug("open frame refused", slog.String("transport", transportName), slog.Any("error", err))
		return
	}
	f := open.Frame
	s, err := g.prepareSession(g.ctx, sessionRequest{
		token: f.Token, target: f.Target, route: f.Route, org: f.Org, account: f.Account, framed: true, remote: remote,
	}, transportName)
	if err != nil {
		var ref *transport.Refusal
		if !errors.As(err, &ref) {
			g.logger.Error("session setup failed", slog.String("transport", transportName), slog.Any("error", err))
		}
		open.Refuse(err)
		return
	}
	down, err := open.Accept(transport.LineOptions{MaxMessageBytes: g.opts.MaxMessageBytes})
	if err != nil {
		s.discard()
		return
	}
	s.down = down
	g.sessions.Add(1)
	defer g.sessions.Done()
	s.run(g.ctx)
}
