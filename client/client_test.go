package client

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestWSBase(t *testing.T) {
	tests := []struct {
		addr   string
		want   string
		errMsg string
	}{
		{addr: "ws://gw.internal:7420", want: "ws://gw.internal:7420"},
		{addr: "wss://gw.internal", want: "wss://gw.internal"},
		{addr: "http://gw.internal:7420/", want: "ws://gw.internal:7420"},
		{addr: "https://gw.internal/prefix/", want: "wss://gw.internal/prefix"},
		{addr: "127.0.0.1:7420", want: "ws://127.0.0.1:7420"},
		{addr: "ftp://gw.internal", errMsg: "scheme must be ws, wss, http, https, quic or unix"},
		{addr: "ws://", errMsg: "is not ws://host:port"},
		{addr: "ws://%zz", errMsg: "is not ws://host:port"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			got, err := wsBase(tc.addr)
			if tc.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
					t.Fatalf("wsBase(%q)=%q, %v; want an error containing %q", tc.addr, got, err, tc.errMsg)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("wsBase(%q)=%q, %v; want %q", tc.addr, got, err, tc.want)
			}
		})
	}
}

func TestNewTransportNeedsTargetOrgAccount(t *testing.T) {
	for _, args := range [][3]string{
		{"", "org", "acct"},
		{"https://a.example/mcp", "", "acct"},
		{"https://a.example/mcp", "org", ""},
	} {
		if _, err := NewTransport("ws://127.0.0.1:1", args[0], args[1], args[2]); err == nil || !strings.Contains(err.Error(), "target, org and account are all required") {
			t.Errorf("NewTransport(%q) error %v, want one naming target, org and account", args, err)
		}
	}
}

func TestNewTransportURL(t *testing.T) {
	u, h, err := wsRequest("http://gw.internal:7420", "https://a.example/mcp?x=1", "org 1", "acct&1", options{token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u, "ws://gw.internal:7420/v1/mcp?account=acct%261&org=org+1&target=https%3A%2F%2Fa.example%2Fmcp%3Fx%3D1"; got != want {
		t.Errorf("url=%q, want %q", got, want)
	}
	if got, want := h.Get("Authorization"), "Bearer tok"; got != want {
		t.Errorf("Authorization=%q, want %q", got, want)
	}
}

func TestConnectGatewayDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = Connect(ctx, "https://a.example/mcp", "org1", "acct1", WithGateway(addr))
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	for _, part := range []string{"mcpgw: connect to https://a.example/mcp via " + addr, "connection refused"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not contain %q", err, part)
		}
	}
}
