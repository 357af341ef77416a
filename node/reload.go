package node

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"time"
)

// Live are the settings a running node takes without a restart.
type Live struct {
	// MaxConns, MaxConnsPerIP and AdminMaxConns are as in Config.
	MaxConns, MaxConnsPerIP, AdminMaxConns int
}

// Reload applies l and re-reads the serving TLS certificate from its files
// (a renewed certificate replaces the old one for new handshakes). It
// returns what changed, in words for a log line. On an error nothing is
// changed: a bad certificate file or caps the open-file limit cannot hold
// leave the node as it was.
func (n *Node) Reload(l Live) ([]string, error) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	if n.lns.sessions == nil {
		return nil, fmt.Errorf("reload: the node has not started")
	}
	next := n.cfg
	next.MaxConns, next.MaxConnsPerIP, next.AdminMaxConns = l.MaxConns, l.MaxConnsPerIP, l.AdminMaxConns
	caps, err := next.resolveConnCaps(openFileLimit())
	if err != nil {
		return nil, fmt.Errorf("reload: %w", err)
	}
	var cert *tls.Certificate
	if old := n.servingCert.Load(); old != nil {
		c, err := servingCertificate(n.cfg.TLSCertFile, n.cfg.TLSKeyFile, n.cfg.clusterTLSDir())
		if err != nil {
			return nil, fmt.Errorf("reload: %w; the certificate in use is kept", err)
		}
		if !bytes.Equal(c.Certificate[0], old.Certificate[0]) {
			cert = &c
		}
	}

	var changed []string
	if !n.reloaded {
		n.liveCaps, n.reloaded = n.lns.caps, true
	}
	// n.lns.caps stays as at start: refusal messages read it without a lock
	// (they name the flag to raise, which matters more than the number).
	old := n.liveCaps
	if caps != old {
		n.lns.sessions.SetLimits(caps.sessions, caps.perIP)
		n.lns.quic.SetLimits(caps.sessions, caps.perIP)
		n.lns.admin.SetLimits(caps.admin, caps.perIP)
		n.liveCaps = caps
		for _, c := range []struct {
			name     string
			old, new int
		}{{"max-conns", old.sessions, caps.sessions}, {"max-conns-per-ip", old.perIP, caps.perIP}, {"admin-max-conns", old.admin, caps.admin}} {
			if c.old != c.new {
				changed = append(changed, fmt.Sprintf("%s %d→%d", c.name, c.old, c.new))
			}
		}
	}
	if cert != nil {
		n.servingCert.Store(cert)
		changed = append(changed, fmt.Sprintf("TLS certificate %s (valid until %s)", n.cfg.servingCertFile(), cert.Leaf.NotAfter.Format(time.DateOnly)))
	}
	return changed, nil
}

func (n *Node) getServingCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return n.servingCert.Load(), nil
}
