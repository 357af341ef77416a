// Package syslogtest is a syslog receiver for tests: it accepts RFC 5424
// messages with octet-counting framing (RFC 6587 §3.4.1, RFC 5425) over
// TCP or TLS on loopback, parses them strictly and keeps them, and can be
// stopped and started again on the same address to play a receiver outage.
package syslogtest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// maxFrame bounds one message, so a broken length cannot make the
// receiver buffer without end.
const maxFrame = 1 << 20

// Message is one parsed syslog message.
type Message struct {
	Pri                                         int
	Timestamp, Hostname, AppName, ProcID, MsgID string
	// SDID and Params are the one structured data element.
	SDID   string
	Params map[string]string
	// Msg is the MSG part.
	Msg []byte
	// Frame is the whole message as received, without its length prefix.
	Frame []byte
}

// Receiver is a syslog receiver on loopback.
type Receiver struct {
	t    testing.TB
	tls  *tls.Config // nil: plain TCP
	addr string

	mu    sync.Mutex
	ln    net.Listener      // nil while stopped
	conns map[net.Conn]bool // open connections
	msgs  []Message         // every message received, in order
	errs  []error           // framing and parse errors
	wg    sync.WaitGroup    // the accept loop and connection readers
}

// Start starts a receiver on 127.0.0.1:0, serving TLS with conf when it is
// not nil. It stops at the end of the test.
func Start(t testing.TB, conf *tls.Config) *Receiver {
	t.Helper()
	r := &Receiver{t: t, tls: conf, conns: map[net.Conn]bool{}}
	r.listen("127.0.0.1:0")
	t.Cleanup(r.Stop)
	return r
}

// Addr returns the receiver's host:port; it stays the same across Stop and
// Restart.
func (r *Receiver) Addr() string { return r.addr }

func (r *Receiver) listen(addr string) {
	r.t.Helper()
	var ln net.Listener
	var err error
	// The port was just released: binding it again can take a moment
	// while the kernel lets go of it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // a retry interval, not synchronisation
	}
	if err != nil {
		r.t.Fatalf("syslog receiver: listen %s: %v", addr, err)
	}
	if r.tls != nil {
		ln = tls.NewListener(ln, r.tls)
	}
	r.mu.Lock()
	r.ln, r.addr = ln, ln.Addr().String()
	r.mu.Unlock()
	r.wg.Add(1)
	go r.accept(ln)
}

func (r *Receiver) accept(ln net.Listener) {
	defer r.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.ln != ln {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[c] = true
		r.wg.Add(1)
		r.mu.Unlock()
		go r.read(c)
	}
}

func (r *Receiver) read(c net.Conn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	for {
		frame, err := ReadFrame(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				r.fail(err)
			}
			return
		}
		m, err := Parse(frame)
		if err != nil {
			r.fail(err)
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

func (r *Receiver) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// Stop closes the listener and every connection at once, losing what the
// receiver had not read yet, as a receiver that goes down does. It is safe
// to call more than once.
func (r *Receiver) Stop() {
	r.mu.Lock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Restart starts the receiver again on the address it had.
func (r *Receiver) Restart() {
	r.t.Helper()
	r.Stop()
	r.listen(r.addr)
}

// Messages returns every message received so far, in order.
func (r *Receiver) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

// Errors returns the framing and parse errors seen so far.
func (r *Receiver) Errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// ReadFrame reads one octet-counted frame: a length (1 to 7 digits, no
// leading zero), a space, then that many bytes.
func ReadFrame(br *bufio.Reader) ([]byte, error) {
	var n int
	for i := 0; ; i++ {
		c, err := br.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if c == ' ' && i > 0 {
			break
		}
		if c < '0' || c > '9' || (i == 0 && c == '0') || i >= 7 {
			return nil, fmt.Errorf("syslog frame: bad length byte %q at %d", c, i)
		}
		n = n*10 + int(c-'0')
	}
	if n > maxFrame {
		return nil, fmt.Errorf("syslog frame: length %d over %d", n, maxFrame)
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(br, frame); err != nil {
		return nil, fmt.Errorf("syslog frame: %d bytes announced: %w", n, err)
	}
	return frame, nil
}

// Parse parses an RFC 5424 message with exactly one structured data
// element, strictly: a malformed header, an unescaped or unterminated
// parameter value, or a duplicated parameter is an error.
func Parse(frame []byte) (Message, error) {
	m := Message{Frame: frame, Params: map[string]string{}}
	rest := frame
	bad := func(what string) (Message, error) {
		return Message{}, fmt.Errorf("syslog message %.80q: %s", frame, what)
	}
	if len(rest) < 3 || rest[0] != '<' {
		return bad("no PRI")
	}
	end := bytes.IndexByte(rest, '>')
	if end < 2 || end > 4 {
		return bad("bad PRI")
	}
	pri, err := strconv.Atoi(string(rest[1:end]))
	if err != nil || pri > 191 || (end > 2 && rest[1] == '0') {
		return bad("bad PRI")
	}
	m.Pri = pri
	rest = rest[end+1:]
	if !bytes.HasPrefix(rest, []byte("1 ")) {
		return bad("VERSION is not 1")
	}
	rest = rest[2:]
	fields := make([]string, 5)
	limits := []int{64, 255, 48, 128, 32}
	for i := range fields {
		sp := bytes.IndexByte(rest, ' ')
		if sp < 1 || sp > limits[i] {
			return bad(fmt.Sprintf("header field %d missing or too long", i+2))
		}
		for _, c := range rest[:sp] {
			if c < 33 || c > 126 {
				return bad(fmt.Sprintf("header field %d is not PRINTUSASCII", i+2))
			}
		}
		fields[i] = string(rest[:sp])
		rest = rest[sp+1:]
	}
	m.Timestamp, m.Hostname, m.AppName, m.ProcID, m.MsgID = fields[0], fields[1], fields[2], fields[3], fields[4]
	if _, err := time.Parse(time.RFC3339Nano, m.Timestamp); err != nil {
		return bad("TIMESTAMP is not RFC 3339")
	}
	if len(rest) == 0 || rest[0] != '[' {
		return bad("no structured data element")
	}
	rest = rest[1:]
	sp := bytes.IndexAny(rest, " ]")
	if sp < 1 || sp > 32 {
		return bad("bad SD-ID")
	}
	m.SDID = string(rest[:sp])
	rest = rest[sp:]
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
		eq := bytes.IndexByte(rest, '=')
		if eq < 1 || eq > 32 || len(rest) < eq+2 || rest[eq+1] != '"' {
			return bad("bad SD-PARAM")
		}
		name := string(rest[:eq])
		if bytes.ContainsAny(rest[:eq], " ]\"") {
			return bad("bad PARAM-NAME")
		}
		rest = rest[eq+2:]
		var val []byte
		closed := false
		for i := 0; i < len(rest); i++ {
			c := rest[i]
			if c == '\\' && i+1 < len(rest) && (rest[i+1] == '"' || rest[i+1] == '\\' || rest[i+1] == ']') {
				val = append(val, rest[i+1])
				i++
				continue
			}
			if c == ']' {
				return bad("unescaped ] in PARAM-VALUE")
			}
			if c == '"' {
				rest, closed = rest[i+1:], true
				break
			}
			val = append(val, c)
		}
		if !closed {
			return bad("unterminated PARAM-VALUE")
		}
		if _, dup := m.Params[name]; dup {
			return bad("duplicate SD-PARAM " + name)
		}
		m.Params[name] = string(val)
	}
	if len(rest) < 2 || rest[0] != ']' || rest[1] != ' ' {
		return bad("structured data not followed by MSG")
	}
	m.Msg = rest[2:]
	return m, nil
}
