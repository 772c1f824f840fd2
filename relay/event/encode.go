package event

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/relay/cursor"
)

// Kind says what an Encoded frame is, so writers can treat heartbeats and gaps specially.
type Kind uint8

// Kinds of frames a subscriber receives.
const (
	KindMessage   Kind = iota // a published message: SSE "event: message"
	KindGap                   // an explicit hole in the sequence: SSE "event: gap"
	KindHeartbeat             // an SSE comment that keeps proxies from closing an idle stream
)

// Encoded is one event, encoded once and shared read-only by every subscriber.
type Encoded struct {
	ID    cursor.ID // the event's cursor on its shard (for a gap: where the subscriber continues from)
	Key   string    // message key; empty for gaps and heartbeats (they go to everyone)
	Kind  Kind
	Shard int    // the shard the event came from (a sidecar merging shards needs it; 0 on a shard relay)
	SSE   []byte // the complete SSE frame, ending in an empty line
	JSON  []byte // the CloudEvent inside SSE (nil for heartbeats): one WebSocket text frame
}

// Size is what the event costs in a subscriber's queue.
func (e *Encoded) Size() int { return len(e.SSE) }

// Heartbeat is the shared SSE comment sent to idle streams.
var Heartbeat = &Encoded{Kind: KindHeartbeat, SSE: []byte(": heartbeat\n\n")}

// Gap reasons, the "reason" field of a gap event's data.
const (
	GapTrimmed     = "trimmed"      // the cursor is older than the stream's retention
	GapRollback    = "rollback"     // Redis lost acknowledged entries in a failover (IDs went back)
	GapCursorAhead = "cursor-ahead" // the cursor is newer than anything the stream holds now
	GapNoReplay    = "no-replay"    // a Live channel keeps no history to resume from
)

// GapType is the CloudEvents type of gap events.
const GapType = "dev.herald.gap"

// Gap describes a hole the subscriber must know about.
type Gap struct {
	Reason  string    // one of the Gap* constants
	From    cursor.ID // the subscriber's cursor (or the last ID delivered before a rollback)
	Resume  cursor.ID // the cursor delivery continues after; the gap event's id
	Message string    // a sentence for people
}

// Encoder encodes messages of one channel.
type Encoder struct {
	source []byte // JSON-quoted CloudEvents source
	now    func() time.Time
}

// NewEncoder returns the encoder of channel name in namespace ns.
func NewEncoder(ns, name string) *Encoder {
	return &Encoder{
		source: appendJSONString(nil, "/namespaces/"+ns+"/notificationchannels/"+name),
		now:    time.Now,
	}
}

const (
	ssePrefix     = "id: "
	sseMessage    = "\nevent: message\ndata: "
	sseGap        = "\nevent: gap\ndata: "
	sseTerminator = "\n\n"
	timeLayout    = "2006-01-02T15:04:05.000Z07:00"
)

// Encode builds the SSE frame and CloudEvent of m in one allocation. The event time is the
// millisecond part of the stream ID: the time the master accepted the message.
func (e *Encoder) Encode(m Message) *Encoded {
	n := len(ssePrefix) + 2*cursor.MaxLen + len(sseMessage) + len(sseTerminator) + 160 +
		len(e.source) + 2*len(m.Key) + 2*len(m.Type) + 2*len(m.ContentType) + dataBound(len(m.Data))
	b := make([]byte, 0, n)
	b = append(b, ssePrefix...)
	b = m.ID.AppendTo(b)
	b = append(b, sseMessage...)
	start := len(b)
	b = append(b, `{"specversion":"1.0","id":"`...)
	b = m.ID.AppendTo(b)
	b = append(b, `","source":`...)
	b = append(b, e.source...)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, m.Type)
	b = append(b, `,"subject":`...)
	b = appendJSONString(b, m.Key)
	b = append(b, `,"time":"`...)
	b = time.UnixMilli(int64(m.ID.Ms)).UTC().AppendFormat(b, timeLayout)
	b = append(b, '"')
	if m.ContentType != "" {
		b = append(b, `,"datacontenttype":`...)
		b = appendJSONString(b, m.ContentType)
	}
	b = appendData(b, m.ContentType, m.Data)
	b = append(b, '}')
	end := len(b)
	b = append(b, sseTerminator...)
	return &Encoded{ID: m.ID, Key: m.Key, Kind: KindMessage, SSE: b, JSON: b[start:end:end]}
}

// EncodeGap builds a gap event. Its id is g.Resume, so a client that reconnects with it does
// not get the same gap again unless more was lost.
func (e *Encoder) EncodeGap(g Gap) *Encoded {
	b := make([]byte, 0, 256+len(e.source)+2*len(g.Message))
	b = append(b, ssePrefix...)
	b = g.Resume.AppendTo(b)
	b = append(b, sseGap...)
	start := len(b)
	b = append(b, `{"specversion":"1.0","id":"`...)
	b = g.Resume.AppendTo(b)
	b = append(b, `","source":`...)
	b = append(b, e.source...)
	b = append(b, `,"type":"`+GapType+`","time":"`...)
	b = e.now().UTC().AppendFormat(b, timeLayout)
	b = append(b, `","datacontenttype":"application/json","data":{"reason":`...)
	b = appendJSONString(b, g.Reason)
	b = append(b, `,"from":"`...)
	b = g.From.AppendTo(b)
	b = append(b, `","resume":"`...)
	b = g.Resume.AppendTo(b)
	b = append(b, `","message":`...)
	b = appendJSONString(b, g.Message)
	b = append(b, "}}"...)
	end := len(b)
	b = append(b, sseTerminator...)
	return &Encoded{ID: g.Resume, Kind: KindGap, SSE: b, JSON: b[start:end:end]}
}

// dataBound estimates the encoded size of n data bytes (base64 is the common worst case; text
// full of control characters grows past it and append then reallocates once).
func dataBound(n int) int { return n*4/3 + 32 }

// appendData writes the CloudEvents data member: JSON data inline, text as a JSON string,
// anything else as data_base64 (CloudEvents JSON format, section 3.1).
func appendData(b []byte, contentType, data string) []byte {
	if IsJSONMediaType(contentType) && json.Valid([]byte(data)) {
		b = append(b, `,"data":`...)
		if strings.ContainsAny(data, "\r\n\t ") {
			var buf bytes.Buffer
			_ = json.Compact(&buf, []byte(data)) // valid JSON compacts without error
			return append(b, buf.Bytes()...)
		}
		return append(b, data...)
	}
	if utf8.ValidString(data) {
		b = append(b, `,"data":`...)
		return appendJSONString(b, data)
	}
	b = append(b, `,"data_base64":"`...)
	b = base64.StdEncoding.AppendEncode(b, []byte(data))
	return append(b, '"')
}

// IsJSONMediaType reports whether a content type carries JSON: application/json, text/json or
// any "+json" structured syntax suffix.
func IsJSONMediaType(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD and U+2028/U+2029
// are escaped, as encoding/json does; the output never contains a raw CR or LF.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
