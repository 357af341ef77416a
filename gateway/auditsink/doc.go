// Package auditsink ships a node's audit log to systems outside the
// cluster: a SIEM's syslog receiver (RFC 5424 over TCP or TLS) or an
// OpenTelemetry collector (OTLP logs over HTTP).
//
// A sink reads the records from the audit log itself (never from a queue
// in memory that a crash would lose), sends them, and persists in the log's
// file how far it has delivered, so it resumes there after a restart and
// resends after an outage: delivery is at least once, and a record sent
// twice carries the same id (node and sequence number) and the same bytes.
// A sink never sits on the data path: the proxy appends to the log and
// never waits for a sink, however slow or absent the receiver.
//
// The package must not decide what is audited (package gateway does) or
// write to the audit log beyond its own cursor.
package auditsink
