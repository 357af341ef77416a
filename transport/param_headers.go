package transport

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// maxParamHeaderTools bounds the tools one ParamHeaders remembers.
const maxParamHeaderTools = 4096

// ParamHeaders remembers which tool arguments an upstream mirrors into
// Mcp-Param-* headers (the x-mcp-header annotations of each tool's input
// schema, as its tools/list announces them), so that a tools/call the
// gateway forwards carries the headers a 2026-07-28 server requires,
// derived from the body it forwards. The go-sdk client sets them only for
// its own typed sessions. One ParamHeaders is shared by the connections
// to one upstream, so a stateless session's call benefits from the
// listing of an earlier one. Safe for concurrent use; the zero value is
// ready.
type ParamHeaders struct {
	mu    sync.Mutex
	tools map[string][]paramBinding // tool name → its bindings; guarded by mu
}

// paramBinding is one argument (a path of property names) and the header
// that mirrors it.
type paramBinding struct {
	path   []string
	header string // without the Mcp-Param- prefix
}

// learn records the bindings of the tools in a tools/list result.
func (p *ParamHeaders) learn(result json.RawMessage) {
	tl, err := jsonrpcx.ListedTools(result)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tools == nil {
		p.tools = make(map[string][]paramBinding)
	}
	for i, raw := range tl.Tools {
		var t struct {
			InputSchema schemaProperty `json:"inputSchema"`
		}
		if json.Unmarshal(raw, &t) != nil {
			continue
		}
		bindings := collectBindings(t.InputSchema.Properties, nil, nil)
		if len(bindings) == 0 {
			delete(p.tools, tl.Names[i])
			continue
		}
		if _, known := p.tools[tl.Names[i]]; !known && len(p.tools) >= maxParamHeaderTools {
			continue
		}
		p.tools[tl.Names[i]] = bindings
	}
}

type schemaProperty struct {
	XMCPHeader json.RawMessage           `json:"x-mcp-header"`
	Properties map[string]schemaProperty `json:"properties"`
}

func collectBindings(props map[string]schemaProperty, prefix []string, out []paramBinding) []paramBinding {
	for name, prop := range props {
		path := append(append([]string(nil), prefix...), name)
		var header string
		if json.Unmarshal(prop.XMCPHeader, &header) == nil && validHeaderToken(header) {
			out = append(out, paramBinding{path: path, header: header})
		}
		out = collectBindings(prop.Properties, path, out)
	}
	return out
}

// validHeaderToken reports whether s is an HTTP field-name token.
func validHeaderToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return true
}

// set replaces the Mcp-Param-* headers of a tools/call POST with the ones
// its body implies. A body whose tool name or arguments are ambiguous gets
// none: the upstream then refuses the call, which is the safe outcome.
func (p *ParamHeaders) set(h http.Header, body []byte) {
	for k := range h {
		if strings.HasPrefix(k, HeaderParamPrefix) {
			delete(h, k)
		}
	}
	msg, err := jsonrpcx.DecodeMessage(body)
	if err != nil {
		return
	}
	req, ok := msg.(*jsonrpc.Request)
	if !ok || req.Method != "tools/call" {
		return
	}
	name, ok, err := jsonrpcx.ToolCallName(req.Params)
	if err != nil || !ok {
		return
	}
	vals, err := jsonrpcx.Members(req.Params, "params of tools/call", "arguments")
	if err != nil {
		return
	}
	p.setFor(h, name, vals[0])
}

// setFor sets the Mcp-Param-* headers of a call of tool name with the
// given arguments (params.arguments as forwarded; nil when absent).
func (p *ParamHeaders) setFor(h http.Header, name string, args json.RawMessage) {
	p.mu.Lock()
	bindings := p.tools[name]
	p.mu.Unlock()
	if len(bindings) == 0 || args == nil {
		return
	}
	for _, b := range bindings {
		if v, ok := argumentHeader(args, b.path); ok {
			h.Set(HeaderParamPrefix+b.header, v)
		}
	}
}

// argumentHeader returns the header value of the argument at path, as
// SEP-2243 encodes it: strings as they are (Base64-wrapped when not plain
// printable ASCII), booleans, and integers within the JavaScript safe
// range. Absent, null and other values have no header.
func argumentHeader(args json.RawMessage, path []string) (string, bool) {
	cur := args
	for _, key := range path {
		vals, err := jsonrpcx.Members(cur, "arguments of tools/call", key)
		if err != nil || vals[0] == nil {
			return "", false
		}
		cur = vals[0]
	}
	var v any
	if json.Unmarshal(cur, &v) != nil {
		return "", false
	}
	switch v := v.(type) {
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		const maxSafe = 1<<53 - 1
		if v != math.Trunc(v) || v > maxSafe || v < -maxSafe {
			return "", false
		}
		return strconv.FormatInt(int64(v), 10), true
	case string:
		return headerValue(v), true
	}
	return "", false
}

func needsBase64(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == ' ' || s[0] == '\t' || s[len(s)-1] == ' ' || s[len(s)-1] == '\t' {
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return true
		}
	}
	return strings.HasPrefix(s, "=?base64?") && strings.HasSuffix(s, "?=")
}
