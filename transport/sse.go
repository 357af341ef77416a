package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	ID   string
	Name string
	Data []byte
}

// sseReader reads server-sent events from a stream, bounding each event.
type sseReader struct {
	r   *bufio.Reader
	max int
}

func newSSEReader(r io.Reader, maxEvent int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 64<<10), max: maxEvent}
}

// Next returns the next event with data. Events without data (comments,
// keepalives, bare ids) are skipped. It returns io.EOF at the end of the
// stream and an error naming the limit for an oversized event.
func (s *sseReader) Next() (sseEvent, error) {
	var ev sseEvent
	var data bytes.Buffer
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			if err == io.EOF && hasData {
				ev.Data = data.Bytes()
				return ev, nil
			}
			return ev, err
		}
		if len(line) == 0 { // blank line: dispatch
			if hasData {
				ev.Data = data.Bytes()
				return ev, nil
			}
			ev = sseEvent{}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(string(line), ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			if data.Len()+len(value) > s.max {
				return ev, fmt.Errorf("server-sent event larger than %d bytes", s.max)
			}
			data.WriteString(value)
			hasData = true
		case "event":
			ev.Name = value
		case "id":
			ev.ID = value
		}
	}
}

// readLine reads one line without its terminator (LF, CRLF or CR-less),
// refusing lines longer than the event cap.
func (s *sseReader) readLine() ([]byte, error) {
	var line []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > s.max+64 {
			return nil, fmt.Errorf("server-sent event line longer than %d bytes", s.max)
		}
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
