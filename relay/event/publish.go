package event

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"unicode/utf8"
)

// ErrUnsupportedMediaType marks publish input whose Content-Type the relay cannot take (HTTP 415).
var ErrUnsupportedMediaType = errors.New("unsupported media type")

// StructuredMediaType is the Content-Type of a CloudEvent sent in structured mode.
const StructuredMediaType = "application/cloudevents+json"

// BatchMediaType is the Content-Type of CloudEvents sent in batched mode: a JSON array of events
// in structured mode.
const BatchMediaType = "application/cloudevents-batch+json"

// MaxBatchEvents bounds the events of one batched publish.
const MaxBatchEvents = 1000

// Publish is what a publisher asked to send, before Redis gives it an ID.
type Publish struct {
	Subject     string // CloudEvents subject: Ce-Subject, or subject in a structured body ("" if absent)
	Type        string // CloudEvents type (DefaultType if the publisher named none)
	ContentType string // datacontenttype of Data ("" if unknown)
	Data        []byte // payload; JSON payloads are compacted to one line
	Attrs       Attrs  // the producer's other attributes: id, source, time, dataschema, extensions
}

// ParsePublish reads a publish request in either CloudEvents HTTP mode:
//
//   - binary: the body is the data, the Content-Type header its datacontenttype, and the ce-*
//     headers its attributes (Ce-Type, optional, its type; Ce-Subject its subject; Ce-Id,
//     Ce-Source, Ce-Time, Ce-Dataschema and every extension are kept);
//   - structured: Content-Type is application/cloudevents+json and the body is a CloudEvent; its
//     type, datacontenttype, subject, data or data_base64 and every other attribute are used.
//
// In both modes the W3C traceparent and tracestate headers become the CloudEvents distributed
// tracing extension when the event carries none. Attributes the producer leaves out (id,
// source, time) are the relay's to assign. A JSON content type requires a valid JSON body.
// Errors wrap ErrUnsupportedMediaType (415) or are plain bad-request errors (400); each says
// what is wrong.
func ParsePublish(h http.Header, body []byte) (Publish, error) {
	contentType := h.Get("Content-Type")
	if contentType == "" {
		return Publish{}, fmt.Errorf("%w: a Content-Type header is required (the data's media type, or %s)", ErrUnsupportedMediaType, StructuredMediaType)
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || len(contentType) > MaxContentTypeBytes || ValidateField("Content-Type", contentType, MaxContentTypeBytes) != nil {
		return Publish{}, fmt.Errorf("%w: Content-Type %q is not a valid media type", ErrUnsupportedMediaType, clip(contentType))
	}
	var p Publish
	switch mt {
	case StructuredMediaType:
		p, err = parseStructured(body)
	case BatchMediaType:
		err = fmt.Errorf("%w: a batch of CloudEvents (%s) is not one event", ErrUnsupportedMediaType, BatchMediaType)
	default:
		p, err = parseBinary(h, contentType, mt, body)
	}
	if err != nil {
		return Publish{}, err
	}
	return p, p.finish(h)
}

// ParseBatch reads a publish in CloudEvents batched mode: the body is a JSON array of 1 to
// MaxBatchEvents events in structured mode (SplitBatch), each read by ParseBatchEvent. An error
// names the event by its index in the array.
func ParseBatch(h http.Header, body []byte) ([]Publish, error) {
	raws, err := SplitBatch(body)
	if err != nil {
		return nil, err
	}
	out := make([]Publish, len(raws))
	for i, raw := range raws {
		if out[i], err = ParseBatchEvent(h, raw); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
	}
	return out, nil
}

// SplitBatch returns the events of a batch as they were sent: the 1 to MaxBatchEvents values of
// a JSON array. It finds where each value ends, in one pass, and leaves checking each value to
// ParseBatchEvent: encoding/json would read every byte twice more before that parse reads it
// again, which made splitting a third of a batch's cost on the relay.
func SplitBatch(body []byte) ([]json.RawMessage, error) {
	notArray := errors.New("body is not a batch of CloudEvents: a JSON array of events in structured mode")
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '[' {
		return nil, notArray
	}
	var out []json.RawMessage
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		return nil, errors.New("a batch holds at least one event")
	}
	for {
		if len(out) == MaxBatchEvents {
			return nil, fmt.Errorf("a batch holds at most %d events", MaxBatchEvents)
		}
		end, err := valueEnd(body, i)
		if err != nil {
			return nil, fmt.Errorf("event %d: %v", len(out), err)
		}
		out = append(out, body[i:end:end])
		i = skipSpace(body, end)
		if i == len(body) {
			return nil, errors.New("body is not a JSON array of CloudEvents: it ends before its closing ]")
		}
		if body[i] == ']' {
			break
		}
		if body[i] != ',' {
			return nil, fmt.Errorf("body is not a JSON array of CloudEvents: %q after event %d", body[i], len(out)-1)
		}
		i = skipSpace(body, i+1)
	}
	if skipSpace(body, i+1) != len(body) {
		return nil, errors.New("body holds more than one JSON value")
	}
	return out, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns where the JSON value starting at b[i] ends: after its closing bracket or
// quote, or before the delimiter that ends a number or literal. Brackets inside strings are text.
func valueEnd(b []byte, i int) (int, error) {
	depth, inString := 0, false
	for j := i; j < len(b); j++ {
		c := b[j]
		switch {
		case inString:
			if c == '\\' {
				j++
			} else if c == '"' {
				inString = false
				if depth == 0 {
					return j + 1, nil
				}
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				if j == i {
					return 0, errors.New("no value")
				}
				return j, nil
			}
			if depth--; depth == 0 {
				return j + 1, nil
			}
		case depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			if j == i {
				return 0, errors.New("no value")
			}
			return j, nil
		}
	}
	return 0, errors.New("the body ends inside it")
}

// ParseBatchEvent reads one event of a batch as ParsePublish reads a structured one; the trace
// context of the request goes to the event if it carries none.
func ParseBatchEvent(h http.Header, raw []byte) (Publish, error) {
	p, err := parseStructured(raw)
	if err != nil {
		return Publish{}, err
	}
	return p, p.finish(h)
}

// AppendStructured appends p as a CloudEvent in structured mode, with key as its subject: what
// ParseBatchEvent reads back as p. JSON data goes as it is (it was checked and compacted when p
// was read), other data as data_base64, which carries any bytes exactly.
func AppendStructured(b []byte, p Publish, key string) []byte {
	b = append(b, `{"specversion":"1.0","type":`...)
	b = AppendJSONString(b, p.Type)
	b = append(b, `,"subject":`...)
	b = AppendJSONString(b, key)
	if p.ContentType != "" {
		b = append(b, `,"datacontenttype":`...)
		b = AppendJSONString(b, p.ContentType)
		if IsJSONMediaType(p.ContentType) && len(p.Data) > 0 && string(p.Data) != "null" {
			b = append(b, `,"data":`...)
			b = append(b, p.Data...)
		} else {
			b = append(b, `,"data_base64":"`...)
			b = base64.StdEncoding.AppendEncode(b, p.Data)
			b = append(b, '"')
		}
	}
	for name, raw := range p.Attrs {
		b = append(b, ',')
		b = AppendJSONString(b, name)
		b = append(b, ':')
		b = append(b, raw...)
	}
	return append(b, '}')
}

// finish adds the request's trace context and checks the size of what is stored.
func (p *Publish) finish(h http.Header) error {
	p.Attrs.fromTraceContext(h)
	if len(p.Attrs) == 0 {
		p.Attrs = nil
	} else if n := len(p.Attrs.String()); n > MaxAttrsBytes {
		return fmt.Errorf("the attributes take %d bytes; at most %d are stored with a message", n, MaxAttrsBytes)
	}
	return nil
}

func parseBinary(h http.Header, contentType, mt string, body []byte) (Publish, error) {
	p := Publish{Type: h.Get("Ce-Type"), Subject: h.Get("Ce-Subject"), ContentType: contentType, Data: body, Attrs: Attrs{}}
	if p.Type == "" {
		p.Type = DefaultType
	} else if err := ValidateField("Ce-Type header", p.Type, MaxTypeBytes); err != nil {
		return Publish{}, err
	}
	if p.Subject != "" {
		if err := ValidateField("Ce-Subject header", p.Subject, MaxKeyBytes); err != nil {
			return Publish{}, err
		}
	}
	if err := p.Attrs.fromHeaders(h); err != nil {
		return Publish{}, err
	}
	if IsJSONMediaType(contentType) {
		var err error
		if p.Data, err = compactJSON(body); err != nil {
			return Publish{}, fmt.Errorf("body is not valid JSON but Content-Type is %s: %v", mt, err)
		}
	}
	return p, nil
}

func parseStructured(body []byte) (Publish, error) {
	var ce map[string]json.RawMessage
	if err := json.Unmarshal(body, &ce); err != nil {
		if moreThanOneValue(body) {
			return Publish{}, errors.New("body holds more than one JSON value")
		}
		return Publish{}, fmt.Errorf("body is not a CloudEvent in JSON: %v", err)
	}
	if ce == nil {
		return Publish{}, errors.New("body is not a CloudEvent in JSON: null")
	}
	str := func(name string) (*string, error) {
		raw, ok := ce[name]
		if !ok || bytes.Equal(raw, []byte("null")) {
			return nil, nil
		}
		s, ok := jsonString(raw)
		if !ok {
			return nil, fmt.Errorf("%s must be a string", name)
		}
		return &s, nil
	}
	p := Publish{Type: DefaultType, Attrs: Attrs{}}
	if v, err := str("specversion"); err != nil {
		return Publish{}, err
	} else if v != nil && *v != "1.0" {
		return Publish{}, fmt.Errorf("specversion %q is not supported (only 1.0)", clip(*v))
	}
	if v, err := str("type"); err != nil {
		return Publish{}, err
	} else if v != nil {
		if err := ValidateField("type", *v, MaxTypeBytes); err != nil {
			return Publish{}, err
		}
		p.Type = *v
	}
	if v, err := str("subject"); err != nil {
		return Publish{}, err
	} else if v != nil {
		if err := ValidateField("subject", *v, MaxKeyBytes); err != nil {
			return Publish{}, err
		}
		p.Subject = *v
	}
	if v, err := str("datacontenttype"); err != nil {
		return Publish{}, err
	} else if v != nil {
		if _, _, err := mime.ParseMediaType(*v); err != nil || ValidateField("datacontenttype", *v, MaxContentTypeBytes) != nil {
			return Publish{}, fmt.Errorf("datacontenttype %q is not a valid media type", clip(*v))
		}
		p.ContentType = *v
	}
	dataB64, err := str("data_base64")
	if err != nil {
		return Publish{}, err
	}
	data := ce["data"]
	for name, raw := range ce {
		switch name {
		case "specversion", "type", "subject", "datacontenttype", "data", "data_base64":
			continue
		}
		if err := p.Attrs.set(name, raw); err != nil {
			return Publish{}, err
		}
	}
	hasData := len(data) > 0 && !bytes.Equal(data, []byte("null"))
	switch {
	case hasData && dataB64 != nil:
		return Publish{}, errors.New("a CloudEvent carries data or data_base64, not both")
	case dataB64 != nil:
		d, err := base64.StdEncoding.DecodeString(*dataB64)
		if err != nil {
			return Publish{}, fmt.Errorf("data_base64 is not base64: %v", err)
		}
		p.Data = d
		if p.ContentType == "" {
			p.ContentType = "application/octet-stream"
		}
	case hasData:
		// CloudEvents JSON format 3.1: without datacontenttype, data is JSON.
		if p.ContentType == "" {
			p.ContentType = "application/json"
		}
		if IsJSONMediaType(p.ContentType) {
			p.Data = data
			if !isCompact(data) {
				d, err := compactJSON(data)
				if err != nil {
					return Publish{}, err
				}
				p.Data = d
			}
		} else {
			var s string
			if err := json.Unmarshal(data, &s); err != nil {
				return Publish{}, fmt.Errorf("data must be a JSON string when datacontenttype %q is not JSON", clip(p.ContentType))
			}
			p.Data = []byte(s)
		}
	}
	return p, nil
}

// moreThanOneValue reports whether b starts with a JSON value that something other than space
// follows: the likely mistake behind a body json.Unmarshal refuses.
func moreThanOneValue(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	return dec.Decode(&v) == nil && dec.More()
}

// jsonString reads a JSON string value of a document already checked to be valid JSON: at once
// when it holds no escapes (and is valid UTF-8, which encoding/json would otherwise mend).
func jsonString(raw []byte) (string, bool) {
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// isCompact reports whether valid JSON has no whitespace outside its strings: what json.Compact
// would return unchanged. One pass, where Compact's scanner costs several times as much.
func isCompact(b []byte) bool {
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return true
}

func compactJSON(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	if buf.Len() == 0 {
		return nil, errors.New("empty JSON")
	}
	return buf.Bytes(), nil
}

// clip shortens untrusted text quoted back in an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
