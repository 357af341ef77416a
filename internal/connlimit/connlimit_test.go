package connlimit

import (
	"io"
	"net"
	"testing"
	"time"
)

func tcp(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1234} }

func TestLimiterCaps(t *testing.T) {
	tests := []struct {
		name     string
		max, per int
		remotes  []net.Addr
		want     []Reason
	}{
		{"per address", 10, 2, []net.Addr{tcp("10.0.0.1"), tcp("10.0.0.1"), tcp("10.0.0.1"), tcp("10.0.0.2")},
			[]Reason{"", "", ReasonPerAddrCap, ""}},
		{"listener", 2, 5, []net.Addr{tcp("10.0.0.1"), tcp("10.0.0.2"), tcp("10.0.0.3")},
			[]Reason{"", "", ReasonListenerCap}},
		{"IPv6 /64 is one address", 10, 1, []net.Addr{tcp("2001:db8::1"), tcp("2001:db8::2"), tcp("2001:db8:0:1::1")},
			[]Reason{"", ReasonPerAddrCap, ""}},
		{"IPv4-mapped IPv6 is IPv4", 10, 1, []net.Addr{tcp("10.0.0.1"), tcp("::ffff:10.0.0.1")},
			[]Reason{"", ReasonPerAddrCap}},
		{"no address counts only in total", 2, 1, []net.Addr{&net.UnixAddr{Name: "@"}, &net.UnixAddr{Name: "@"}, &net.UnixAddr{Name: "@"}},
			[]Reason{"", "", ReasonListenerCap}},
		{"no caps", 0, 0, []net.Addr{tcp("10.0.0.1"), tcp("10.0.0.1")}, []Reason{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.max, tt.per)
			for i, r := range tt.remotes {
				if got, want := l.Acquire(r), tt.want[i]; got != want {
					t.Fatalf("Acquire #%d (%v)=%q, want %q", i, r, got, want)
				}
			}
		})
	}
}

func TestLimiterReleaseFreesSlot(t *testing.T) {
	l := New(1, 1)
	a := tcp("10.0.0.1")
	if r := l.Acquire(a); r != "" {
		t.Fatalf("first Acquire=%q", r)
	}
	if r := l.Acquire(a); r != ReasonListenerCap {
		t.Fatalf("second Acquire=%q, want %q", r, ReasonListenerCap)
	}
	l.Release(a)
	if got := l.Open(); got != 0 {
		t.Fatalf("Open()=%d after Release, want 0", got)
	}
	if got := len(l.byAddr); got != 0 {
		t.Fatalf("%d per-address entries after Release, want 0", got)
	}
	if r := l.Acquire(a); r != "" {
		t.Fatalf("Acquire after Release=%q, want a slot", r)
	}
}

// TestListenerRefusesOverCap checks that a connection over the cap gets the
// refusal and is closed, while the ones within it are served, and that
// closing a served connection frees its slot for the next.
func TestListenerRefusesOverCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused []Reason
	ln := &Listener{Listener: raw, Limiter: New(1, 0),
		Refusal:  func(r Reason) []byte { return []byte("busy: " + string(r)) },
		OnRefuse: func(r Reason) { refused = append(refused, r) }}
	defer ln.Close()
	accepted := make(chan net.Conn)
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()

	first, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	served := <-accepted

	second, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(second)
	if err != nil {
		t.Fatalf("read refusal: %v", err)
	}
	if want := "busy: listener_cap"; string(got) != want {
		t.Fatalf("refused connection read %q, want %q then EOF", got, want)
	}

	served.Close()
	third, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(20 * time.Second):
		t.Fatal("connection after a slot was freed was not accepted")
	}
	ln.Close()
	for range accepted {
	}
	if len(refused) != 1 || refused[0] != ReasonListenerCap {
		t.Fatalf("OnRefuse saw %v, want [listener_cap]", refused)
	}
}
