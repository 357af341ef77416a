package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/transport"
)

// Bounds on a session held open while its user consents.
const (
	// maxConsentWait bounds how long a session waits for the credential
	// after sending its client a URL elicitation (and never past the
	// link's expiry).
	maxConsentWait = 10 * time.Minute
	// consentPoll is how often a waiting session looks for the
	// credential in the replicated state.
	consentPoll = 200 * time.Millisecond
	// consentLinger is how long a refused held session stays open for its
	// client to read the refusal and hang up.
	consentLinger = 5 * time.Second
)

// consentRequired is a session refused for want of consent, with the link
// that fixes it. It unwraps to the refusal callers see.
type consentRequired struct {
	ref  *transport.Refusal
	link ConsentLink
}

func (e *consentRequired) Error() string { return e.ref.Message }
func (e *consentRequired) Unwrap() error { return e.ref }

// consentWait is what a session held for consent needs: what to dial once
// the credential is there, the link, and the refusal to answer with when
// the client cannot elicit, declines or runs out of time.
type consentWait struct {
	spec sessionSpec
	cr   *consentRequired
}

// holdsForConsent reports whether sessions of a transport are held open
// for consent: those whose client speaks first over one bidirectional
// stream, so the gateway can read the client's capabilities and send an
// elicitation before the upstream answers, and stateless 2026-07-28
// requests over streamable HTTP (modern set), which carry their
// capabilities and are answered input_required. Stateful streamable HTTP
// and HTTP+SSE sessions are refused at once, the URL in the refusal's data.
func holdsForConsent(transportName string, modern bool) bool {
	switch transportName {
	case "streamable":
		return modern
	case "sse":
		return false
	}
	return true
}

// consentElicitationID names the URL elicitation of a link, the same in
// every session that gets it: a 2026-07-28 client's retry may come as
// another stateless request, even through another node.
func consentElicitationID(link ConsentLink) string {
	sum := sha256.Sum256([]byte(link.URL))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// declaresURLElicitation reports whether initialize params declare
// capabilities.elicitation.url (MCP 2025-11-25). The answer only decides
// whether the gateway offers the link as an elicitation; nothing is
// forwarded on it, so a lenient decode is enough.
func declaresURLElicitation(params json.RawMessage) bool {
	var p struct {
		Capabilities struct {
			Elicitation *struct {
				URL json.RawMessage `json:"url"`
			} `json:"elicitation"`
		} `json:"capabilities"`
	}
	if json.Unmarshal(params, &p) != nil || p.Capabilities.Elicitation == nil {
		return false
	}
	u := p.Capabilities.Elicitation.URL
	return len(u) > 0 && string(u) != "null"
}

// awaitConsent runs before a held session's pump and reports whether the
// session goes on. It reads the client's first requests:
//
//   - initialize (MCP 2025-11-25 and before) from a client that declares
//     URL elicitation: the gateway sends the link as an elicitation/create
//     in "url" mode, waits (bounded) for the credential to appear in the
//     replicated state (the callback may land on any node), dials the
//     upstream, sends notifications/elicitation/complete and hands
//     initialize on.
//   - server/discover (2026-07-28) from a client that declares URL
//     elicitation: the gateway answers it, and answers tools/call,
//     prompts/get and resources/read with an input_required result whose
//     input request is the URL elicitation; the client's retry, once the
//     credential is there, goes to the upstream (after the discover,
//     whose answer the client already has).
//
// Any other client, a decline, or no consent within the bound gets the
// consent refusal as the answer to its request.
func (s *session) awaitConsent(ctx context.Context) bool {
	cw := s.consent
	in := newHeldConn(s.down)
	s.down = in
	elicitationID := consentElicitationID(cw.cr.link)
	var discover *jsonrpc.Request // a 2026-07-28 client's, once answered
	// A held session lives no longer than its link, nor maxConsentWait.
	held, cancel := context.WithTimeout(ctx, s.consentDeadline().Sub(s.g.opts.Clock()))
	defer cancel()
	for {
		msg, err := in.Read(held)
		if err != nil {
			if _, ok := transport.AsMessageError(err); ok {
				continue
			}
			return false
		}
		req, ok := msg.(*jsonrpc.Request)
		if !ok || !req.IsCall() {
			continue // nothing to forward to yet
		}
		switch {
		case req.Method == "initialize" && discover == nil:
			if !declaresURLElicitation(req.Params) {
				return s.refuseConsent(ctx, in, req.ID, cw.cr.ref, true)
			}
			return s.elicitConsent(ctx, in, req, elicitationID)
		case req.Method == "server/discover" && discover == nil:
			if !declaresURLElicitation(metaCapabilities(req.Params)) {
				// The client falls back to initialize, refused there.
				s.refuseConsent(ctx, in, req.ID, cw.cr.ref, false)
				continue
			}
			discover = req
			s.writeDown(ctx, &jsonrpc.Response{ID: req.ID, Result: s.heldDiscoverResult()})
		case (discover != nil || s.oneShot && declaresURLElicitation(metaCapabilities(req.Params))) && inputRequiredMethods[req.Method]:
			retry, accept := consentRetry(req.Params, elicitationID)
			if !retry {
				s.writeDown(ctx, &jsonrpc.Response{ID: req.ID, Result: s.inputRequired(elicitationID)})
				s.g.metrics.refusalsTotal.WithLabelValues("consent_elicited").Inc()
				continue
			}
			if !accept {
				return s.refuseDeclined(ctx, in, req.ID)
			}
			if !s.waitCredential(ctx, in, nil) {
				return s.refuseConsent(ctx, in, req.ID, cw.cr.ref, true)
			}
			call := *req
			call.Params = stripConsentRetry(req.Params)
			return s.proceed(ctx, in, req.ID, discover, &call)
		case discover != nil || s.oneShot:
			if cred, _, err := s.creds.current(); err == nil && cred != nil {
				return s.proceed(ctx, in, req.ID, discover, req)
			}
			s.refuseConsent(ctx, in, req.ID, cw.cr.ref, false)
		default:
			return s.refuseConsent(ctx, in, req.ID, cw.cr.ref, true)
		}
	}
}

// inputRequiredMethods are the 2026-07-28 methods a server may answer with
// input_required (the multi round-trip requests).
var inputRequiredMethods = map[string]bool{"tools/call": true, "prompts/get": true, "resources/read": true}

// consentInputKey names the gateway's input request in an input_required
// result, and consentStatePrefix marks its requestState.
const (
	consentInputKey    = "mcpgw-consent"
	consentStatePrefix = "mcpgw-consent:"
)

// elicitConsent sends a legacy client the URL elicitation and proceeds
// once the credential is there.
func (s *session) elicitConsent(ctx context.Context, in *heldConn, initialize *jsonrpc.Request, elicitationID string) bool {
	cw := s.consent
	callID, _ := jsonrpc.MakeID("mcpgw-consent-" + elicitationID)
	params, _ := json.Marshal(s.elicitParams(elicitationID))
	in.drop(callID)
	s.writeDown(ctx, &jsonrpc.Request{ID: callID, Method: "elicitation/create", Params: params})
	s.g.metrics.refusalsTotal.WithLabelValues("consent_elicited").Inc()
	s.logger.Info("session waits for oauth consent; url elicitation sent")
	declined := false
	if !s.waitCredential(ctx, in, &declined) {
		if declined {
			return s.refuseDeclined(ctx, in, initialize.ID)
		}
		return s.refuseConsent(ctx, in, initialize.ID, cw.cr.ref, true)
	}
	up, ok := s.dialAfterConsent(ctx, in, initialize.ID)
	if !ok {
		return false
	}
	s.up = up
	done, _ := json.Marshal(&mcp.ElicitationCompleteParams{ElicitationID: elicitationID})
	s.writeDown(ctx, &jsonrpc.Request{Method: "notifications/elicitation/complete", Params: done})
	s.logger.Info("oauth consent arrived; session proceeds")
	in.replay(initialize)
	return true
}

// proceed dials the upstream of a 2026-07-28 held session and hands the
// pump its discover (whose answer is dropped: the client has one) and
// then the call.
func (s *session) proceed(ctx context.Context, in *heldConn, id jsonrpc.ID, discover, call *jsonrpc.Request) bool {
	up, ok := s.dialAfterConsent(ctx, in, id)
	if !ok {
		return false
	}
	s.up = up
	s.logger.Info("oauth consent arrived; session proceeds")
	if discover == nil { // a stateless request: it is all there is
		in.replay(call)
		return true
	}
	in.dropAnswer(discover.ID)
	in.replay(discover, call)
	return true
}

func (s *session) dialAfterConsent(ctx context.Context, in *heldConn, id jsonrpc.ID) (mcp.Connection, bool) {
	up, err := s.g.dial(ctx, s.consent.spec, s.creds)
	if err != nil {
		var ref *transport.Refusal
		if !errors.As(err, &ref) {
			ref = &transport.Refusal{Code: transport.CodeUpstreamError, Message: "upstream connect failed after consent; connect again"}
		}
		return nil, s.refuseConsent(ctx, in, id, ref, true)
	}
	return up, true
}

// consentDeadline is the latest a held session waits: its link's expiry,
// at most maxConsentWait from now.
func (s *session) consentDeadline() time.Time {
	deadline := s.g.opts.Clock().Add(maxConsentWait)
	if e := s.consent.cr.link.Expires; e.Before(deadline) {
		deadline = e
	}
	return deadline
}

// waitCredential waits, bounded by the link's expiry and maxConsentWait,
// for the credential to appear. With declined set it also watches for the
// legacy elicitation's answer, and reports a decline through it.
func (s *session) waitCredential(ctx context.Context, in *heldConn, declined *bool) bool {
	deadline := s.consentDeadline()
	tick := time.NewTicker(consentPoll)
	defer tick.Stop()
	answer := in.answer
	if declined == nil {
		answer = nil
	}
	for {
		if cred, _, err := s.creds.current(); err == nil && cred != nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-in.gone:
			return false
		case res := <-answer:
			if res.Error != nil || !accepted(res.Result) {
				*declined = true
				return false
			}
		case <-tick.C:
			if s.g.opts.Clock().After(deadline) {
				return false
			}
		}
	}
}

// refuseConsent answers id with ref. With final set, the session ends: it
// stays open a moment for the client to read the answer and hang up, since
// closing at once could reach it first (the go-sdk then reports only a
// closed connection). It returns false, the session not going on.
func (s *session) refuseConsent(ctx context.Context, in *heldConn, id jsonrpc.ID, ref *transport.Refusal, final bool) bool {
	s.writeDown(ctx, &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: ref.Code, Message: ref.Message, Data: ref.Data}})
	if !final {
		return false
	}
	s.g.auditRefusal(sessionRequest{remote: s.remote}, s.claims, s.consent.spec, ref)
	linger := time.NewTimer(consentLinger)
	defer linger.Stop()
	select {
	case <-in.gone:
	case <-linger.C:
	case <-ctx.Done():
	}
	return false
}

func (s *session) refuseDeclined(ctx context.Context, in *heldConn, id jsonrpc.ID) bool {
	declined := *s.consent.cr.ref
	declined.Message = "the user did not accept the sign-in: " + declined.Message
	return s.refuseConsent(ctx, in, id, &declined, true)
}

// elicitParams is the URL elicitation of the session's link.
func (s *session) elicitParams(elicitationID string) *mcp.ElicitParams {
	return &mcp.ElicitParams{Mode: "url", URL: s.consent.cr.link.URL, ElicitationID: elicitationID,
		Message: "Connect account " + s.account + " of " + s.org + " to " + s.route.Name + ": open the link and approve."}
}

// heldDiscoverResult answers a held 2026-07-28 session's server/discover:
// the gateway cannot ask the upstream yet, so it says what it can promise,
// tools, under the route's name.
func (s *session) heldDiscoverResult() json.RawMessage {
	res, _ := json.Marshal(map[string]any{
		"supportedVersions": []string{"2026-07-28"},
		"capabilities":      map[string]any{"tools": map[string]any{}},
		"_meta":             map[string]any{"io.modelcontextprotocol/serverInfo": map[string]string{"name": s.route.Name, "version": "mcpgw"}},
	})
	return res
}

// inputRequired is the 2026-07-28 answer to a call that needs consent: an
// input_required result whose one input request is the URL elicitation.
func (s *session) inputRequired(elicitationID string) json.RawMessage {
	params, _ := json.Marshal(s.elicitParams(elicitationID))
	res, _ := json.Marshal(map[string]any{
		"content":       []any{},
		"resultType":    "input_required",
		"inputRequests": map[string]any{consentInputKey: map[string]any{"method": "elicitation/create", "params": json.RawMessage(params)}},
		"requestState":  consentStatePrefix + elicitationID,
	})
	return res
}

// consentRetry reports whether call params are the retry of the gateway's
// input_required result, and whether the user accepted.
func consentRetry(params json.RawMessage, elicitationID string) (retry, accept bool) {
	var p struct {
		RequestState   string                     `json:"requestState"`
		InputResponses map[string]json.RawMessage `json:"inputResponses"`
	}
	if json.Unmarshal(params, &p) != nil || p.RequestState != consentStatePrefix+elicitationID {
		return false, false
	}
	return true, accepted(p.InputResponses[consentInputKey])
}

// forUpstream returns req without the gateway's requestState and input
// response when it is the retry of the gateway's input_required answer
// (a 2026-07-28 client retrying once the credential is there), req as it
// is otherwise.
func forUpstream(req *jsonrpc.Request) *jsonrpc.Request {
	if !inputRequiredMethods[req.Method] || !bytes.Contains(req.Params, []byte(consentStatePrefix)) {
		return req
	}
	var p struct {
		RequestState string `json:"requestState"`
	}
	if json.Unmarshal(req.Params, &p) != nil || !strings.HasPrefix(p.RequestState, consentStatePrefix) {
		return req
	}
	out := *req
	out.Params = stripConsentRetry(req.Params)
	return &out
}

// stripConsentRetry removes the gateway's requestState and input response
// from call params, which the upstream never asked for.
func stripConsentRetry(params json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(params, &m) != nil {
		return params
	}
	delete(m, "requestState")
	delete(m, "inputResponses")
	out, err := json.Marshal(m)
	if err != nil {
		return params
	}
	return out
}

// metaCapabilities returns the client capabilities a 2026-07-28 request
// carries in params._meta, wrapped as initialize params carry them.
func metaCapabilities(params json.RawMessage) json.RawMessage {
	var p struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	if json.Unmarshal(params, &p) != nil {
		return nil
	}
	caps := p.Meta["io.modelcontextprotocol/clientCapabilities"]
	if len(caps) == 0 {
		return nil
	}
	out, _ := json.Marshal(map[string]json.RawMessage{"capabilities": caps})
	return out
}

// accepted reports whether an elicitation result's action is "accept".
func accepted(result json.RawMessage) bool {
	var r struct {
		Action string `json:"action"`
	}
	return json.Unmarshal(result, &r) == nil && r.Action == "accept"
}

// heldConn is a session's downstream connection while it waits for
// consent and after: one goroutine reads the client, so that the wait can
// watch for the elicitation's answer and a hang-up while the pump later
// reads on. It answers pings itself during the wait, hands the
// elicitation's answer to the wait rather than the upstream, and replays
// the held initialize first.
type heldConn struct {
	mcp.Connection
	answer chan *jsonrpc.Response // the elicitation's answer, once
	gone   chan struct{}          // closed when the client's stream ends

	mu      sync.Mutex
	dropID  jsonrpc.ID    // the elicitation call's id; guarded by mu
	dropOut jsonrpc.ID    // an upstream answer not to pass on; guarded by mu
	queue   []heldItem    // read and not yet taken; guarded by mu
	err     error         // the read error that ended the stream; guarded by mu
	waiting bool          // before replay: pings are answered here; guarded by mu
	ready   chan struct{} // signalled when queue or err changes
}

func newHeldConn(c mcp.Connection) *heldConn {
	h := &heldConn{Connection: c, answer: make(chan *jsonrpc.Response, 1), gone: make(chan struct{}), waiting: true, ready: make(chan struct{}, 1)}
	go h.pump()
	return h
}

// pump reads the client until its stream ends (Close ends it).
func (h *heldConn) pump() {
	defer close(h.gone)
	for {
		msg, err := h.Connection.Read(context.Background())
		if err != nil {
			h.push(nil, err)
			if _, ok := transport.AsMessageError(err); ok {
				continue
			}
			return
		}
		h.mu.Lock()
		drop, waiting := h.dropID, h.waiting
		h.mu.Unlock()
		if r, ok := msg.(*jsonrpc.Response); ok && drop.IsValid() && r.ID == drop {
			select {
			case h.answer <- r:
			default:
			}
			continue
		}
		if r, ok := msg.(*jsonrpc.Request); ok && waiting && r.IsCall() && r.Method == "ping" {
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			h.Connection.Write(wctx, &jsonrpc.Response{ID: r.ID, Result: json.RawMessage("{}")})
			cancel()
			continue
		}
		h.push(msg, nil)
	}
}

func (h *heldConn) push(msg jsonrpc.Message, err error) {
	h.mu.Lock()
	if msg != nil {
		h.queue = append(h.queue, heldItem{msg: msg})
	}
	if err != nil {
		if _, ok := transport.AsMessageError(err); ok {
			h.queue = append(h.queue, heldItem{err: err})
		} else if h.err == nil {
			h.err = err
		}
	}
	h.mu.Unlock()
	select {
	case h.ready <- struct{}{}:
	default:
	}
}

// heldItem is a message read, or a per-message read error (the stream
// goes on after it).
type heldItem struct {
	msg jsonrpc.Message
	err error
}

func (h *heldConn) drop(id jsonrpc.ID) {
	h.mu.Lock()
	h.dropID = id
	h.mu.Unlock()
}

// dropAnswer drops the upstream's answer to id (one the gateway gave).
func (h *heldConn) dropAnswer(id jsonrpc.ID) {
	h.mu.Lock()
	h.dropOut = id
	h.mu.Unlock()
}

// Write implements mcp.Connection, dropping the answer dropAnswer named.
func (h *heldConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	if r, ok := msg.(*jsonrpc.Response); ok {
		h.mu.Lock()
		drop := h.dropOut.IsValid() && r.ID == h.dropOut
		if drop {
			h.dropOut = jsonrpc.ID{}
		}
		h.mu.Unlock()
		if drop {
			return nil
		}
	}
	return h.Connection.Write(ctx, msg)
}

// replay puts msgs first in line for the pump and ends the wait.
func (h *heldConn) replay(msgs ...jsonrpc.Message) {
	items := make([]heldItem, 0, len(msgs))
	for _, m := range msgs {
		items = append(items, heldItem{msg: m})
	}
	h.mu.Lock()
	h.queue = append(items, h.queue...)
	h.waiting = false
	h.mu.Unlock()
	select {
	case h.ready <- struct{}{}:
	default:
	}
}

// Read implements mcp.Connection from what pump read.
func (h *heldConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		h.mu.Lock()
		if len(h.queue) > 0 {
			it := h.queue[0]
			h.queue = h.queue[1:]
			h.mu.Unlock()
			return it.msg, it.err
		}
		err := h.err
		h.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-h.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ClosePolicy and CloseGoingAway pass the pump's close reasons on.
func (h *heldConn) ClosePolicy(reason string) error {
	if cp, ok := h.Connection.(interface{ ClosePolicy(reason string) error }); ok {
		return cp.ClosePolicy(reason)
	}
	return h.Connection.Close()
}

func (h *heldConn) CloseGoingAway() error {
	if ga, ok := h.Connection.(interface{ CloseGoingAway() error }); ok {
		return ga.CloseGoingAway()
	}
	return h.Connection.Close()
}
