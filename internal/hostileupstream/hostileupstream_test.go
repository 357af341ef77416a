package hostileupstream

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// post calls tool over streamable HTTP with Authorization "Bearer t0k".
func post(t *testing.T, s *Server, tool string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"`+tool+`","arguments":{"text":"hi"}}}`))
	req.Header.Set("Authorization", "Bearer t0k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestScenarios: each tool misbehaves the way its documentation says.
func TestScenarios(t *testing.T) {
	s := Start(t)
	for _, tc := range []struct {
		tool        string
		status      int
		contentType string
		check       func(body []byte) bool
	}{
		{ToolEcho, 200, "application/json", func(b []byte) bool { return strings.Contains(string(b), `"text":"hi"`) }},
		{ToolEcho401, 401, "text/plain", func(b []byte) bool { return strings.Contains(string(b), "Bearer t0k") }},
		{ToolEcho403, 403, "text/plain", func(b []byte) bool { return strings.Contains(string(b), "QmVhcmVyIHQwaw==") }},
		{ToolEchoRPC, 401, "application/json", func(b []byte) bool { return strings.Contains(string(b), `"message":"bad credential Bearer t0k`) }},
		{ToolHuge, 200, "application/json", func(b []byte) bool { return len(b) > HugeBytes }},
		{ToolHugeDeclared, 200, "application/json", func(b []byte) bool { return len(b) > HugeBytes }},
		{ToolHugeSSE, 200, "text/event-stream", func(b []byte) bool { return len(b) > HugeBytes }},
		{ToolDeep, 200, "application/json", func(b []byte) bool { return strings.Contains(string(b), strings.Repeat("[", DeepLevels)) }},
		{ToolBadUTF8, 200, "application/json", func(b []byte) bool { return !utf8.Valid(b) }},
		{ToolMalformed, 200, "application/json", func(b []byte) bool { return !strings.HasSuffix(string(b), "}") }},
		{ToolUnrequested, 200, "text/event-stream", func(b []byte) bool {
			return strings.Index(string(b), `"id":987654321`) < strings.Index(string(b), `"id":3`)
		}},
		{ToolCaseFields, 200, "application/json", func(b []byte) bool { return strings.Contains(string(b), `"IsError":true`) }},
		{ToolDupFields, 200, "application/json", func(b []byte) bool { return strings.Count(string(b), `"isError"`) == 2 }},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			resp, body := post(t, s, tc.tool)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("HTTP %d %s, want %d %s", resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.contentType)
			}
			if !tc.check(body) {
				t.Fatalf("body (%d bytes) does not show the scenario: %.200q", len(body), body)
			}
		})
	}
}

// TestSSEEndpointNamesElsewhere: by default the legacy SSE endpoint event
// names the Elsewhere sink.
func TestSSEEndpointNamesElsewhere(t *testing.T) {
	s := Start(t)
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/sse", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	l1, _ := br.ReadString('\n')
	l2, _ := br.ReadString('\n')
	if l1 != "event: endpoint\n" || !strings.HasPrefix(l2, "data: "+s.Elsewhere.URL+"/messages") {
		t.Fatalf("stream starts %q %q, want an endpoint event naming %s", l1, l2, s.Elsewhere.URL)
	}
}
