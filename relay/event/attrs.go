package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Producer attributes are the CloudEvents attributes a publisher sets beside type, subject and
// datacontenttype: id, source, time, dataschema and extensions (traceparent, tracestate, ...).
// They are stored with the message as one JSON object (stream field "a", a line of the live
// payload) and written back into the CloudEvent every subscriber gets.
const (
	MaxAttrs          = 32      // attributes a message may carry
	MaxAttrValueBytes = 2048    // one value, as JSON
	MaxAttrsBytes     = 8 << 10 // all of them, as stored
	maxAttrNameBytes  = 64      // CloudEvents asks for at most 20; some SDKs allow more
)

// CursorAttr is the extension attribute that carries an event's resumable cursor (the SSE id).
const CursorAttr = "heraldcursor"

// Attrs is the producer's attributes of one message: name -> JSON value (string, number or
// boolean), already checked.
type Attrs map[string]json.RawMessage

// reserved are the names a message's stored attributes never hold: Herald writes them itself
// (from the message's own fields, or the cursor on delivery).
var reserved = map[string]bool{"specversion": true, "type": true, "subject": true, "datacontenttype": true, "data": true, CursorAttr: true}

// setString checks and records one attribute given as a string (a ce- header, a trace header).
func (a Attrs) setString(name, value string) error {
	raw := AppendJSONString(nil, value)
	return a.set(name, raw)
}

// set checks name and a JSON value (string, number or boolean) and records it.
func (a Attrs) set(name string, raw json.RawMessage) error {
	if err := validAttrName(name); err != nil {
		return err
	}
	if name == CursorAttr {
		return errors.New(CursorAttr + " is set by Herald on delivery")
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return fmt.Errorf("attribute %s has no value", name)
	}
	if len(raw) > MaxAttrValueBytes {
		return fmt.Errorf("attribute %s is longer than %d bytes", name, MaxAttrValueBytes)
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("attribute %s: %v", name, err)
		}
		if err := checkAttrString(name, s); err != nil {
			return err
		}
		raw = AppendJSONString(nil, s)
	case '{', '[':
		return fmt.Errorf("attribute %s must be a string, number or boolean", name)
	case 'n': // null: absent (CloudEvents JSON format 2.4)
		return nil
	default:
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("attribute %s: %v", name, err)
		}
		if name == "id" || name == "source" || name == "time" || name == "dataschema" {
			return fmt.Errorf("attribute %s must be a string", name)
		}
	}
	if len(a) >= MaxAttrs {
		if _, ok := a[name]; !ok {
			return fmt.Errorf("a message carries at most %d attributes", MaxAttrs)
		}
	}
	a[name] = raw
	return nil
}

func validAttrName(name string) error {
	if name == "" || len(name) > maxAttrNameBytes {
		return fmt.Errorf("attribute name %q must be 1 to %d characters", clip(name), maxAttrNameBytes)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fmt.Errorf("attribute name %q: CloudEvents attribute names are lower-case letters and digits", clip(name))
		}
	}
	return nil
}

// checkAttrString checks the string attributes CloudEvents gives a meaning to.
func checkAttrString(name, s string) error {
	switch name {
	case "id":
		if s == "" {
			return errors.New("attribute id is empty")
		}
	case "source":
		if s == "" {
			return errors.New("attribute source is empty")
		}
		if _, err := url.Parse(s); err != nil {
			return fmt.Errorf("attribute source %q is not a URI reference", clip(s))
		}
	case "dataschema":
		if u, err := url.Parse(s); err != nil || !u.IsAbs() {
			return fmt.Errorf("attribute dataschema %q is not an absolute URI", clip(s))
		}
	case "time":
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return fmt.Errorf("attribute time %q is not an RFC 3339 timestamp", clip(s))
		}
	}
	return nil
}

// String returns the attributes as stored: a JSON object with sorted names, "" when empty.
func (a Attrs) String() string {
	if len(a) == 0 {
		return ""
	}
	names := make([]string, 0, len(a))
	for n := range a {
		names = append(names, n)
	}
	sort.Strings(names)
	b := []byte{'{'}
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, n)
		b = append(b, ':')
		b = append(b, a[n]...)
	}
	return string(append(b, '}'))
}

// StringValue returns a string attribute's value ("" if absent or not a string).
func (a Attrs) StringValue(name string) string {
	var s string
	if raw, ok := a[name]; ok && len(raw) > 0 && raw[0] == '"' {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// fromHeaders reads the CloudEvents HTTP binary mode attributes (ce-*) and the W3C trace context
// headers. Header values are percent-decoded (CloudEvents HTTP binding 3.1.3.2).
func (a Attrs) fromHeaders(h http.Header) error {
	for name, values := range h {
		lower := strings.ToLower(name)
		attr, ok := strings.CutPrefix(lower, "ce-")
		if !ok {
			continue
		}
		switch attr {
		case "type", "subject":
			continue // read by ParsePublish
		case "specversion":
			if values[0] != "1.0" {
				return fmt.Errorf("Ce-Specversion %q is not supported (only 1.0)", clip(values[0]))
			}
			continue
		case "datacontenttype":
			return errors.New("Ce-Datacontenttype is not used in binary mode: the Content-Type header is the data's media type")
		case "data":
			return errors.New("Ce-Data is not an attribute: in binary mode the body is the data")
		}
		if len(values) > 1 {
			return fmt.Errorf("header %s is given %d times", name, len(values))
		}
		v := values[0]
		if strings.IndexByte(v, '%') >= 0 {
			if d, err := url.PathUnescape(v); err == nil {
				v = d
			}
		}
		if err := a.setString(attr, v); err != nil {
			return fmt.Errorf("header %s: %v", name, err)
		}
	}
	return nil
}

// fromTraceContext adds the W3C trace context of the request (traceparent, tracestate headers)
// as the CloudEvents distributed tracing extension, unless the event carries its own. An invalid
// traceparent is ignored, as the W3C spec asks, and its tracestate with it.
func (a Attrs) fromTraceContext(h http.Header) {
	if _, ok := a["traceparent"]; ok {
		return
	}
	tp := h.Get("Traceparent")
	if !validTraceparent(tp) {
		return
	}
	_ = a.setString("traceparent", tp)
	if ts := strings.Join(h.Values("Tracestate"), ","); ts != "" && len(ts) <= 512 && ValidateField("tracestate", ts, 512) == nil {
		_ = a.setString("tracestate", ts)
	}
}

// validTraceparent checks the W3C traceparent shape: version-traceid-parentid-flags in lower-case
// hex, version ff invalid, trace and parent IDs not all zeros.
func validTraceparent(s string) bool {
	if len(s) < 55 || (len(s) > 55 && s[55] != '-') || (s[:2] == "00" && len(s) != 55) || s[:2] == "ff" {
		return false
	}
	for i, c := range []byte(s[:55]) {
		switch i {
		case 2, 35, 52:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return s[3:35] != strings.Repeat("0", 32) && s[36:52] != strings.Repeat("0", 16)
}

// storedAttrs is a message's attributes as the Encoder uses them: the three it must otherwise
// make up, and the rest as ready JSON members (",name":value...).
type storedAttrs struct {
	id, source, time []byte // JSON strings, nil if the producer gave none
	rest             []byte
}

// parseStored reads the attributes a relay stored. What a relay could not have written (a bad
// name, a value that is not a string, number or boolean) is dropped: it never breaks the event.
func parseStored(s string) storedAttrs {
	var out storedAttrs
	if s == "" {
		return out
	}
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(s), &m) != nil {
		return out
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		raw := m[n]
		if validAttrName(n) != nil || len(raw) == 0 || raw[0] == '{' || raw[0] == '[' || raw[0] == 'n' {
			continue
		}
		if reserved[n] {
			continue
		}
		if bytes.ContainsAny(raw, "\r\n") {
			var compact bytes.Buffer
			if json.Compact(&compact, raw) != nil {
				continue
			}
			raw = compact.Bytes()
		}
		if (n == "id" || n == "source" || n == "time") && raw[0] != '"' {
			continue
		}
		switch n {
		case "id":
			out.id = raw
		case "source":
			out.source = raw
		case "time":
			out.time = raw
		default:
			out.rest = append(out.rest, ',')
			out.rest = AppendJSONString(out.rest, n)
			out.rest = append(out.rest, ':')
			out.rest = append(out.rest, raw...)
		}
	}
	return out
}
