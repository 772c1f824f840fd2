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
	KindNotice                // bytes for one subscriber, in SSE already framed for its transport (an interest comment, a WebSocket pong); no event
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

// Encoder encodes the events of one shard of a channel.
type Encoder struct {
	source []byte // JSON-quoted CloudEvents source
	shard  []byte // "<shard>:", the prefix of the ids the relay assigns
	now    func() time.Time
}

// NewEncoder returns the encoder of shard of channel name in namespace ns.
func NewEncoder(ns, name string, shard int) *Encoder {
	return &Encoder{
		source: AppendJSONString(nil, "/namespaces/"+ns+"/notificationchannels/"+name),
		shard:  []byte(itoa(shard) + ":"),
		now:    time.Now,
	}
}

// ForShard returns an encoder of the same channel for another shard.
func (e *Encoder) ForShard(shard int) *Encoder {
	c := *e
	c.shard = []byte(itoa(shard) + ":")
	return &c
}

const (
	ssePrefix     = "id: "
	sseMessage    = "\nevent: message\ndata: "
	sseGap        = "\nevent: gap\ndata: "
	sseTerminator = "\n\n"
	timeLayout    = "2006-01-02T15:04:05.000Z07:00"
	// jsonCursorPrefix starts every CloudEvent the Encoder writes; the cursor follows it, at a
	// fixed place so that a sidecar can rewrite it without parsing the event.
	jsonCursorPrefix = `{"specversion":"1.0","` + CursorAttr + `":"`
)

// Encode builds the SSE frame and CloudEvent of m in one allocation.
//
// The CloudEvent is the producer's where it set id, source or time; otherwise id is
// "<shard>:<stream ID>" (stream IDs are unique per shard only, and CloudEvents asks source + id to
// be unique), source is the channel and time the millisecond part of the stream ID: when the
// master accepted the message. The id is the same on every stream that carries the event, so
// consumers can deduplicate by it; the cursor a subscriber resumes from is the SSE id and the
// heraldcursor extension, which a sidecar's merged stream rewrites (WithID).
func (e *Encoder) Encode(m Message) *Encoded {
	a := parseStored(m.Attrs)
	n := len(ssePrefix) + 3*cursor.MaxLen + len(sseMessage) + len(sseTerminator) + 190 + len(e.shard) +
		len(e.source) + 2*len(m.Key) + 2*len(m.Type) + 2*len(m.ContentType) + len(m.Attrs) + dataBound(len(m.Data))
	b := make([]byte, 0, n)
	b = append(b, ssePrefix...)
	b = m.ID.AppendTo(b)
	b = append(b, sseMessage...)
	start := len(b)
	b = append(b, jsonCursorPrefix...)
	b = m.ID.AppendTo(b)
	b = append(b, `","id":`...)
	if a.id != nil {
		b = append(b, a.id...)
	} else {
		b = append(b, '"')
		b = append(b, e.shard...)
		b = m.ID.AppendTo(b)
		b = append(b, '"')
	}
	b = append(b, `,"source":`...)
	if a.source != nil {
		b = append(b, a.source...)
	} else {
		b = append(b, e.source...)
	}
	b = append(b, `,"type":`...)
	b = AppendJSONString(b, m.Type)
	b = append(b, `,"subject":`...)
	b = AppendJSONString(b, m.Key)
	b = append(b, `,"time":`...)
	if a.time != nil {
		b = append(b, a.time...)
	} else {
		b = append(b, '"')
		b = time.UnixMilli(int64(m.ID.Ms)).UTC().AppendFormat(b, timeLayout)
		b = append(b, '"')
	}
	if m.ContentType != "" {
		b = append(b, `,"datacontenttype":`...)
		b = AppendJSONString(b, m.ContentType)
	}
	b = append(b, a.rest...)
	b = appendData(b, m.ContentType, m.Data)
	b = append(b, '}')
	end := len(b)
	b = append(b, sseTerminator...)
	return &Encoded{ID: m.ID, Key: m.Key, Kind: KindMessage, SSE: b, JSON: b[start:end:end]}
}

// EncodeGap builds a gap event. Its cursor is g.Resume, so a client that reconnects with it
// does not get the same gap again unless more was lost; its id is "<shard>:gap:<resume>".
func (e *Encoder) EncodeGap(g Gap) *Encoded {
	b := make([]byte, 0, 320+len(e.shard)+len(e.source)+2*len(g.Message))
	b = append(b, ssePrefix...)
	b = g.Resume.AppendTo(b)
	b = append(b, sseGap...)
	start := len(b)
	b = append(b, jsonCursorPrefix...)
	b = g.Resume.AppendTo(b)
	b = append(b, `","id":"`...)
	b = append(b, e.shard...)
	b = append(b, "gap:"...)
	b = g.Resume.AppendTo(b)
	b = append(b, `","source":`...)
	b = append(b, e.source...)
	b = append(b, `,"type":"`+GapType+`","time":"`...)
	b = e.now().UTC().AppendFormat(b, timeLayout)
	b = append(b, `","datacontenttype":"application/json","data":{"reason":`...)
	b = AppendJSONString(b, g.Reason)
	b = append(b, `,"from":"`...)
	b = g.From.AppendTo(b)
	b = append(b, `","resume":"`...)
	b = g.Resume.AppendTo(b)
	b = append(b, `","message":`...)
	b = AppendJSONString(b, g.Message)
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
		return AppendJSONString(b, data)
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

// AppendJSONString appends s as a JSON string (for answers built without reflection). Invalid
// UTF-8 becomes U+FFFD and U+2028/U+2029 are escaped, as encoding/json does; the output never
// contains a raw CR or LF.
func AppendJSONString(b []byte, s string) []byte {
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
