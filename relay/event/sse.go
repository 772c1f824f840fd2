package event

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"github.com/heraldhq/herald/relay/cursor"
)

// Frame is one SSE frame as read from a relay: an event (ID, Event, Data) or a comment.
type Frame struct {
	ID      string // the id: field (the event's cursor)
	Event   string // the event: field ("message", "gap")
	Data    []byte // the data: field; a relay sends one line
	Comment string // text of a comment line (": heartbeat", ": closed: ...") without the colon
}

// ErrFrameTooLong is returned by SSEReader.Next for a line longer than its limit.
var ErrFrameTooLong = errors.New("SSE line longer than the reader's limit")

// SSEReader reads the SSE frames a relay writes (see Encoder.Encode): `id:`, `event:` and one
// `data:` line, or one comment line, each frame ended by an empty line. It is the sidecar's
// parser of what shard relays send, so it bounds every line and never trusts the peer.
type SSEReader struct {
	rd  *bufio.Reader
	max int
}

// NewSSEReader reads frames from r; no line may be longer than maxLine bytes.
func NewSSEReader(r io.Reader, maxLine int) *SSEReader {
	return &SSEReader{rd: bufio.NewReaderSize(r, 64<<10), max: maxLine}
}

// Next returns the next frame. Data is a fresh slice the caller may keep. At the end of the
// stream it returns io.EOF when the stream ended on a frame boundary, and
// io.ErrUnexpectedEOF when it broke off inside a frame.
func (s *SSEReader) Next() (Frame, error) {
	var f Frame
	empty := true
	for {
		line, err := s.line()
		if err != nil {
			if err == io.EOF && !empty {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
		if len(line) == 0 {
			if empty {
				continue // stray blank line
			}
			return f, nil
		}
		empty = false
		if line[0] == ':' {
			f.Comment = string(bytes.TrimPrefix(line[1:], []byte(" ")))
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "id":
			f.ID = string(value)
		case "event":
			f.Event = string(value)
		case "data":
			if f.Data != nil {
				f.Data = append(f.Data, '\n')
			}
			f.Data = append(f.Data, value...)
		}
	}
}

// line returns one line without its "\n" (and "\r"); the slice is valid until the next call.
func (s *SSEReader) line() ([]byte, error) {
	line, err := s.rd.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			if len(long) > s.max {
				return nil, ErrFrameTooLong
			}
			line, err = s.rd.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(line) > s.max+1 {
		return nil, ErrFrameTooLong
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// ErrNotRelayFrame means a frame is not a message or gap event as a relay encodes it.
var ErrNotRelayFrame = errors.New("SSE frame is not a relay's message or gap event")

// FromFrame rebuilds the Encoded of a message or gap frame that a relay sent, byte for byte
// (its SSE is what the relay wrote), so a sidecar can hand it on unchanged. Key is taken from
// the CloudEvent's subject.
func FromFrame(f Frame) (*Encoded, error) {
	kind, head := KindMessage, sseMessage
	switch f.Event {
	case "message":
	case "gap":
		kind, head = KindGap, sseGap
	default:
		return nil, ErrNotRelayFrame
	}
	id, err := cursor.Parse(f.ID)
	if err != nil || !hasCursor(f.Data, f.ID) || bytes.ContainsAny(f.Data, "\r\n") {
		return nil, ErrNotRelayFrame
	}
	var ce struct {
		Subject string `json:"subject"`
	}
	if kind == KindMessage {
		if err := json.Unmarshal(f.Data, &ce); err != nil {
			return nil, ErrNotRelayFrame
		}
	}
	b := make([]byte, 0, len(ssePrefix)+len(f.ID)+len(head)+len(f.Data)+len(sseTerminator))
	b = append(b, ssePrefix...)
	b = append(b, f.ID...)
	b = append(b, head...)
	start := len(b)
	b = append(b, f.Data...)
	end := len(b)
	b = append(b, sseTerminator...)
	return &Encoded{ID: id, Key: ce.Subject, Kind: kind, SSE: b, JSON: b[start:end:end]}, nil
}

// hasCursor reports whether a CloudEvent the Encoder wrote carries cursor as its heraldcursor
// (without building the expected prefix: this runs for every frame a sidecar reads).
func hasCursor(ce []byte, cursor string) bool {
	rest, ok := bytes.CutPrefix(ce, []byte(jsonCursorPrefix))
	return ok && len(rest) > len(cursor) && string(rest[:len(cursor)]) == cursor && rest[len(cursor)] == '"'
}

// WithID returns a copy of a message or gap event whose cursor (SSE id and heraldcursor) is id
// (a composite cursor, for a sidecar's merged stream); everything else, the CloudEvents id
// included, is unchanged. It returns nil for other frames (heartbeats) or bytes the Encoder did
// not write.
func WithID(e *Encoded, id []byte) *Encoded {
	head := sseMessage
	switch e.Kind {
	case KindMessage:
	case KindGap:
		head = sseGap
	default:
		return nil
	}
	if !bytes.HasPrefix(e.JSON, []byte(jsonCursorPrefix)) {
		return nil
	}
	rest := e.JSON[len(jsonCursorPrefix):]
	q := bytes.IndexByte(rest, '"')
	if q < 0 {
		return nil
	}
	rest = rest[q:]
	b := make([]byte, 0, len(ssePrefix)+len(id)+len(head)+len(jsonCursorPrefix)+len(id)+len(rest)+len(sseTerminator))
	b = append(b, ssePrefix...)
	b = append(b, id...)
	b = append(b, head...)
	start := len(b)
	b = append(b, jsonCursorPrefix...)
	b = append(b, id...)
	b = append(b, rest...)
	end := len(b)
	b = append(b, sseTerminator...)
	return &Encoded{ID: e.ID, Key: e.Key, Kind: e.Kind, Shard: e.Shard, SSE: b, JSON: b[start:end:end]}
}
