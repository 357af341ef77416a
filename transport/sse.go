package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	ID    string
	Name  string
	Retry string
	Data  []byte
}

// sseReader reads server-sent events from a stream, bounding each event.
type sseReader struct {
	r   *bufio.Reader
	max int
	// keepEmpty makes Next return events without data that carry an id, a
	// name or a retry (a resumable stream's priming event), for a reader
	// that passes the stream on.
	keepEmpty bool
}

// sseReadBuf is the read buffer of an event stream. It is small because a
// session's stream is mostly idle, and what it costs is paid per session;
// readLine assembles longer lines from several reads.
const sseReadBuf = 4 << 10

func newSSEReader(r io.Reader, maxEvent int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, sseReadBuf), max: maxEvent}
}

// sseTooLarge reports an event over the cap. The reader has skipped the
// rest of it and may read on; head is the start of the event's data, which
// usually names the id of the message it carried.
type sseTooLarge struct {
	max  int
	line bool // a single line was over the cap
	head []byte
}

func (e *sseTooLarge) Error() string {
	if e.line {
		return fmt.Sprintf("server-sent event line longer than %d bytes", e.max)
	}
	return fmt.Sprintf("server-sent event larger than %d bytes", e.max)
}

// Next returns the next event with data. Events without data (comments,
// keepalives, bare ids) are skipped unless keepEmpty is set. It returns
// io.EOF at the end of the stream and an *sseTooLarge for an oversized
// event, with the event's id, after which it can read on: only the first
// peekHeadBytes of such an event are ever buffered.
func (s *sseReader) Next() (sseEvent, error) {
	var ev sseEvent
	var data bytes.Buffer
	hasData := false
	var big *sseTooLarge
	dispatch := func() (sseEvent, error, bool) {
		switch {
		case big != nil:
			return sseEvent{ID: ev.ID, Name: ev.Name}, big, true
		case hasData:
			ev.Data = data.Bytes()
			return ev, nil, true
		case s.keepEmpty && (ev.ID != "" || ev.Name != "" || ev.Retry != ""):
			return ev, nil, true
		}
		return ev, nil, false
	}
	for {
		line, err := s.readLine()
		var long *sseTooLarge
		switch {
		case errors.As(err, &long):
			if big == nil {
				big = long
				head := data.Bytes()
				if field, value, _ := strings.Cut(string(long.head), ":"); field == "data" {
					head = append(head, strings.TrimPrefix(value, " ")...)
				}
				big.head = bytes.Clone(head[:min(len(head), peekHeadBytes)])
				data = bytes.Buffer{}
			}
			continue
		case err != nil:
			if err == io.EOF {
				if e, derr, ok := dispatch(); ok {
					return e, derr
				}
			}
			return ev, err
		}
		if len(line) == 0 { // blank line: dispatch
			if e, derr, ok := dispatch(); ok {
				return e, derr
			}
			ev, hasData, big = sseEvent{}, false, nil
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(string(line), ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if big != nil {
				continue
			}
			if hasData {
				data.WriteByte('\n')
			}
			if data.Len()+len(value) > s.max {
				head := append(data.Bytes(), value...)
				big = &sseTooLarge{max: s.max, head: bytes.Clone(head[:min(len(head), peekHeadBytes)])}
				data = bytes.Buffer{}
				continue
			}
			data.WriteString(value)
			hasData = true
		case "event":
			ev.Name = value
		case "id":
			ev.ID = value
		case "retry":
			ev.Retry = value
		}
	}
}

// readLine reads one line without its terminator (LF, CRLF or CR-less). A
// line longer than the event cap is consumed but not kept: readLine returns
// an *sseTooLarge holding its first bytes.
func (s *sseReader) readLine() ([]byte, error) {
	var line []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		if len(line)+len(frag) > s.max+64 {
			head := append(line, frag[:min(len(frag), max(0, peekHeadBytes-len(line)))]...)
			head = bytes.Clone(head[:min(len(head), peekHeadBytes)])
			for err == bufio.ErrBufferFull {
				_, err = s.r.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				return nil, err
			}
			return nil, &sseTooLarge{max: s.max, line: true, head: head}
		}
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				return bytes.TrimRight(line, "\r\n"), nil
			}
			return nil, err
		}
		return bytes.TrimRight(line, "\r\n"), nil
	}
}

// writeSSE writes one event carrying data and flushes it.
func writeSSE(w http.ResponseWriter, id string, data []byte) error {
	var b bytes.Buffer
	b.Grow(len(data) + 32)
	b.WriteString("event: message\n")
	if id != "" {
		b.WriteString("id: ")
		b.WriteString(id)
		b.WriteByte('\n')
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString("\n\n")
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}
