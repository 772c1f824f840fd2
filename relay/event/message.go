package event

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/heraldhq/herald/relay/cursor"
)

// Message is one notification as stored in a shard stream and announced on its live channel.
type Message struct {
	ID          cursor.ID // stream ID (Durable) or relay-made ID (Live); the event's cursor
	Writer      string    // live messages only: the cluster node that ran the publish script (CLUSTER MYID prefix)
	Key         string    // the publisher's key: picks the shard, becomes the CloudEvents subject
	Type        string    // CloudEvents type
	ContentType string    // CloudEvents datacontenttype of Data
	Attrs       string    // the producer's other CloudEvents attributes as stored (Attrs.String), "" if none
	Data        string    // payload bytes (a string so Redis replies are used without copying)
}

// Stream entry field names written by the publish script (short: they are stored per entry).
const (
	FieldKey         = "k"
	FieldType        = "t"
	FieldContentType = "c"
	FieldAttrs       = "a" // only when the producer set attributes
	FieldData        = "d"
)

// Limits on the header-like fields of a message. Data is bounded by the channel's maxMessageBytes.
const (
	MaxKeyBytes         = 256
	MaxTypeBytes        = 256
	MaxContentTypeBytes = 256
)

// DefaultType is the CloudEvents type of a message published without one.
const DefaultType = "dev.herald.message"

// ErrBadLiveMessage means a live-channel payload was not written by a relay's publish script.
var ErrBadLiveMessage = errors.New("live message is not <id>\\n<writer>\\n<key>\\n<type>\\n<content type>\\n<attributes>\\n<data>")

// AppendLive appends the live-channel payload of m. The publish script builds the same bytes in
// Lua (id .. "\n" .. writer .. "\n" .. key ...); this Go twin exists for tests and documentation.
func AppendLive(b []byte, m Message) []byte {
	b = m.ID.AppendTo(b)
	b = append(b, '\n')
	b = append(b, m.Writer...)
	b = append(b, '\n')
	b = append(b, m.Key...)
	b = append(b, '\n')
	b = append(b, m.Type...)
	b = append(b, '\n')
	b = append(b, m.ContentType...)
	b = append(b, '\n')
	b = append(b, m.Attrs...)
	b = append(b, '\n')
	return append(b, m.Data...)
}

// DecodeLive parses a live-channel payload without copying: the fields of the result are
// substrings of payload. Writer, key, type and content type never contain '\n' (ValidateField
// refuses them at publish) and the attributes are compact JSON, so the first six newlines are
// separators and the data is the rest.
func DecodeLive(payload string) (Message, error) {
	var parts [6]string
	rest := payload
	for i := range parts {
		nl := strings.IndexByte(rest, '\n')
		if nl < 0 {
			return Message{}, ErrBadLiveMessage
		}
		parts[i], rest = rest[:nl], rest[nl+1:]
	}
	id, err := cursor.Parse(parts[0])
	if err != nil {
		return Message{}, ErrBadLiveMessage
	}
	return Message{ID: id, Writer: parts[1], Key: parts[2], Type: parts[3], ContentType: parts[4], Attrs: parts[5], Data: rest}, nil
}

// FromStreamFields builds a Message from an XRANGE entry's fields; unknown fields are ignored
// and missing ones stay empty, so entries written by an older relay still decode.
func FromStreamFields(id cursor.ID, fields map[string]any) Message {
	m := Message{ID: id}
	m.Key, _ = fields[FieldKey].(string)
	m.Type, _ = fields[FieldType].(string)
	m.ContentType, _ = fields[FieldContentType].(string)
	m.Attrs, _ = fields[FieldAttrs].(string)
	m.Data, _ = fields[FieldData].(string)
	return m
}

// ValidateField checks a key, type or content type: 1..max bytes of UTF-8 without control
// characters (so it can never break the live payload or an SSE line).
func ValidateField(what, s string, max int) error {
	switch {
	case s == "":
		return errors.New(what + " is empty")
	case len(s) > max:
		return errors.New(what + " is longer than " + itoa(max) + " bytes")
	case !utf8.ValidString(s):
		return errors.New(what + " is not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return errors.New(what + " contains a control character")
		}
	}
	return nil
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
