package node

import (
	"log/slog"

	"github.com/mcpgw/mcpgw/gateway/auditsink"
)

// auditSyslogConfig is the syslog sink's configuration of c, without the
// log it ships.
func (c *Config) auditSyslogConfig() auditsink.SyslogConfig {
	sc := auditsink.DefaultSyslogConfig()
	sc.URL, sc.CAFile, sc.ServerName = c.AuditSyslog, c.AuditSyslogCA, c.AuditSyslogServerName
	sc.Facility, sc.AppName = c.AuditSyslogFacility, c.AuditSyslogAppName
	if c.auditSyslogTune != nil {
		c.auditSyslogTune(&sc)
	}
	return sc
}

// startAuditSink starts shipping the audit log to the sinks configured. A
// receiver that cannot be reached is no reason not to start: the sink
// retries, and the records wait in the audit log.
func (n *Node) startAuditSink() error {
	if n.cfg.AuditOTLPEndpoint != "" {
		oc := auditsink.DefaultOTLPConfig()
		oc.Endpoint, oc.NodeID = n.cfg.AuditOTLPEndpoint, n.audit.node
		oc.Log, oc.Logger, oc.Registerer = n.audit.log, n.logger, n.metrics.registry
		sink, err := auditsink.NewOTLP(oc)
		if err != nil {
			return err
		}
		if err := sink.Start(); err != nil {
			return err
		}
		n.audit.otlp = sink
		n.logger.Info("shipping the audit log as OTLP logs", slog.String("audit_otlp", n.cfg.AuditOTLPEndpoint))
	}
	if n.cfg.AuditSyslog == "" {
		return nil
	}
	sc := n.cfg.auditSyslogConfig()
	sc.Log, sc.Logger, sc.Registerer = n.audit.log, n.logger, n.metrics.registry
	sink, err := auditsink.NewSyslog(sc)
	if err != nil {
		return err
	}
	if err := sink.Start(); err != nil {
		return err
	}
	n.audit.sink = sink
	n.logger.Info("shipping the audit log to syslog", slog.String("audit_syslog", n.cfg.AuditSyslog))
	return nil
}

// stopAuditSink stops the sinks, saving their cursors.
func (n *Node) stopAuditSink() {
	if n.audit.otlp != nil {
		n.audit.otlp.Close()
		n.audit.otlp = nil
	}
	if n.audit.sink != nil {
		n.audit.sink.Close()
		n.audit.sink = nil
	}
}
