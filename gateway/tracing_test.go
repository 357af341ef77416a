package gateway

import (
	"bytes"
	"context"
	"encoding/json"

	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/cputime"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

func TestSpliceMetaString(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tests := []struct {
		name, params, want string
	}{
		{"absent", ``, `{"_meta":{"traceparent":"` + tp + `"}}`},
		{"null", `null`, `{"_meta":{"traceparent":"` + tp + `"}}`},
		{"empty object", `{}`, `{"_meta":{"traceparent":"` + tp + `"}}`},
		{"empty object with space", ` { } `, ` {"_meta":{"traceparent":"` + tp + `"} } `},
		{"no _meta", `{"name":"echo", "arguments":{"a":1}}`, `{"_meta":{"traceparent":"` + tp + `"},"name":"echo", "arguments":{"a":1}}`},
		{"empty _meta", `{"name":"echo","_meta":{}}`, `{"name":"echo","_meta":{"traceparent":"` + tp + `"}}`},
		{"_meta with other keys", `{"_meta": {"progressToken": 7, "x":"y"},"name":"e"}`, `{"_meta": {"traceparent":"` + tp + `","progressToken": 7, "x":"y"},"name":"e"}`},
		{"replaces traceparent", `{"_meta":{"tracestate":"a=b", "traceparent" : "00-old-01" ,"z":1}}`, `{"_meta":{"tracestate":"a=b", "traceparent" : "` + tp + `" ,"z":1}}`},
		{"nested _meta in arguments untouched", `{"arguments":{"_meta":{"traceparent":"keep"}}}`, `{"_meta":{"traceparent":"` + tp + `"},"arguments":{"_meta":{"traceparent":"keep"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spliceMetaString(json.RawMessage(tt.params), "traceparent", tp)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("result is not valid JSON: %s", got)
			}
		})
	}
	for _, bad := range []string{`[1]`, `{"_meta":{"traceparent":1,"traceparent":2}}`, `{"_meta":1,"_meta":{}}`} {
		if got, err := spliceMetaString(json.RawMessage(bad), "traceparent", tp); err == nil {
			t.Errorf("spliceMetaString(%s) = %s, want an error", bad, got)
		}
	}
}

func TestMetaTraceContext(t *testing.T) {
	tests := []struct {
		name    string
		params  string
		want    metaCarrier
		wantErr string
	}{
		{"none", `{"name":"echo"}`, nil, ""},
		{"not an object", `[1]`, nil, ""},
		{"_meta without trace", `{"_meta":{"progressToken":1}}`, nil, ""},
		{"all three", `{"_meta":{"traceparent":"tp","tracestate":"ts","baggage":"b=1"}}`, metaCarrier{"traceparent": "tp", "tracestate": "ts", "baggage": "b=1"}, ""},
		{"duplicate traceparent", `{"_meta":{"traceparent":"a","traceparent":"b"}}`, nil, "traceparent"},
		{"case variant", `{"_meta":{"traceparent":"a","TraceParent":"b"}}`, nil, "traceparent"},
		{"duplicate _meta", `{"_meta":{},"_meta":{"traceparent":"b"}}`, nil, "_meta"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := metaTraceContext(json.RawMessage(tt.params))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok != (tt.want != nil) {
				t.Errorf("ok = %v", ok)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("carrier (-want +got):\n%s", diff)
			}
		})
	}
}

// tracedGateway is a gateway recording its spans in memory, with a route
// to a go-sdk upstream over streamable HTTP.
func tracedGateway(t *testing.T) (*testGateway, *tracetest.InMemoryExporter, *sdktrace.TracerProvider, storage.Route, string) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	up := upstreamtest.New()
	upURL := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	tg := newTestGateway(t, func(o *Options) { o.TracerProvider = tp })
	route := tg.addRoute(t, storage.Route{Name: "up", URL: upURL})
	return tg, exp, tp, route, tg.issueToken(t, "svc", "*")
}

// spanTree returns each span as "name <- parent name" (parent "-" for a
// root, or the remote parent's span id when it is not among spans), and
// checks that every span is in one trace with its parent.
func spanTree(t *testing.T, spans tracetest.SpanStubs) []string {
	t.Helper()
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	var out []string
	for _, s := range spans {
		parent := "-"
		if s.Parent.IsValid() {
			if p, ok := byID[s.Parent.SpanID()]; ok {
				parent = p.Name
			} else {
				parent = "remote " + s.Parent.SpanID().String()
			}
			if s.Parent.TraceID() != s.SpanContext.TraceID() {
				t.Errorf("span %q is in trace %s, its parent in %s", s.Name, s.SpanContext.TraceID(), s.Parent.TraceID())
			}
		}
		out = append(out, s.Name+" <- "+parent)
	}
	slices.Sort(out)
	return out
}

// waitSpans polls until the exporter holds n spans (the session span ends
// once the gateway has seen the client go).
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		spans := exp.GetSpans()
		if len(spans) >= n || time.Now().After(deadline) {
			return spans
		}
		time.Sleep(10 * time.Millisecond) // polling, not synchronisation
	}
}

// spanNamed returns the one span with name.
func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans named %q, want 1", len(found), name)
	}
	return found[0]
}

// checkNoSecrets fails if any span attribute or status carries one of
// secrets.
func checkNoSecrets(t *testing.T, spans tracetest.SpanStubs, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		text := s.Name + " " + s.Status.Description
		for _, a := range s.Attributes {
			text += " " + string(a.Key) + "=" + a.Value.String()
		}
		for _, e := range s.Events {
			text += " " + e.Name
		}
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("span %q carries %q: %s", s.Name, sec, text)
			}
		}
	}
}

const secretArg = "s3cret-argument-value"

// TestTracingWebSocketMeta follows a session over WebSocket, where trace
// context travels in params._meta: client → gateway → a go-sdk upstream,
// which reports the traceparent it received.
func TestTracingWebSocketMeta(t *testing.T) {
	tg, exp, tp, route, token := tracedGateway(t)
	ctx, root := tp.Tracer("test").Start(context.Background(), "work")
	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway(tg.wsURL()), client.WithToken(token),
		client.WithProtocolVersion(benchProtocol), client.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "traceparent", Arguments: map[string]any{"text": secretArg}})
	if err != nil {
		t.Fatal(err)
	}
	sess.Close()
	root.End()
	spans := waitSpans(t, exp, 8)
	want := []string{
		"client initialize <- work",
		"client tools/call <- work",
		"gateway initialize <- client initialize",
		"gateway tools/call <- client tools/call",
		"session <- -",
		"upstream initialize <- gateway initialize",
		"upstream tools/call <- gateway tools/call",
		"work <- -",
	}
	if diff := cmp.Diff(want, spanTree(t, spans)); diff != "" {
		t.Fatalf("spans (-want +got):\n%s", diff)
	}
	upSpan := spanNamed(t, spans, "upstream tools/call")
	wantTP := traceparent(upSpan.SpanContext)
	got := res.Content[0].(*mcp.TextContent).Text
	if got != wantTP+"\n"+wantTP {
		t.Errorf("upstream received traceparent (_meta, header) %q, want %q in both", got, wantTP)
	}
	gw := spanNamed(t, spans, "gateway tools/call")
	attrs := map[string]string{}
	for _, a := range gw.Attributes {
		attrs[string(a.Key)] = a.Value.String()
	}
	wantAttrs := map[string]string{"mcp.method": "tools/call", "mcp.route": "up", "mcp.tool": "traceparent", "mcp.outcome": "ok"}
	if diff := cmp.Diff(wantAttrs, attrs); diff != "" {
		t.Errorf("gateway span attributes (-want +got):\n%s", diff)
	}
	if gw.SpanKind != trace.SpanKindServer || upSpan.SpanKind != trace.SpanKindClient {
		t.Errorf("span kinds gateway %v upstream %v, want server and client", gw.SpanKind, upSpan.SpanKind)
	}
	checkNoSecrets(t, spans, secretArg, token, wantTP[:20])
}

// headerTraceparent sets a fixed W3C traceparent header on every request,
// as an HTTP client instrumented with OpenTelemetry would.
type headerTraceparent struct{ value string }

func (h headerTraceparent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Traceparent", h.value)
	return http.DefaultTransport.RoundTrip(r)
}

// TestTracingStreamableHeaders follows a streamable HTTP session whose
// client sends its trace context in HTTP headers only.
func TestTracingStreamableHeaders(t *testing.T) {
	tg, exp, _, _, token := tracedGateway(t)
	const clientSpan = "b7ad6b7169203331"
	const clientTrace = "0af7651916cd43dd8448eb211c80319c"
	hc := &http.Client{Transport: headerTraceparent{value: "00-" + clientTrace + "-" + clientSpan + "-01"}}
	sdkClient := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	sess, err := sdkClient.Connect(context.Background(), &mcp.StreamableClientTransport{HTTPClient: hc,
		Endpoint: tg.url + "/v1/mcp/up?org=org1&account=acct1&access_token=" + url.QueryEscape(token)},
		&mcp.ClientSessionOptions{ProtocolVersion: benchProtocol})
	if err != nil {
		t.Fatal(err)
	}
	res, err := sess.CallTool(context.Background(), &mcp.CallToolParams{Name: "traceparent", Arguments: map[string]any{"text": secretArg}})
	if err != nil {
		t.Fatal(err)
	}
	sess.Close()
	spans := waitSpans(t, exp, 5)
	remote := "remote " + clientSpan
	want := []string{
		"gateway initialize <- " + remote,
		"gateway tools/call <- " + remote,
		"session <- " + remote,
		"upstream initialize <- gateway initialize",
		"upstream tools/call <- gateway tools/call",
	}
	if diff := cmp.Diff(want, spanTree(t, spans)); diff != "" {
		t.Fatalf("spans (-want +got):\n%s", diff)
	}
	for _, s := range spans {
		if got := s.SpanContext.TraceID().String(); got != clientTrace {
			t.Errorf("span %q in trace %s, want the client's %s", s.Name, got, clientTrace)
		}
	}
	wantTP := traceparent(spanNamed(t, spans, "upstream tools/call").SpanContext)
	if got := res.Content[0].(*mcp.TextContent).Text; got != wantTP+"\n"+wantTP {
		t.Errorf("upstream received traceparent (_meta, header) %q, want %q in both", got, wantTP)
	}
	checkNoSecrets(t, spans, secretArg, token)
}

// TestTracingOffLeavesMessages checks that with tracing off a call's
// params reach the upstream as the client sent them: no _meta added.
func TestTracingOffLeavesMessages(t *testing.T) {
	up := upstreamtest.New()
	upURL := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	tg := newTestGateway(t)
	route := tg.addRoute(t, storage.Route{Name: "up", URL: upURL})
	sess, err := client.Connect(context.Background(), route.URL, "org1", "acct1", client.WithGateway(tg.wsURL()),
		client.WithToken(tg.issueToken(t, "svc", "*")), client.WithProtocolVersion(benchProtocol))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	res, err := sess.CallTool(context.Background(), &mcp.CallToolParams{Name: "traceparent", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Content[0].(*mcp.TextContent).Text; got != "\n" {
		t.Errorf("upstream received traceparent %q with tracing off, want none", got)
	}
}

// BenchmarkCallTracing measures the gateway's own tracing work for one
// call at ratio 1 — reading _meta, the gateway and upstream spans, the
// traceparent splice and the HTTP trace header, ending both spans into a
// batch processor — which is the CPU tracing adds per call.
func BenchmarkCallTracing(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		sdktrace.WithSampler(sdktrace.TraceIDRatioBased(1)))
	b.Cleanup(func() { tp.Shutdown(context.Background()) })
	g := &Gateway{tracer: tp.Tracer(tracerName)}
	s := &session{g: g, route: storage.Route{Name: "up"}, traceCtx: context.Background()}
	id, err := jsonrpc.MakeID(float64(1))
	if err != nil {
		b.Fatal(err)
	}
	req := &jsonrpc.Request{ID: id, Method: "tools/call",
		Params: json.RawMessage(`{"name":"echo","arguments":{"text":"hello"},"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}`)}
	b.ReportAllocs()
	cpu := cputime.Process()
	defer func() { b.ReportMetric(float64((cputime.Process()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
	for b.Loop() {
		pc := pendingCall{method: req.Method, tool: "echo"}
		fwd, h, rerr := s.startCall(req, &pc)
		if rerr != nil || h == nil || fwd == req {
			b.Fatal("call not traced")
		}
		endCall(pc, "ok", nil)
	}
}

// FuzzSpliceMeta checks, for any params a client may send, that reading
// the trace context never panics and that the traceparent splice yields
// valid JSON whose _meta.traceparent is the gateway's and whose other
// members are the client's, unchanged.
func FuzzSpliceMeta(f *testing.F) {
	for _, seed := range []string{``, `null`, `{}`, `{"name":"echo"}`, `{"_meta":{}}`, `{"_meta":{"traceparent":"x","a":[1,{"b":2}]},"name":"e"}`,
		`{"_meta":{"traceparent":"a","traceparent":"b"}}`, `{"\u005fmeta":{}}`, `{"_meta":5}`, `[1]`, `{"_meta":{"tracestate":"\ud800"}}`} {
		f.Add([]byte(seed))
	}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	f.Fuzz(func(t *testing.T, params []byte) {
		mt, err := readMetaTrace(params)
		if err != nil || !json.Valid(params) && len(bytes.TrimSpace(params)) != 0 {
			return
		}
		out, err := spliceMeta(params, mt, "traceparent", tp)
		if err != nil {
			return
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("splice of %q gave invalid JSON %q: %v", params, out, err)
		}
		meta, _ := got["_meta"].(map[string]any)
		if meta["traceparent"] != tp {
			t.Fatalf("splice of %q gave _meta %v", params, got["_meta"])
		}
		var before map[string]any
		if json.Unmarshal(params, &before) != nil || before == nil {
			return
		}
		delete(meta, "traceparent")
		if bm, ok := before["_meta"].(map[string]any); ok {
			delete(bm, "traceparent")
		} else if before["_meta"] == nil {
			before["_meta"] = map[string]any{}
		}
		if diff := cmp.Diff(before, got); diff != "" {
			t.Fatalf("splice of %q changed other members (-before +after):\n%s", params, diff)
		}
	})
}
