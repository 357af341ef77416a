package transport

import (
	"context"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// traceHeaderKey keys the trace headers of an upstream write's context.
type traceHeaderKey struct{}

// WithTraceHeader returns ctx carrying the W3C trace context headers
// (traceparent, tracestate, baggage) that HTTP upstream requests written
// with it are sent with, so the upstream continues the gateway's trace.
func WithTraceHeader(ctx context.Context, h http.Header) context.Context {
	return context.WithValue(ctx, traceHeaderKey{}, h)
}

// setTraceHeader copies onto req the trace headers its context carries.
func setTraceHeader(req *http.Request) {
	h, _ := req.Context().Value(traceHeaderKey{}).(http.Header)
	if h == nil {
		return
	}
	for _, k := range []string{"Traceparent", "Tracestate", "Baggage"} {
		if v := h.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
}

// CallHeader returns the headers of the POST that carried call id while
// the call awaits its response, nil otherwise: where a streamable HTTP
// client's W3C trace context for the call is.
func (h *httpSession) CallHeader(id jsonrpc.ID) http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.pending[id]; st != nil {
		return st.header
	}
	return nil
}
