package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpgw/mcpgw/storage"
)

// callSpan is what a test asserts of one call span.
type callSpan struct {
	Name   string
	Kind   trace.SpanKind
	Attrs  map[string]string
	Status codes.Code
	Desc   string
}

// TestCallSpans checks the spans of calls ended every way the proxy ends
// them: names, kinds, attributes and status exactly, the upstream span a
// child of the gateway span, and the gateway span a child of the
// client's traceparent.
func TestCallSpans(t *testing.T) {
	const clientTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var nilErr *jsonrpc.Error
	tests := []struct {
		name, method, tool, outcome string
		err                         error
		code                        string // rpc.jsonrpc.error_code, "" for none
	}{
		{"ok", "tools/call", "echo", "ok", nilErr, ""},
		{"ok, no error at all", "tools/list", "", "ok", nil, ""},
		{"rpc error", "tools/call", "echo", "error", &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "secret text"}, "-32602"},
		{"wrapped rpc error", "tools/call", "other", "refused", fmt.Errorf("refused: %w", &jsonrpc.Error{Code: -32001}), "-32001"},
		{"other error", "prompts/get", "", "cancelled", errors.New("boom"), "-32603"},
		{"outcome not precomputed", "x/custom", "", "upstream_gone", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
			t.Cleanup(func() { tp.Shutdown(context.Background()) })
			s := &session{g: &Gateway{tracer: tp.Tracer(tracerName)}, route: storage.Route{Name: "up"}, traceCtx: context.Background()}
			id, err := jsonrpc.MakeID(float64(1))
			if err != nil {
				t.Fatal(err)
			}
			params := `{"name":"` + tt.tool + `","_meta":{"traceparent":"` + clientTP + `"}}`
			req := &jsonrpc.Request{ID: id, Method: tt.method, Params: json.RawMessage(params)}
			pc := pendingCall{method: tt.method, tool: tt.tool}
			fwd, h, rerr := s.startCall(req, &pc)
			if rerr != nil {
				t.Fatal(rerr)
			}
			endCall(pc, tt.outcome, tt.err)

			spans := exp.GetSpans()
			if len(spans) != 2 {
				t.Fatalf("%d spans, want 2", len(spans))
			}
			up, gw := spans[0], spans[1]
			if got, want := gw.Parent.SpanID().String(), "b7ad6b7169203331"; got != want {
				t.Errorf("gateway span parent %s, want the client's %s", got, want)
			}
			if got, want := up.Parent.SpanID(), gw.SpanContext.SpanID(); got != want {
				t.Errorf("upstream span parent %s, want the gateway span %s", got, want)
			}
			if got, want := h.Get("Traceparent"), traceparent(up.SpanContext); got != want {
				t.Errorf("Traceparent header %q, want %q", got, want)
			}
			wantParams := `{"name":"` + tt.tool + `","_meta":{"traceparent":"` + traceparent(up.SpanContext) + `"}}`
			if string(fwd.Params) != wantParams {
				t.Errorf("forwarded params %s, want %s", fwd.Params, wantParams)
			}
			base := map[string]string{"mcp.method": tt.method, "mcp.route": "up", "mcp.outcome": tt.outcome}
			gwAttrs := map[string]string{}
			for k, v := range base {
				gwAttrs[k] = v
			}
			if tt.tool != "" {
				gwAttrs["mcp.tool"] = tt.tool
			}
			var status codes.Code
			var desc string
			if tt.code != "" {
				base["rpc.jsonrpc.error_code"], gwAttrs["rpc.jsonrpc.error_code"] = tt.code, tt.code
				status, desc = codes.Error, "code "+tt.code
			}
			want := []callSpan{
				{"upstream " + tt.method, trace.SpanKindClient, base, status, desc},
				{"gateway " + tt.method, trace.SpanKindServer, gwAttrs, status, desc},
			}
			var got []callSpan
			for _, sp := range spans {
				attrs := map[string]string{}
				for _, a := range sp.Attributes {
					attrs[string(a.Key)] = a.Value.String()
				}
				if len(attrs) != len(sp.Attributes) {
					t.Errorf("span %q has a duplicate attribute: %v", sp.Name, sp.Attributes)
				}
				got = append(got, callSpan{sp.Name, sp.SpanKind, attrs, sp.Status.Code, sp.Status.Description})
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("spans (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSpanStartsBounded checks that a session keeps at most maxSpanStarts
// span starts however many tool names its client makes up, and that calls
// beyond the bound still get their own tool's attributes.
func TestSpanStartsBounded(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	s := &session{g: &Gateway{tracer: tp.Tracer(tracerName)}, route: storage.Route{Name: "up"}, traceCtx: context.Background()}
	const calls = 2*maxSpanStarts + 3
	for i := range calls {
		id, err := jsonrpc.MakeID(float64(i))
		if err != nil {
			t.Fatal(err)
		}
		tool := "tool" + strconv.Itoa(i%(maxSpanStarts+10))
		req := &jsonrpc.Request{ID: id, Method: "tools/call", Params: json.RawMessage(`{"name":"` + tool + `"}`)}
		pc := pendingCall{method: req.Method, tool: tool}
		if _, _, rerr := s.startCall(req, &pc); rerr != nil {
			t.Fatal(rerr)
		}
		endCall(pc, "ok", nil)
	}
	if got := len(s.spanStarts); got != maxSpanStarts {
		t.Errorf("session holds %d span starts, want %d", got, maxSpanStarts)
	}
	spans := exp.GetSpans()
	if len(spans) != 2*calls {
		t.Fatalf("%d spans, want %d", len(spans), 2*calls)
	}
	for i := range calls {
		gw := spans[2*i+1]
		want := "tool" + strconv.Itoa(i%(maxSpanStarts+10))
		var got string
		for _, a := range gw.Attributes {
			if a.Key == attrTool {
				got = a.Value.AsString()
			}
		}
		if gw.Name != "gateway tools/call" || got != want {
			t.Errorf("call %d: span %q with mcp.tool %q, want gateway tools/call with %q", i, gw.Name, got, want)
		}
	}
}
