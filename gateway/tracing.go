package gateway

import (
	"bytes"
	"context"
	"encoding/hex"
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

// metaCarrier is the trace context found in params._meta, as a map.
type metaCarrier map[string]string

// metaTraceKeys are the params._meta members trace context travels in
// (SEP-414), in the order of metaFields' fields.
var metaTraceKeys = []string{"traceparent", "tracestate", "baggage"}

// metaKeys is what params is read for.
var metaKeys = []string{"_meta"}

// metaFields is the trace context found in params._meta: a carrier the
// propagator reads without the map a metaCarrier would cost per call.
type metaFields struct {
	vals [3]string // by metaTraceKeys
	set  [3]bool   // which of vals params._meta holds
}

func (m *metaFields) index(key string) int {
	switch key {
	case "traceparent":
		return 0
	case "tracestate":
		return 1
	case "baggage":
		return 2
	}
	return -1
}

func (m *metaFields) Get(key string) string {
	if i := m.index(key); i >= 0 {
		return m.vals[i]
	}
	return ""
}

func (m *metaFields) Set(key, value string) {
	if i := m.index(key); i >= 0 {
		m.vals[i], m.set[i] = value, true
	}
}

func (m *metaFields) Keys() []string {
	keys := make([]string, 0, len(metaTraceKeys))
	for i, k := range metaTraceKeys {
		if m.set[i] {
			keys = append(keys, k)
		}
	}
	return keys
}

// metaTrace is what params._meta holds of trace context, and where.
type metaTrace struct {
	carrier metaFields
	has     bool            // params._meta holds one of metaTraceKeys as a string
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
	return peekMetaTrace(params, false)
}

// peekMetaTrace is readMetaTrace; valid says params is known to be valid
// JSON, as the params of every message the transports decoded are, which
// spares validating them again.
func peekMetaTrace(params json.RawMessage, valid bool) (metaTrace, error) {
	var mt metaTrace
	if len(params) == 0 || !bytes.Contains(params, []byte("_meta")) && bytes.IndexByte(params, '\\') < 0 {
		return mt, nil
	}
	if !valid && !json.Valid(params) {
		return mt, nil
	}
	var vals [1]json.RawMessage
	if err := jsonrpcx.ValidMembersInto(params, "params", metaKeys, vals[:]); err != nil {
		if errors.Is(err, jsonrpcx.ErrNotObject) {
			return mt, nil
		}
		return mt, err
	}
	if vals[0] == nil {
		return mt, nil
	}
	var metaVals [3]json.RawMessage
	if err := jsonrpcx.ValidMembersInto(vals[0], "params._meta", metaTraceKeys, metaVals[:]); err != nil {
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
			mt.carrier.vals[i], mt.carrier.set[i] = s, true
			mt.has = true
		}
	}
	return mt, nil
}

// metaTraceContext is readMetaTrace's carrier as a map, reporting whether
// there is one.
func metaTraceContext(params json.RawMessage) (metaCarrier, bool, error) {
	mt, err := readMetaTrace(params)
	if !mt.has {
		return nil, false, err
	}
	c := make(metaCarrier, len(metaTraceKeys))
	for i, k := range metaTraceKeys {
		if mt.carrier.set[i] {
			c[k] = mt.carrier.vals[i]
		}
	}
	return c, true, err
}

// spanStartKey names the calls that share a spanStart.
type spanStartKey struct{ method, tool string }

// spanStart is how a call's two spans start and end: their names and
// attributes, the same for every call of one method and tool in a
// session, shared read-only by them.
//
// The attributes are set once, as a span ends, rather than some at start
// and the outcome at end: the SDK then sizes the span's attributes once
// instead of three times. Nothing reads them before the span ends: the
// samplers mcpgw configures decide on the trace id and the parent alone.
type spanStart struct {
	gateway, upstream string
	// gatewayAttrs and upstreamAttrs are the spans' attributes but the
	// outcome; gatewayOK and upstreamOK those of a call that ended ok.
	gatewayAttrs, upstreamAttrs []attribute.KeyValue
	gatewayOK, upstreamOK       []attribute.KeyValue
}

// serverSpan and clientSpan start a call's gateway and upstream spans.
var (
	serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
	clientSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
)

// maxSpanStarts bounds a session's spanStarts, since tool names are the
// client's to choose; calls beyond it build their own.
const maxSpanStarts = 64

// spanStartFor returns how calls of method and tool start their spans.
func (s *session) spanStartFor(method, tool string) *spanStart {
	k := spanStartKey{method, tool}
	s.mu.Lock()
	st := s.spanStarts[k]
	s.mu.Unlock()
	if st != nil {
		return st
	}
	attrs := []attribute.KeyValue{attrMethod.String(method), attrRoute.String(s.route.Name)}
	if tool != "" {
		attrs = append(attrs, attrTool.String(tool))
	}
	ok := attrOutcome.String("ok")
	st = &spanStart{
		gateway:       "gateway " + method,
		upstream:      "upstream " + method,
		gatewayAttrs:  attrs,
		upstreamAttrs: attrs[:2:2],
		gatewayOK:     append(attrs[:len(attrs):len(attrs)], ok),
		upstreamOK:    append(attrs[:2:2], ok),
	}
	s.mu.Lock()
	if s.spanStarts == nil {
		s.spanStarts = make(map[spanStartKey]*spanStart)
	}
	if len(s.spanStarts) < maxSpanStarts {
		s.spanStarts[k] = st
	}
	s.mu.Unlock()
	return st
}

// startCall starts the gateway span of a call and its upstream child. The
// parent is the trace context in params._meta, else the session's span.
// It returns the request to write upstream: req itself, or, when the
// upstream span is sampled, a copy whose params._meta.traceparent names
// the upstream span, and then also the trace headers for HTTP upstreams.
func (s *session) startCall(req *jsonrpc.Request, pc *pendingCall) (*jsonrpc.Request, http.Header, *jsonrpc.Error) {
	parent := s.traceCtx
	mt, err := peekMetaTrace(req.Params, true)
	if err != nil {
		return nil, nil, rpcError(jsonrpcx.CodeInvalidRequest, err.Error(), nil)
	}
	baggage := mt.carrier.vals[2]
	if mt.has {
		c := mt.carrier
		parent = propagator.Extract(parent, &c)
	} else if ch, isHTTP := s.down.(interface{ CallHeader(jsonrpc.ID) http.Header }); isHTTP {
		// Streamable HTTP: the POST that carried the call may name its
		// trace context in headers.
		if h := ch.CallHeader(req.ID); h != nil {
			parent = propagator.Extract(parent, propagation.HeaderCarrier(h))
			baggage = h.Get("Baggage")
		}
	}
	st := s.spanStartFor(req.Method, pc.tool)
	pc.spanStart = st
	gctx, span := s.g.tracer.Start(parent, st.gateway, serverSpan...)
	pc.span = span
	_, up := s.g.tracer.Start(gctx, st.upstream, clientSpan...)
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
	var b [55]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// endCall ends a call's spans with its outcome.
func endCall(pc pendingCall, outcome string, err error) {
	if pc.span == nil {
		return
	}
	code, failed := int64(0), false
	if err != nil {
		if rerr, isRPC := err.(*jsonrpc.Error); isRPC {
			code, failed = callErrorCode(rerr)
		} else {
			var rerr *jsonrpc.Error
			if errors.As(err, &rerr) {
				code, failed = callErrorCode(rerr)
			} else {
				code, failed = jsonrpc.CodeInternalError, true
			}
		}
	}
	status := ""
	if failed {
		// The message may quote upstream text; only the code is kept.
		status = "code " + strconv.FormatInt(code, 10)
	}
	st := pc.spanStart
	if st == nil {
		st = &spanStart{}
	}
	for i, sp := range [...]trace.Span{pc.upSpan, pc.span} {
		if sp == nil {
			continue
		}
		attrs, okAttrs := st.upstreamAttrs, st.upstreamOK
		if i == 1 {
			attrs, okAttrs = st.gatewayAttrs, st.gatewayOK
		}
		switch {
		case failed:
			sp.SetAttributes(append(attrs[:len(attrs):len(attrs)], attrOutcome.String(outcome), attrCode.Int64(code))...)
			sp.SetStatus(codes.Error, status)
		case outcome == "ok" && okAttrs != nil:
			sp.SetAttributes(okAttrs...)
		default:
			sp.SetAttributes(append(attrs[:len(attrs):len(attrs)], attrOutcome.String(outcome))...)
		}
		sp.End()
	}
}

// callErrorCode is the code of a call's error, reporting false for a nil
// one (a response without an error).
func callErrorCode(rerr *jsonrpc.Error) (int64, bool) {
	if rerr == nil {
		return 0, false
	}
	return rerr.Code, true
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
// key are (mt.meta and mt.tp, subslices of params or nil), as read. It
// writes the result in one allocation, every byte of params but the ones
// replaced copied as is.
func spliceMeta(params json.RawMessage, mt metaTrace, key, value string) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(params)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		out := make([]byte, 0, len(key)+len(value)+16)
		out = append(out, `{"_meta":{`...)
		out = appendMember(out, key, value)
		return append(out, "}}"...), nil
	}
	if trimmed[0] != '{' || mt.badMeta {
		return nil, jsonrpcx.ErrNotObject
	}
	out := make([]byte, 0, len(params)+len(key)+len(value)+16)
	meta := mt.meta
	if meta == nil {
		// Insert "_meta":{...}, right after params' opening brace.
		at := bytes.IndexByte(params, '{') + 1
		out = append(out, params[:at]...)
		out = append(out, `"_meta":{`...)
		out = append(appendMember(out, key, value), '}')
		if bytes.TrimSpace(params[at:])[0] != '}' {
			out = append(out, ',')
		}
		return append(out, params[at:]...), nil
	}
	metaAt := offsetOf(params, meta)
	if old := mt.tp; old != nil {
		at := metaAt + offsetOf(meta, old)
		out = append(out, params[:at]...)
		out = appendJSONString(out, value)
		return append(out, params[at+len(old):]...), nil
	}
	at := metaAt + bytes.IndexByte(meta, '{') + 1
	out = append(out, params[:at]...)
	out = appendMember(out, key, value)
	if bytes.TrimSpace(params[at:])[0] != '}' {
		out = append(out, ',')
	}
	return append(out, params[at:]...), nil
}

// appendMember appends the JSON object member key:value.
func appendMember(dst []byte, key, value string) []byte {
	return appendJSONString(append(appendJSONString(dst, key), ':'), value)
}

// appendJSONString appends s as json.Marshal encodes it. A string of
// printable ASCII that json.Marshal leaves as is (a traceparent always is)
// is copied without the encoder.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// offsetOf is where sub, a subslice of data, starts in data.
func offsetOf(data, sub []byte) int { return cap(data) - cap(sub) }
