package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// tracerName is the instrumentation scope of the gateway's spans.
const tracerName = "github.com/mcpgw/mcpgw/gateway"

// propagator reads and writes W3C trace context and baggage, from HTTP
// headers and from params._meta alike (the keys are the same).
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Span attribute keys. Spans carry what a call is and how it ended, never
// its arguments, results or credentials.
const (
	attrMethod    = attribute.Key("mcp.method")
	attrRoute     = attribute.Key("mcp.route")
	attrTool      = attribute.Key("mcp.tool")
	attrTransport = attribute.Key("mcp.transport")
	attrOutcome   = attribute.Key("mcp.outcome")
	attrCode      = attribute.Key("rpc.jsonrpc.error_code")
)

// headerTraceContext returns ctx with the trace context and baggage of an
// HTTP request's headers, when tracing is on.
func (g *Gateway) headerTraceContext(ctx context.Context, h http.Header) context.Context {
	if g.tracer == nil {
		return ctx
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// metaCarrier is the trace context found in params._meta.
type metaCarrier map[string]string

func (m metaCarrier) Get(key string) string { return m[key] }
func (m metaCarrier) Set(key, value string) { m[key] = value }
func (m metaCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// metaTraceKeys are the params._meta members trace context travels in
// (SEP-414).
var metaTraceKeys = []string{"traceparent", "tracestate", "baggage"}

// metaTrace is what params._meta holds of trace context, and where.
type metaTrace struct {
	carrier metaCarrier     // nil when there is none
	meta    json.RawMessage // params._meta within params, nil when absent
	tp      json.RawMessage // params._meta.traceparent within meta, nil when absent
	badMeta bool            // params._meta is there but not an object
}

// readMetaTrace reads traceparent, tracestate and baggage from
// params._meta. A _meta that spells one of them (or _meta itself) twice,
// or in another case, is an error, since the upstream could read another
// trace context than the gateway; params that are not an object yield
// nothing.
func readMetaTrace(params json.RawMessage) (metaTrace, error) {
	var mt metaTrace
	if len(params) == 0 || !bytes.Contains(params, []byte("_meta")) && bytes.IndexByte(params, '\\') < 0 {
		return mt, nil
	}
	vals, err := jsonrpcx.Members(params, "params", "_meta")
	if err != nil {
		if errors.Is(err, jsonrpcx.ErrNotObject) || errors.Is(err, jsonrpcx.ErrSyntax) {
			return mt, nil
		}
		return mt, err
	}
	if vals[0] == nil {
		return mt, nil
	}
	metaVals, err := jsonrpcx.ValidMembers(vals[0], "params._meta", metaTraceKeys...)
	if err != nil {
		if errors.Is(err, jsonrpcx.ErrNotObject) {
			// Not the gateway's to fix: the call goes on as sent, with
			// nothing spliced in beside it.
			mt.badMeta = true
			return mt, nil
		}
		return mt, err
	}
	mt.meta, mt.tp = vals[0], metaVals[0]
	for i, key := range metaTraceKeys {
		s, ok, err := jsonrpcx.String(metaVals[i], key, "params._meta")
		if err != nil {
			return metaTrace{}, err
		}
		if ok {
			if mt.carrier == nil {
				mt.carrier = make(metaCarrier, len(metaTraceKeys))
			}
			mt.carrier[key] = s
		}
	}
	return mt, nil
}

// metaTraceContext is readMetaTrace's carrier, reporting whether there is
// one.
func metaTraceContext(params json.RawMessage) (metaCarrier, bool, error) {
	mt, err := readMetaTrace(params)
	return mt.carrier, mt.carrier != nil, err
}

// spanNames holds the span names of the common methods, sparing a
// concatenation per call.
var spanNames = map[string][2]string{}

func init() {
	for _, m := range []string{"initialize", "ping", "tools/call", "tools/list", "resources/list", "resources/read",
		"resources/templates/list", "prompts/list", "prompts/get", "completion/complete", "server/discover"} {
		spanNames[m] = [2]string{"gateway " + m, "upstream " + m}
	}
}

// startCall starts the gateway span of a call and its upstream child. The
// parent is the trace context in params._meta, else the session's span.
// It returns the request to write upstream: req itself, or, when the
// upstream span is sampled, a copy whose params._meta.traceparent names
// the upstream span, and then also the trace headers for HTTP upstreams.
func (s *session) startCall(req *jsonrpc.Request, pc *pendingCall) (*jsonrpc.Request, http.Header, *jsonrpc.Error) {
	parent := s.traceCtx
	mt, err := readMetaTrace(req.Params)
	if err != nil {
		return nil, nil, rpcError(jsonrpcx.CodeInvalidRequest, err.Error(), nil)
	}
	baggage := mt.carrier["baggage"]
	if mt.carrier != nil {
		parent = propagator.Extract(parent, mt.carrier)
	} else if ch, isHTTP := s.down.(interface{ CallHeader(jsonrpc.ID) http.Header }); isHTTP {
		// Streamable HTTP: the POST that carried the call may name its
		// trace context in headers.
		if h := ch.CallHeader(req.ID); h != nil {
			parent = propagator.Extract(parent, propagation.HeaderCarrier(h))
			baggage = h.Get("Baggage")
		}
	}
	names, ok := spanNames[req.Method]
	if !ok {
		names = [2]string{"gateway " + req.Method, "upstream " + req.Method}
	}
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, attrMethod.String(req.Method), attrRoute.String(s.route.Name))
	if pc.tool != "" {
		attrs = append(attrs, attrTool.String(pc.tool))
	}
	gctx, span := s.g.tracer.Start(parent, names[0], trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	pc.span = span
	_, up := s.g.tracer.Start(gctx, names[1], trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs[:2]...))
	pc.upSpan = up
	sc := up.SpanContext()
	if !sc.IsSampled() {
		return req, nil, nil
	}
	tp := traceparent(sc)
	h := http.Header{"Traceparent": {tp}}
	if ts := sc.TraceState().String(); ts != "" {
		h["Tracestate"] = []string{ts}
	}
	if baggage != "" {
		h["Baggage"] = []string{baggage}
	}
	params, err := spliceMeta(req.Params, mt, "traceparent", tp)
	if err != nil {
		// The params were read above; this is unreachable, and the call
		// goes on with the header only rather than fail.
		return req, h, nil
	}
	out := *req
	out.Params = params
	return &out, h, nil
}

// traceparent formats a span context as a W3C traceparent header value.
func traceparent(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// endCall ends a call's spans with its outcome.
func endCall(pc pendingCall, outcome string, err error) {
	if pc.span == nil {
		return
	}
	var rerr *jsonrpc.Error
	if err != nil && !errors.As(err, &rerr) {
		rerr = &jsonrpc.Error{Code: jsonrpc.CodeInternalError}
	}
	for _, sp := range []trace.Span{pc.upSpan, pc.span} {
		if sp == nil {
			continue
		}
		sp.SetAttributes(attrOutcome.String(outcome))
		if rerr != nil {
			sp.SetAttributes(attrCode.Int64(rerr.Code))
			// The message may quote upstream text; only the code is kept.
			sp.SetStatus(codes.Error, "code "+strconv.FormatInt(rerr.Code, 10))
		}
		sp.End()
	}
}

// spliceMetaString returns params with params._meta[key] set to the JSON
// string value, every other byte kept: an existing member's value is
// replaced in place, a missing one (or a missing _meta) is inserted first
// in its object. params absent or null becomes {"_meta":{key:value}}.
func spliceMetaString(params json.RawMessage, key, value string) (json.RawMessage, error) {
	var mt metaTrace
	if trimmed := bytes.TrimSpace(params); len(trimmed) != 0 && string(trimmed) != "null" {
		vals, err := jsonrpcx.Members(params, "params", "_meta")
		if err != nil {
			return nil, err
		}
		if mt.meta = vals[0]; mt.meta != nil {
			mvals, err := jsonrpcx.ValidMembers(mt.meta, "params._meta", key)
			if err != nil {
				return nil, err
			}
			mt.tp = mvals[0]
		}
	}
	return spliceMeta(params, mt, key, value)
}

// spliceMeta is spliceMetaString given where params._meta and its member
// key are (mt.meta and mt.tp, subslices of params or nil), as read.
func spliceMeta(params json.RawMessage, mt metaTrace, key, value string) (json.RawMessage, error) {
	kv, err := json.Marshal(key)
	if err != nil {
		return nil, err
	}
	vv, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(params)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		out := make([]byte, 0, len(kv)+len(vv)+12)
		out = append(out, `{"_meta":{`...)
		out = append(append(append(out, kv...), ':'), vv...)
		return append(out, "}}"...), nil
	}
	if trimmed[0] != '{' || mt.badMeta {
		return nil, jsonrpcx.ErrNotObject
	}
	meta := mt.meta
	if meta == nil {
		// Insert "_meta":{...}, right after params' opening brace.
		at := bytes.IndexByte(params, '{') + 1
		ins := make([]byte, 0, len(kv)+len(vv)+12)
		ins = append(ins, `"_meta":{`...)
		ins = append(append(append(ins, kv...), ':'), vv...)
		ins = append(ins, '}')
		if bytes.TrimSpace(params[at:])[0] != '}' {
			ins = append(ins, ',')
		}
		return splice(params, at, at, ins), nil
	}
	metaAt := offsetOf(params, meta)
	if old := mt.tp; old != nil {
		at := metaAt + offsetOf(meta, old)
		return splice(params, at, at+len(old), vv), nil
	}
	at := metaAt + bytes.IndexByte(meta, '{') + 1
	ins := make([]byte, 0, len(kv)+len(vv)+2)
	ins = append(append(append(ins, kv...), ':'), vv...)
	if bytes.TrimSpace(meta[bytes.IndexByte(meta, '{')+1:])[0] != '}' {
		ins = append(ins, ',')
	}
	return splice(params, at, at, ins), nil
}

// offsetOf is where sub, a subslice of data, starts in data.
func offsetOf(data, sub []byte) int { return cap(data) - cap(sub) }

// splice returns a new slice: data with data[from:to] replaced by ins.
func splice(data []byte, from, to int, ins []byte) []byte {
	out := make([]byte, 0, len(data)-(to-from)+len(ins))
	out = append(out, data[:from]...)
	out = append(out, ins...)
	return append(out, data[to:]...)
}
