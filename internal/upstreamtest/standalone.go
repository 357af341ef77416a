package upstreamtest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// StandaloneRequester is a streamable HTTP MCP server that sends the
// requests its tool makes of the client on the session's standalone GET
// stream only, as the TypeScript SDK's server does for a request that names
// no related client request (server.request() from a tool, roots/list on
// initialized): with no GET stream open at that moment, the request is
// dropped and the tool call waits for an answer that never comes.
//
// It is written by hand because the go-sdk server sends a tool's requests
// on the POST stream of the call, which never loses them.
//
// Its one tool, "ask", sends elicitation/create with the call's text and
// answers "answered: <the elicited response>".
type StandaloneRequester struct {
	// Dropped counts requests the server had to drop: no GET stream was
	// open when the tool sent them.
	Dropped atomic.Int64
	// AnswerTimeout bounds how long a call waits for the client's answer
	// before it fails. Default 5s.
	AnswerTimeout time.Duration

	mu       sync.Mutex
	sessions map[string]*standaloneSession // guarded by mu
	nextID   atomic.Int64
}

// standaloneSession is one session of a StandaloneRequester.
type standaloneSession struct {
	mu      sync.Mutex
	stream  chan []byte                       // the open GET stream's events, nil if none; guarded by mu
	waiting map[string]chan *jsonrpc.Response // request id → the call awaiting its answer; guarded by mu
}

// ServeHTTP serves the streamable HTTP transport: POST for messages, GET
// for the standalone stream, DELETE to end a session.
func (s *StandaloneRequester) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		s.servePOST(w, r)
	case http.MethodGet:
		sess := s.session(r)
		if sess == nil {
			http.Error(w, "unknown session", http.StatusNotFound)
			return
		}
		s.serveGET(w, r, sess)
	case http.MethodDelete:
		s.mu.Lock()
		delete(s.sessions, r.Header.Get("Mcp-Session-Id"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (s *StandaloneRequester) session(r *http.Request) *standaloneSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[r.Header.Get("Mcp-Session-Id")]
}

func (s *StandaloneRequester) serveGET(w http.ResponseWriter, r *http.Request, sess *standaloneSession) {
	events := make(chan []byte, 16)
	sess.mu.Lock()
	if sess.stream != nil {
		sess.mu.Unlock()
		http.Error(w, "a GET stream is already open", http.StatusConflict)
		return
	}
	// Registered before the headers go out, as the SDK servers do.
	sess.stream = events
	sess.mu.Unlock()
	defer func() {
		sess.mu.Lock()
		sess.stream = nil
		sess.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	for {
		select {
		case data := <-events:
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", data)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func (s *StandaloneRequester) servePOST(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	msg, err := jsonrpc.DecodeMessage(body)
	if err != nil {
		http.Error(w, "malformed message", http.StatusBadRequest)
		return
	}
	if resp, ok := msg.(*jsonrpc.Response); ok {
		sess := s.session(r)
		if sess == nil {
			http.Error(w, "unknown session", http.StatusNotFound)
			return
		}
		sess.mu.Lock()
		ch := sess.waiting[fmt.Sprint(resp.ID.Raw())]
		sess.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}
	req := msg.(*jsonrpc.Request)
	if !req.IsCall() {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if req.Method == "initialize" {
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		json.Unmarshal(req.Params, &p)
		version := "2025-11-25"
		switch p.ProtocolVersion {
		case "2025-03-26", "2025-06-18":
			version = p.ProtocolVersion
		}
		id := rand.Text()
		s.mu.Lock()
		if s.sessions == nil {
			s.sessions = make(map[string]*standaloneSession)
		}
		s.sessions[id] = &standaloneSession{waiting: make(map[string]chan *jsonrpc.Response)}
		s.mu.Unlock()
		w.Header().Set("Mcp-Session-Id", id)
		writeResult(w, req.ID, map[string]any{
			"protocolVersion": version,
			"capabilities":    map[string]any{"tools": map[string]any{}},
			"serverInfo":      map[string]any{"name": "standalone-requester", "version": "1"},
		})
		return
	}
	sess := s.session(r)
	if sess == nil {
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	switch req.Method {
	case "tools/list":
		writeResult(w, req.ID, map[string]any{"tools": []any{map[string]any{
			"name": "ask", "description": "asks the client for input on the standalone stream",
			"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}},
		}}})
	case "tools/call":
		s.ask(w, req, sess)
	case "ping":
		writeResult(w, req.ID, map[string]any{})
	default:
		writeError(w, req.ID, jsonrpc.CodeMethodNotFound, "method not found")
	}
}

// ask sends elicitation/create on the GET stream, or drops it, and answers
// the call with what the client answered.
func (s *StandaloneRequester) ask(w http.ResponseWriter, req *jsonrpc.Request, sess *standaloneSession) {
	var p struct {
		Arguments struct {
			Text string `json:"text"`
		} `json:"arguments"`
	}
	json.Unmarshal(req.Params, &p)
	id := fmt.Sprintf("elicit-%d", s.nextID.Add(1))
	rid, _ := jsonrpc.MakeID(id)
	params, _ := json.Marshal(map[string]any{
		"message": p.Arguments.Text,
		"requestedSchema": map[string]any{"type": "object",
			"properties": map[string]any{"response": map[string]any{"type": "string"}}},
	})
	data, _ := jsonrpc.EncodeMessage(&jsonrpc.Request{ID: rid, Method: "elicitation/create", Params: params})
	answer := make(chan *jsonrpc.Response, 1)
	sess.mu.Lock()
	stream := sess.stream
	if stream != nil {
		sess.waiting[id] = answer
	}
	sess.mu.Unlock()
	if stream == nil {
		s.Dropped.Add(1)
	} else {
		stream <- data
	}
	timeout := s.AnswerTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	select {
	case resp := <-answer:
		var res struct {
			Action  string `json:"action"`
			Content struct {
				Response string `json:"response"`
			} `json:"content"`
		}
		if resp.Error != nil || json.Unmarshal(resp.Result, &res) != nil || res.Action != "accept" {
			writeError(w, req.ID, jsonrpc.CodeInternalError, "elicitation was not accepted")
			return
		}
		writeResult(w, req.ID, map[string]any{"content": []any{map[string]any{"type": "text", "text": "answered: " + res.Content.Response}}})
	case <-time.After(timeout):
		writeError(w, req.ID, jsonrpc.CodeInternalError, "the client never answered elicitation/create")
	}
	sess.mu.Lock()
	delete(sess.waiting, id)
	sess.mu.Unlock()
}

func writeResult(w http.ResponseWriter, id jsonrpc.ID, result any) {
	raw, _ := json.Marshal(result)
	data, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Result: raw})
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}

func writeError(w http.ResponseWriter, id jsonrpc.ID, code int64, msg string) {
	data, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: code, Message: msg}})
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}
