package transport

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// This file holds what the gateway refuses to trust about an upstream: where
// its requests (and the credential on them) may go, and what its answers
// may be before they reach the SDK, which would end the whole session on
// one bad message.

// origin is the scheme, host and port of a URL, the unit a credential is
// bound to.
type origin struct {
	scheme, host, port string
}

func (o origin) String() string {
	return o.scheme + "://" + net.JoinHostPort(o.host, o.port)
}

// originOf returns the origin of u. WebSocket schemes count as the HTTP
// schemes they upgrade from, and a missing port as the scheme's default.
func originOf(u *url.URL) (origin, error) {
	o := origin{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: u.Port()}
	switch o.scheme {
	case "ws":
		o.scheme = "http"
	case "wss":
		o.scheme = "https"
	}
	if o.port == "" {
		switch o.scheme {
		case "http":
			o.port = "80"
		case "https":
			o.port = "443"
		}
	}
	if (o.scheme != "http" && o.scheme != "https") || o.host == "" {
		return origin{}, fmt.Errorf("upstream URL %s is not an http(s) or ws(s) URL with a host", u.Redacted())
	}
	return o, nil
}

// CrossOriginError is a refusal to send a request, with the credential the
// gateway injects, anywhere but the route's origin. No request was sent.
type CrossOriginError struct {
	// Route is the route's origin, Target the one the request named, both as
	// scheme://host:port.
	Route, Target string
	// Endpoint is set when the target came from a legacy SSE upstream's
	// endpoint event rather than from a request the gateway was making.
	Endpoint bool
}

func (e *CrossOriginError) Error() string {
	if e.Endpoint {
		return fmt.Sprintf("upstream named a message endpoint on another origin (%s, the route's is %s); the gateway only talks to the route's origin: fix the server's endpoint or the route URL", e.Target, e.Route)
	}
	return fmt.Sprintf("request to %s refused: the route's origin is %s and the gateway sends nothing, least of all a credential, anywhere else", e.Target, e.Route)
}

// checkOrigin refuses u unless it is on the route's origin.
func (t *injectingTransport) checkOrigin(u *url.URL, endpoint bool) error {
	o, err := originOf(u)
	if err != nil || o != t.origin {
		target := u.Redacted()
		if err == nil {
			target = o.String()
		}
		return &CrossOriginError{Route: t.origin.String(), Target: target, Endpoint: endpoint}
	}
	return nil
}

// redactor replaces injected credential values in text the gateway copies
// from an upstream, so an upstream that echoes what it was sent cannot hand
// the credential to a caller or a log.
type redactor struct {
	secrets []string // longest first, so a value is replaced before its parts
}

const redactedText = "[REDACTED]"

// newRedactor covers each value as sent and in the encodings an echo is
// likely to use: base64 (standard and URL alphabets, padded or not) and URL
// escaping. For a value with an auth scheme ("Bearer x"), the token alone is
// covered too.
func newRedactor(values []string) *redactor {
	seen := map[string]bool{}
	var r redactor
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			r.secrets = append(r.secrets, s)
		}
	}
	for _, v := range values {
		forms := []string{v}
		if _, tok, ok := strings.Cut(v, " "); ok {
			forms = append(forms, strings.TrimSpace(tok))
		}
		for _, f := range forms {
			if f == "" {
				continue
			}
			add(f)
			add(base64.StdEncoding.EncodeToString([]byte(f)))
			add(base64.RawStdEncoding.EncodeToString([]byte(f)))
			add(base64.URLEncoding.EncodeToString([]byte(f)))
			add(base64.RawURLEncoding.EncodeToString([]byte(f)))
			add(url.QueryEscape(f))
			add(url.PathEscape(f))
		}
	}
	// Longest first: a token inside its own "Bearer token" is replaced with
	// the whole value.
	for i := 1; i < len(r.secrets); i++ {
		for j := i; j > 0 && len(r.secrets[j]) > len(r.secrets[j-1]); j-- {
			r.secrets[j], r.secrets[j-1] = r.secrets[j-1], r.secrets[j]
		}
	}
	return &r
}

// headerValues lists every value of h.
func headerValues(h http.Header) []string {
	var vs []string
	for _, v := range h {
		vs = append(vs, v...)
	}
	return vs
}

// envValues lists the values of NAME=value pairs.
func envValues(env []string) []string {
	vs := make([]string, 0, len(env))
	for _, kv := range env {
		if _, v, ok := strings.Cut(kv, "="); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// redact returns s with every secret replaced.
func (r *redactor) redact(s string) string {
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redactedText)
		}
	}
	return s
}

// maxJSONDepth is the nesting the go-sdk's decoder accepts.
const maxJSONDepth = 1000

// checkUpstreamMessage reports what makes data unusable as a JSON-RPC
// message from an upstream, in fixed words: the reason never quotes the
// upstream's bytes, which may carry what it was sent.
func checkUpstreamMessage(data []byte) (reason string, ok bool) {
	if !utf8.Valid(data) {
		return "the message is not valid UTF-8", false
	}
	if jsonDepth(data) > maxJSONDepth {
		return fmt.Sprintf("the message is nested deeper than %d levels", maxJSONDepth), false
	}
	if json.Valid(data) && plainMessage(data) {
		return "", true
	}
	msg, err := jsonrpc.DecodeMessage(data)
	if err != nil {
		return "the message is not a JSON-RPC 2.0 object", false
	}
	if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "" {
		return "the message is a request with an empty method", false
	}
	return "", true
}

// plainMessage reports whether data, valid JSON, is a JSON-RPC message of
// the plain shape nearly every message has, which the SDK's decoder is sure
// to accept: "jsonrpc":"2.0", an integer or string id (or none, with a
// method), a non-empty string method, no error, no escaped or repeated
// member names among those. Anything else is left to the SDK's decoder
// itself, which costs some 30 KB and 10 µs a message: checking every
// upstream message with it would double what decoding costs the proxy.
func plainMessage(data []byte) bool {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i++
	var sawVersion, sawID, sawMethod, idValid bool
	for {
		i = skipSpace(data, i)
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case '}':
			return sawVersion && (sawMethod || idValid)
		case ',':
			i = skipSpace(data, i+1)
		}
		if i >= len(data) || data[i] != '"' {
			return false
		}
		kEnd := endOfValue(data, i)
		key := data[i+1 : kEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		i = skipSpace(data, kEnd)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		vEnd := endOfValue(data, i)
		if vEnd <= i {
			return false
		}
		val := data[i:vEnd]
		i = vEnd
		switch string(key) {
		case "jsonrpc":
			if sawVersion || string(val) != `"2.0"` {
				return false
			}
			sawVersion = true
		case "id":
			if sawID {
				return false
			}
			sawID = true
			switch {
			case val[0] == '"':
				idValid = true
			case string(val) == "null":
			case isPlainInt(val):
				idValid = true
			default:
				return false
			}
		case "method":
			if sawMethod || val[0] != '"' || len(val) == 2 {
				return false
			}
			sawMethod = true
		case "error":
			if string(val) != "null" {
				return false
			}
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// endOfValue returns the index just past the JSON value starting at i in
// data, which is valid JSON.
func endOfValue(data []byte, i int) int {
	if i >= len(data) {
		return i
	}
	switch data[i] {
	case '"':
		for j := i + 1; j < len(data); j++ {
			switch data[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return len(data)
	case '{', '[':
		depth, inString := 0, false
		for j := i; j < len(data); j++ {
			b := data[j]
			if inString {
				switch b {
				case '\\':
					j++
				case '"':
					inString = false
				}
				continue
			}
			switch b {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	}
	j := i
	for j < len(data) && strings.IndexByte(",}] \t\r\n", data[j]) < 0 {
		j++
	}
	return j
}

// isPlainInt reports whether v is an integer of at most 15 digits, which a
// float64 holds exactly.
func isPlainInt(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 15 {
		return false
	}
	for _, b := range v {
		if b < '0' || b > '9' {
			return false
		}
	}
	return true
}

// jsonDepth returns the deepest nesting of objects and arrays in data,
// ignoring brackets in strings.
func jsonDepth(data []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			depth++
			deepest = max(deepest, depth)
		case '}', ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return deepest
}

// decodeUpstream is decodeMessage for messages from an upstream: it also
// refuses invalid UTF-8, and its errors name the problem without quoting
// the message. The refused message's id is kept when it can be read, so the
// call it answers fails instead of waiting.
func decodeUpstream(data []byte) (jsonrpc.Message, error) {
	if reason, ok := checkUpstreamMessage(data); !ok {
		me := &MessageError{Code: jsonrpc.CodeParseError, Message: reason}
		me.ID, me.Response = peekID(data)
		return nil, me
	}
	return decodeMessage(data)
}

// unusableMessage is the error a call gets when its upstream answered with
// something the gateway will not pass on.
func (t *injectingTransport) unusableMessage(reason string) string {
	return fmt.Sprintf("upstream of route %q answered with an unusable message: %s; the call failed, the session goes on (report it to the server's operators)", t.route, reason)
}

// tooLargeMessage is the error a call gets when its upstream's answer is
// over the cap.
func (t *injectingTransport) tooLargeMessage() string {
	return fmt.Sprintf("upstream of route %q answered with a message larger than %d bytes; the call failed, the session goes on (ask the operator to raise the message size limit if such results are expected)", t.route, t.max)
}

// bound wraps the body of an upstream's answer so that no more than the
// cap is ever buffered and every message handed to the SDK is one it can
// decode: a bad message is replaced by a JSON-RPC error for the call it
// answered.
func (t *injectingTransport) bound(req *http.Request, resp *http.Response) *http.Response {
	if resp.StatusCode < 200 || resp.StatusCode > 299 || resp.Body == nil || resp.Body == http.NoBody {
		return resp
	}
	switch mediaType(resp.Header.Get("Content-Type")) {
	case "application/json":
		if resp.ContentLength > t.max {
			resp.Body.Close()
			return t.replaceBody(resp, t.errorBody(req, nil, t.tooLargeMessage()))
		}
		resp.Body = &jsonBody{t: t, req: req, src: resp.Body}
	case "text/event-stream":
		resp.Body = newSSEFilter(t, req, resp.Body)
	default:
		return resp
	}
	resp.ContentLength = -1
	resp.Header = resp.Header.Clone()
	resp.Header.Del("Content-Length")
	return resp
}

// mediaType is the lower-case media type of a Content-Type value, without
// parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func (t *injectingTransport) replaceBody(resp *http.Response, data []byte) *http.Response {
	resp.Header = resp.Header.Clone()
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Del("Content-Length")
	resp.ContentLength = int64(len(data))
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp
}

// errorBody encodes a JSON-RPC error answering the call req carried, or,
// when its id cannot be read, the call head (a refused message) answered.
func (t *injectingTransport) errorBody(req *http.Request, head []byte, msg string) []byte {
	id := requestID(req)
	if !id.IsValid() && head != nil {
		if hid, isResp := peekID(head); isResp {
			id = hid
		}
	}
	data, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: CodeUpstreamError, Message: msg}})
	return data
}

// requestID returns the id of the JSON-RPC call a POST carries, invalid
// when it carries none.
func requestID(req *http.Request) jsonrpc.ID {
	if req == nil || req.Method != http.MethodPost || req.GetBody == nil {
		return jsonrpc.ID{}
	}
	rb, err := req.GetBody()
	if err != nil {
		return jsonrpc.ID{}
	}
	data, _ := io.ReadAll(io.LimitReader(rb, 16<<20))
	rb.Close()
	if msg, err := jsonrpc.DecodeMessage(data); err == nil {
		if r, ok := msg.(*jsonrpc.Request); ok && r.IsCall() {
			return r.ID
		}
	}
	return jsonrpc.ID{}
}

// jsonBody is an application/json answer, read whole (up to the cap) on the
// first Read and checked before any byte reaches the SDK.
type jsonBody struct {
	t     *injectingTransport
	req   *http.Request
	src   io.ReadCloser
	out   *bytes.Reader // nil until the first Read
	guard *answerGuard  // told once the answer is read; may be nil
}

func (b *jsonBody) Read(p []byte) (int, error) {
	if b.out == nil {
		data, err := b.t.checkedJSON(b.req, b.src)
		if err != nil {
			return 0, err
		}
		b.out = bytes.NewReader(data)
		b.guard.markAnswered()
	}
	return b.out.Read(p)
}

// checkedJSON reads an application/json answer whole, up to the cap, and
// returns it, or in its place a JSON-RPC error for the call req carried
// when it is over the cap or unusable.
func (t *injectingTransport) checkedJSON(req *http.Request, src io.ReadCloser) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(src, t.max+1))
	switch {
	case err != nil:
		return nil, err
	case int64(len(data)) > t.max:
		t.logger.Warn("upstream answer over the message cap refused", slog.Int64("limit", t.max))
		data = t.errorBody(req, data[:min(len(data), peekHeadBytes)], t.tooLargeMessage())
		src.Close() // do not read the rest of it
	default:
		if reason, ok := checkUpstreamMessage(data); !ok {
			t.logger.Warn("upstream sent an unusable answer; refused", slog.String("reason", reason))
			data = t.errorBody(req, data, t.unusableMessage(reason))
		}
	}
	return data, nil
}

func (b *jsonBody) Close() error { return b.src.Close() }

// sseFilter re-emits an event stream with every event bounded and every
// message checked: an oversized or unusable response becomes an error for
// its call, other unusable events are dropped. For a legacy SSE upstream it
// also checks the endpoint event against the route's origin.
type sseFilter struct {
	t           *injectingTransport
	req         *http.Request // the request the stream answers
	src         io.ReadCloser
	r           *sseReader
	sawEndpoint bool // legacy SSE: the endpoint event has been checked
	out         bytes.Buffer
	err         error
	guard       *answerGuard // told when a response passes; may be nil
}

func newSSEFilter(t *injectingTransport, req *http.Request, src io.ReadCloser) *sseFilter {
	// A small buffer: there is one filter per response stream.
	return newSSEFilterSize(t, req, src, sseReadBuf)
}

// idleStreamBuf is the read buffer of a standalone event stream, which is
// idle nearly all its life and held for all of it: small, because the
// response body it reads is buffered by net/http already, so a small
// buffer costs calls, not system calls.
const idleStreamBuf = 512

func newSSEFilterSize(t *injectingTransport, req *http.Request, src io.ReadCloser, size int) *sseFilter {
	r := &sseReader{r: bufio.NewReaderSize(src, size), max: int(min(t.max, int64(maxInt))), keepEmpty: true}
	return &sseFilter{t: t, req: req, src: src, r: r}
}

func (f *sseFilter) Read(p []byte) (int, error) {
	for f.out.Len() == 0 {
		if f.err != nil {
			return 0, f.err
		}
		f.out.Reset()
		ev, pass, err := f.event()
		switch {
		case err != nil:
			f.err = err
		case pass:
			writeEvent(&f.out, ev)
		default:
			f.out.WriteString(": refused event\n\n")
		}
	}
	return f.out.Read(p)
}

func (f *sseFilter) Close() error { return f.src.Close() }

// nextEvent returns the next event the filter passes on, for a reader of
// events that would otherwise parse the filter's output again.
func (f *sseFilter) nextEvent() (sseEvent, error) {
	for {
		if f.err != nil {
			return sseEvent{}, f.err
		}
		ev, pass, err := f.event()
		if err != nil {
			f.err = err
			return sseEvent{}, err
		}
		if pass {
			return ev, nil
		}
	}
}

// event reads one event and returns what to pass on of it, or pass false
// when nothing of it is passed on (a comment on the wire).
func (f *sseFilter) event() (out sseEvent, pass bool, err error) {
	ev, err := f.r.Next()
	var big *sseTooLarge
	switch {
	case errors.As(err, &big):
		f.t.logger.Warn("upstream event over the message cap refused", slog.Int64("limit", f.t.max))
		out, pass = f.refuse(ev.ID, big.head, f.t.tooLargeMessage())
		return out, pass, nil
	case err != nil:
		return sseEvent{}, false, err
	}
	if f.t.legacySSE {
		// The SDK's legacy client takes the first event as the endpoint
		// and decodes every later one as a message, whatever its name.
		switch {
		case !f.sawEndpoint && ev.Name == "endpoint":
			f.sawEndpoint = true
			if err := f.checkEndpoint(ev); err != nil {
				return sseEvent{}, false, err
			}
			return ev, true, nil
		case len(ev.Data) == 0 || (ev.Name != "" && ev.Name != "message"):
			out, pass = f.skip("")
			return out, pass, nil
		}
	}
	if len(ev.Data) > 0 && (ev.Name == "" || ev.Name == "message") {
		if reason, ok := checkUpstreamMessage(ev.Data); !ok {
			f.t.logger.Warn("upstream sent an unusable event; refused", slog.String("reason", reason))
			out, pass = f.refuse(ev.ID, ev.Data, f.t.unusableMessage(reason))
			return out, pass, nil
		}
		if !isRequest(ev.Data) {
			f.guard.markAnswered()
		}
	}
	return ev, true, nil
}

// skip passes on nothing of an event but its id, so that a resumed stream
// still starts after it; the legacy SSE client would take even that for a
// message, so it gets nothing.
func (f *sseFilter) skip(eventID string) (sseEvent, bool) {
	if eventID != "" && !f.t.legacySSE {
		return sseEvent{ID: eventID}, true
	}
	return sseEvent{}, false
}

// refuse replaces a refused event by an error for the call it answered:
// the call the stream is for, or the one the event names. A refused
// notification or request is dropped (see skip).
func (f *sseFilter) refuse(eventID string, head []byte, msg string) (sseEvent, bool) {
	id, isResp := peekID(head)
	switch {
	case id.IsValid() && !isResp:
		id = jsonrpc.ID{} // a request: the upstream's own, nothing waits on it here
	case !id.IsValid() && !isRequest(head):
		id = requestID(f.req)
	}
	if !id.IsValid() {
		return f.skip(eventID)
	}
	data, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: CodeUpstreamError, Message: msg}})
	f.guard.markAnswered()
	return sseEvent{ID: eventID, Name: "message", Data: data}, true
}

// isRequest reports whether the head of a message shows it is a request or
// notification.
func isRequest(head []byte) bool {
	return bytes.Contains(head, []byte(`"method"`))
}

// checkEndpoint refuses a legacy SSE endpoint event that names another
// origin than the route's, which ends the stream: the SDK would POST every
// message of the session there.
func (f *sseFilter) checkEndpoint(ev sseEvent) error {
	u, err := f.req.URL.Parse(strings.TrimSpace(string(ev.Data)))
	if err != nil {
		return fmt.Errorf("upstream sent an endpoint event that is not a URL; check the route points at a legacy SSE MCP server")
	}
	if err := f.t.checkOrigin(u, true); err != nil {
		f.t.endpointErr.Store(err.(*CrossOriginError))
		return err
	}
	return nil
}

// writeEvent serializes ev as the SSE wire form.
func writeEvent(b *bytes.Buffer, ev sseEvent) {
	if ev.ID != "" {
		b.WriteString("id: " + ev.ID + "\n")
	}
	if ev.Name != "" {
		b.WriteString("event: " + ev.Name + "\n")
	}
	if ev.Retry != "" {
		b.WriteString("retry: " + ev.Retry + "\n")
	}
	if ev.Data != nil {
		for _, line := range bytes.Split(ev.Data, []byte{'\n'}) {
			b.WriteString("data: ")
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	if b.Len() == 0 {
		b.WriteString(":\n")
	}
	b.WriteByte('\n')
}
