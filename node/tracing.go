package node

import (
	"context"
	"fmt"
	"net/url"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// validateTracing checks the tracing settings.
func (c *Config) validateTracing() error {
	if c.TraceSampleRatio < 0 || c.TraceSampleRatio > 1 {
		return fmt.Errorf("--trace-sample-ratio %v: use a fraction from 0 (no new traces) to 1 (every call)", c.TraceSampleRatio)
	}
	if c.OTLPEndpoint == "" {
		return nil
	}
	u, err := url.Parse(c.OTLPEndpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--otlp-endpoint %q: use the collector's OTLP/HTTP URL, e.g. http://collector:4318 (the path /v1/traces is added when none is given)", c.OTLPEndpoint)
	}
	return nil
}

// startTracing builds the tracer provider the gateway records spans with:
// cfg.TracerProvider as given, else one exporting over OTLP/HTTP to
// cfg.OTLPEndpoint, else none (tracing off). The node shuts down a
// provider it built in Close, which flushes the spans still batched.
func (n *Node) startTracing(nodeID string) (trace.TracerProvider, error) {
	if n.cfg.TracerProvider != nil {
		return n.cfg.TracerProvider, nil
	}
	if n.cfg.OTLPEndpoint == "" {
		return nil, nil
	}
	u, err := url.Parse(n.cfg.OTLPEndpoint)
	if err != nil {
		return nil, err // Validate has refused it
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("--otlp-endpoint %q: %w", n.cfg.OTLPEndpoint, err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "mcpgw"), attribute.String("service.instance.id", nodeID))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		// A caller's sampling decision stands; new traces are sampled at
		// the ratio.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(n.cfg.TraceSampleRatio))),
	)
	n.tracing = tp
	return tp, nil
}

// stopTracing flushes and stops the tracer provider the node built.
func (n *Node) stopTracing(ctx context.Context) error {
	if n.tracing == nil {
		return nil
	}
	err := n.tracing.Shutdown(ctx)
	n.tracing = nil
	if err != nil {
		return fmt.Errorf("flush traces to --otlp-endpoint: %w; check the collector is reachable", err)
	}
	return nil
}
