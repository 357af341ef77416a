package auditsink

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/mcpgw/mcpgw/storage"
)

// SDID is the SD-ID of the structured data element each message carries.
// 32473 is the private enterprise number RFC 5612 reserves for examples and
// documentation; the element's parameters are:
//
//	id    node/seq, the record's stable id: a record sent again carries it again
//	node  the node that wrote the record
//	seq   its sequence number in that node's log
//	kind  session_open, session_close, tool_call or refusal
//	hash  the record's chain hash (`mcpgw audit verify` checks the chain)
const SDID = "mcpgw@32473"

// timeFormat is RFC 5424's TIMESTAMP at its finest (microseconds), UTC.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

// appendMessage appends r as one octet-counted RFC 5424 message:
//
//	LEN SP <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [SD] MSG
//
// MSGID is the record's kind and MSG the record as JSON, exactly as the
// audit log stores it (hash included). Everything is a function of the
// record alone, so a record sent twice is the same bytes twice.
func (s *Syslog) appendMessage(buf []byte, r *storage.AuditRecord) ([]byte, error) {
	msg, err := json.Marshal(r)
	if err != nil {
		return buf, err
	}
	pri := s.pri[0]
	switch r.Outcome {
	case storage.AuditError:
		pri = s.pri[1]
	case storage.AuditRefused:
		pri = s.pri[2]
	}
	var b strings.Builder
	b.Grow(256 + len(msg))
	b.WriteByte('<')
	b.WriteString(strconv.Itoa(pri))
	b.WriteString(">1 ")
	b.WriteString(r.Time.UTC().Format(timeFormat))
	b.WriteByte(' ')
	b.WriteString(s.cfg.Hostname)
	b.WriteByte(' ')
	b.WriteString(s.cfg.AppName)
	b.WriteString(" - ")
	b.WriteString(sanitizeHeader(string(r.Kind), 32))
	b.WriteString(" [")
	b.WriteString(SDID)
	seq := strconv.FormatUint(r.Seq, 10)
	for _, p := range [][2]string{{"id", r.Node + "/" + seq}, {"node", r.Node}, {"seq", seq}, {"kind", string(r.Kind)}, {"hash", r.Hash}} {
		b.WriteByte(' ')
		b.WriteString(p[0])
		b.WriteString(`="`)
		writeParamValue(&b, p[1])
		b.WriteByte('"')
	}
	b.WriteString("] ")
	b.Write(msg)
	out := strconv.AppendInt(buf, int64(b.Len()), 10)
	out = append(out, ' ')
	return append(out, b.String()...), nil
}

// writeParamValue escapes an SD-PARAM value as RFC 5424 §6.3.3 requires.
func writeParamValue(b *strings.Builder, v string) {
	for _, r := range strings.ToValidUTF8(v, "\uFFFD") {
		switch r {
		case '"', '\\', ']':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
}

// sanitizeHeader makes s a header field of at most max PRINTUSASCII
// characters, "-" (the nil value) when nothing is left.
func sanitizeHeader(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		if c := s[i]; c >= 33 && c <= 126 {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}
