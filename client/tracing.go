package client

import (
	"context"
	"maps"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// WithTracerProvider makes the session start a client span for each
// request it sends (method and tool name only, never arguments or
// results) and carry its W3C traceparent, tracestate and baggage in
// params._meta, where the gateway continues the trace. The span's parent
// is the span in the call's context, if any. Default: no tracing.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// propagator writes W3C trace context and baggage into params._meta.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// tracingMiddleware starts a client span around each request sent and
// puts its trace context in params._meta.
func tracingMiddleware(tp trace.TracerProvider) mcp.Middleware {
	tracer := tp.Tracer("github.com/mcpgw/mcpgw/client")
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			params := req.GetParams()
			if strings.HasPrefix(method, "notifications/") || params == nil {
				return next(ctx, method, req)
			}
			attrs := []attribute.KeyValue{attribute.String("mcp.method", method)}
			if r, ok := req.(*mcp.CallToolRequest); ok && r.Params != nil {
				attrs = append(attrs, attribute.String("mcp.tool", r.Params.Name))
				// Callers commonly reuse one CallToolParams, even across
				// goroutines: _meta is set on a copy.
				p := *r.Params
				r.Params = &p
				params = &p
			}
			ctx, span := tracer.Start(ctx, "client "+method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
			defer span.End()
			carrier := propagation.MapCarrier{}
			propagator.Inject(ctx, carrier)
			if len(carrier) > 0 {
				meta := maps.Clone(params.GetMeta())
				if meta == nil {
					meta = make(map[string]any, len(carrier))
				}
				for k, v := range carrier {
					meta[k] = v
				}
				params.SetMeta(meta)
			}
			res, err := next(ctx, method, req)
			switch {
			case err != nil:
				span.SetStatus(codes.Error, "call failed")
				span.SetAttributes(attribute.String("mcp.outcome", "error"))
			default:
				outcome := "ok"
				if r, ok := res.(*mcp.CallToolResult); ok && r.IsError {
					outcome = "tool_error"
				}
				span.SetAttributes(attribute.String("mcp.outcome", outcome))
			}
			return res, err
		}
	}
}
