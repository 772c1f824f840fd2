package event

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldhq/herald/relay/cursor"
)

// cloudEvent is the decoded form of an Encoded.JSON, for assertions.
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	Cursor          string          `json:"heraldcursor"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	DataBase64      string          `json:"data_base64"`
}

func TestEncode(t *testing.T) {
	enc := NewEncoder("team-a", "orders", 2)
	base := Message{ID: cursor.ID{Ms: 1712345678901, Seq: 3}, Key: "order-42", Type: "com.example.created"}
	tests := map[string]struct {
		ct, data   string
		wantData   string // JSON of the data member, or "" when data_base64 is expected
		wantBase64 string
	}{
		"json inline":          {ct: "application/json", data: `{"a":1,"b":[true,null]}`, wantData: `{"a":1,"b":[true,null]}`},
		"json with spaces":     {ct: "application/json; charset=utf-8", data: "{\n \"a\" : 1\n}", wantData: `{"a":1}`},
		"+json suffix":         {ct: "application/vnd.x+json", data: `[1,2]`, wantData: `[1,2]`},
		"invalid json as text": {ct: "application/json", data: `{"a":`, wantData: `"{\"a\":"`},
		"text":                 {ct: "text/plain", data: "line1\nline2 \"q\" \u2028", wantData: `"line1\nline2 \"q\" \u2028"`},
		"no content type":      {ct: "", data: "hello", wantData: `"hello"`},
		"binary":               {ct: "application/octet-stream", data: "\xff\x00\x01", wantBase64: base64.StdEncoding.EncodeToString([]byte("\xff\x00\x01"))},
		"empty data":           {ct: "text/plain", data: "", wantData: `""`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := base
			m.ContentType, m.Data = tc.ct, tc.data
			e := enc.Encode(m)
			wantHead := "id: 1712345678901-3\nevent: message\ndata: "
			if !bytes.HasPrefix(e.SSE, []byte(wantHead)) || !bytes.HasSuffix(e.SSE, []byte("}\n\n")) {
				t.Fatalf("SSE frame %q is not framed as id/event/data", e.SSE)
			}
			if bytes.Count(e.SSE, []byte("\n")) != 4 {
				t.Fatalf("SSE frame %q must have exactly 3 lines and a blank line", e.SSE)
			}
			if !bytes.Equal(e.SSE[len(wantHead):len(e.SSE)-2], e.JSON) {
				t.Fatal("JSON is not the data line of the SSE frame")
			}
			var ce cloudEvent
			if err := json.Unmarshal(e.JSON, &ce); err != nil {
				t.Fatalf("event is not JSON: %v\n%s", err, e.JSON)
			}
			if ce.SpecVersion != "1.0" || ce.Cursor != "1712345678901-3" || ce.ID != "2:1712345678901-3" || ce.Source != "/namespaces/team-a/notificationchannels/orders" ||
				ce.Subject != "order-42" || ce.Type != "com.example.created" || ce.Time != "2024-04-05T19:34:38.901Z" || ce.DataContentType != tc.ct {
				t.Fatalf("wrong attributes: %+v", ce)
			}
			if string(ce.Data) != tc.wantData || ce.DataBase64 != tc.wantBase64 {
				t.Fatalf("data = %s / %q, want %s / %q", ce.Data, ce.DataBase64, tc.wantData, tc.wantBase64)
			}
		})
	}
}

func TestEncodeKeepsTheProducersAttributes(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Type", "text/plain")
	h.Set("Ce-Id", "evt-1")
	h.Set("Ce-Source", "/apps/shop")
	h.Set("Ce-Time", "2026-01-02T03:04:05.123456Z")
	h.Set("Ce-Dataschema", "https://example.com/s.json")
	h.Set("Ce-Partitionkey", "tenant%2F7") // percent-encoded, as the HTTP binding asks
	h.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("Tracestate", "vendor=x")
	p, err := ParsePublish(h, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	m := Message{ID: cursor.ID{Ms: 1712345678901, Seq: 3}, Key: "k", Type: DefaultType, ContentType: p.ContentType, Attrs: p.Attrs.String(), Data: string(p.Data)}
	e := NewEncoder("ns", "c", 1).Encode(m)
	var got map[string]any
	if err := json.Unmarshal(e.JSON, &got); err != nil {
		t.Fatalf("%v: %s", err, e.JSON)
	}
	want := map[string]any{
		"specversion": "1.0", "heraldcursor": "1712345678901-3", "id": "evt-1", "source": "/apps/shop", "type": DefaultType, "subject": "k",
		"time": "2026-01-02T03:04:05.123456Z", "datacontenttype": "text/plain", "dataschema": "https://example.com/s.json",
		"partitionkey": "tenant/7", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=x", "data": "hi",
	}
	if len(got) != len(want) {
		t.Fatalf("event %s, want %v", e.JSON, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %v, want %v (event %s)", k, got[k], v, e.JSON)
		}
	}
	// The event's own trace context wins over the request's.
	h.Set("Ce-Traceparent", "00-11111111111111111111111111111111-2222222222222222-00")
	if p, err = ParsePublish(h, []byte("hi")); err != nil || p.Attrs.StringValue("traceparent") != "00-11111111111111111111111111111111-2222222222222222-00" {
		t.Fatalf("traceparent %q, %v", p.Attrs.StringValue("traceparent"), err)
	}
}

func TestEncodeGap(t *testing.T) {
	e := NewEncoder("ns", "c", 0).EncodeGap(Gap{Reason: GapTrimmed, From: cursor.ID{Ms: 5}, Resume: cursor.ID{Ms: 9, Seq: 1}, Message: "older than retention"})
	if !bytes.HasPrefix(e.SSE, []byte("id: 9-1\nevent: gap\ndata: {")) || e.Kind != KindGap {
		t.Fatalf("gap frame %q", e.SSE)
	}
	var ce struct {
		Type string `json:"type"`
		Data struct{ Reason, From, Resume, Message string }
	}
	if err := json.Unmarshal(e.JSON, &ce); err != nil {
		t.Fatal(err)
	}
	if ce.Type != GapType || ce.Data.Reason != GapTrimmed || ce.Data.From != "5-0" || ce.Data.Resume != "9-1" {
		t.Fatalf("gap event %s", e.JSON)
	}
}

func TestLiveRoundTrip(t *testing.T) {
	m := Message{ID: cursor.ID{Ms: 1, Seq: 2}, Writer: "3fbdfa83e7ec", Key: "k", Type: "t", ContentType: "text/plain", Attrs: `{"id":"x"}`, Data: "a\nb\n\nc"}
	got, err := DecodeLive(string(AppendLive(nil, m)))
	if err != nil || got != m {
		t.Fatalf("DecodeLive = %+v, %v; want %+v", got, err, m)
	}
	for _, bad := range []string{"", "1-0\nw\nk\nt", "1-0\nw\nk\nt\nc", "x-0\nw\nk\nt\nc\n\nd", "\x00probe 1"} {
		if _, err := DecodeLive(bad); err == nil {
			t.Fatalf("DecodeLive(%q) accepted a malformed payload", bad)
		}
	}
}

func TestParsePublish(t *testing.T) {
	tests := map[string]struct {
		ct, ceType, body string
		header           map[string]string // more request headers
		want             Publish
		wantAttrs        string // Attrs.String()
		wantErr          string // substring; "415" means errors.Is(ErrUnsupportedMediaType)
	}{
		"binary json":          {ct: "application/json", body: "{ \"a\": 1 }", want: Publish{Type: DefaultType, ContentType: "application/json", Data: []byte(`{"a":1}`)}},
		"binary with type":     {ct: "text/plain", ceType: "com.x", body: "hi", want: Publish{Type: "com.x", ContentType: "text/plain", Data: []byte("hi")}},
		"binary bad json":      {ct: "application/json", body: "{", wantErr: "not valid JSON"},
		"binary empty json":    {ct: "application/json", body: "", wantErr: "not valid JSON"},
		"bad ce-type":          {ct: "text/plain", ceType: "a\nb", body: "x", wantErr: "control character"},
		"no content type":      {ct: "", body: "x", wantErr: "415"},
		"bad content type":     {ct: "text/", body: "x", wantErr: "415"},
		"batch":                {ct: "application/cloudevents-batch+json", body: "[]", wantErr: "415"},
		"structured json":      {ct: "application/cloudevents+json", body: `{"specversion":"1.0","type":"com.y","subject":"k1","data":{"x": [1, 2]}}`, want: Publish{Subject: "k1", Type: "com.y", ContentType: "application/json", Data: []byte(`{"x":[1,2]}`)}},
		"structured text":      {ct: "application/cloudevents+json; charset=utf-8", body: `{"type":"t","datacontenttype":"text/plain","data":"hello"}`, want: Publish{Type: "t", ContentType: "text/plain", Data: []byte("hello")}},
		"structured base64":    {ct: "application/cloudevents+json", body: `{"type":"t","data_base64":"/wA="}`, want: Publish{Type: "t", ContentType: "application/octet-stream", Data: []byte{0xff, 0}}},
		"structured both data": {ct: "application/cloudevents+json", body: `{"data":1,"data_base64":"AA=="}`, wantErr: "not both"},
		"structured not json":  {ct: "application/cloudevents+json", body: `nope`, wantErr: "not a CloudEvent"},
		"structured two":       {ct: "application/cloudevents+json", body: `{} {}`, wantErr: "more than one"},
		"structured version":   {ct: "application/cloudevents+json", body: `{"specversion":"0.3"}`, wantErr: "specversion"},
		"structured text data": {ct: "application/cloudevents+json", body: `{"datacontenttype":"text/plain","data":5}`, wantErr: "JSON string"},
		"structured bad b64":   {ct: "application/cloudevents+json", body: `{"data_base64":"***"}`, wantErr: "not base64"},
		"structured attrs": {ct: "application/cloudevents+json", body: `{"specversion":"1.0","id":"a1","source":"/s","time":"2026-01-02T03:04:05Z","type":"t","subject":"k","seq":7,"ok":true,"traceparent":"x","data":1}`,
			want: Publish{Subject: "k", Type: "t", ContentType: "application/json", Data: []byte("1")}, wantAttrs: `{"id":"a1","ok":true,"seq":7,"source":"/s","time":"2026-01-02T03:04:05Z","traceparent":"x"}`},
		"structured null attr":  {ct: "application/cloudevents+json", body: `{"id":null,"x":null}`, want: Publish{Type: DefaultType}},
		"structured object ext": {ct: "application/cloudevents+json", body: `{"ext":{"a":1}}`, wantErr: "string, number or boolean"},
		"structured bad name":   {ct: "application/cloudevents+json", body: `{"Bad-Name":"x"}`, wantErr: "lower-case letters and digits"},
		"structured cursor":     {ct: "application/cloudevents+json", body: `{"heraldcursor":"1-0"}`, wantErr: "set by Herald"},
		"structured id number":  {ct: "application/cloudevents+json", body: `{"id":5}`, wantErr: "id must be a string"},
		"structured bad time":   {ct: "application/cloudevents+json", body: `{"time":"yesterday"}`, wantErr: "RFC 3339"},
		"structured type num":   {ct: "application/cloudevents+json", body: `{"type":5}`, wantErr: "type must be a string"},
		"binary attrs": {ct: "text/plain", body: "x", header: map[string]string{"Ce-Subject": "k2", "Ce-Id": "b1", "Ce-Source": "urn:x", "Ce-Myext": "v%C3%A4"},
			want: Publish{Subject: "k2", Type: DefaultType, ContentType: "text/plain", Data: []byte("x")}, wantAttrs: `{"id":"b1","myext":"vä","source":"urn:x"}`},
		"binary bad subject":     {ct: "text/plain", body: "x", header: map[string]string{"Ce-Subject": "a\tb"}, wantErr: "Ce-Subject header"},
		"binary specversion":     {ct: "text/plain", body: "x", header: map[string]string{"Ce-Specversion": "0.3"}, wantErr: "Ce-Specversion"},
		"binary empty id":        {ct: "text/plain", body: "x", header: map[string]string{"Ce-Id": ""}, wantErr: "id is empty"},
		"binary dataschema":      {ct: "text/plain", body: "x", header: map[string]string{"Ce-Dataschema": "relative"}, wantErr: "absolute URI"},
		"binary datacontenttype": {ct: "text/plain", body: "x", header: map[string]string{"Ce-Datacontenttype": "text/plain"}, wantErr: "Content-Type header"},
		"binary data header":     {ct: "text/plain", body: "x", header: map[string]string{"Ce-Data": "y"}, wantErr: "body is the data"},
		"trace context": {ct: "text/plain", body: "x", header: map[string]string{"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Tracestate": "a=1"},
			want: Publish{Type: DefaultType, ContentType: "text/plain", Data: []byte("x")}, wantAttrs: `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"a=1"}`},
		"bad trace context ignored": {ct: "text/plain", body: "x", header: map[string]string{"Traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "Tracestate": "a=1"},
			want: Publish{Type: DefaultType, ContentType: "text/plain", Data: []byte("x")}},
		"too many attrs": {ct: "application/cloudevents+json", body: `{` + manyAttrs(MaxAttrs+1) + `}`, wantErr: "at most"},
		"attrs too big":  {ct: "application/cloudevents+json", body: `{` + bigAttrs() + `}`, wantErr: "are stored with a message"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := http.Header{}
			h.Set("Content-Type", tc.ct)
			if tc.ceType != "" {
				h.Set("Ce-Type", tc.ceType)
			}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			got, err := ParsePublish(h, []byte(tc.body))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("ParsePublish accepted it: %+v", got)
				}
				if tc.wantErr == "415" {
					if !errors.Is(err, ErrUnsupportedMediaType) {
						t.Fatalf("err = %v, want ErrUnsupportedMediaType", err)
					}
				} else if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Subject != tc.want.Subject || got.Type != tc.want.Type || got.ContentType != tc.want.ContentType || !bytes.Equal(got.Data, tc.want.Data) {
				t.Fatalf("got %+v (%q), want %+v (%q)", got, got.Data, tc.want, tc.want.Data)
			}
			if a := got.Attrs.String(); a != tc.wantAttrs {
				t.Fatalf("attributes %s, want %s", a, tc.wantAttrs)
			}
		})
	}
}

func manyAttrs(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, `"x`+itoa(i)+`":"v"`)
	}
	return strings.Join(parts, ",")
}

func bigAttrs() string {
	var parts []string
	for i := range 5 {
		parts = append(parts, `"x`+itoa(i)+`":"`+strings.Repeat("v", MaxAttrValueBytes-2)+`"`)
	}
	return strings.Join(parts, ",")
}

func TestValidateField(t *testing.T) {
	tests := map[string]struct {
		in string
		ok bool
	}{
		"plain":     {"order-42", true},
		"unicode":   {"größe/ü", true},
		"empty":     {"", false},
		"newline":   {"a\nb", false},
		"del":       {"a\x7fb", false},
		"c1":        {"a\u0085b", false},
		"line sep":  {"a\u2028b", false},
		"bad utf8":  {"a\xffb", false},
		"too long":  {strings.Repeat("k", MaxKeyBytes+1), false},
		"max local": {strings.Repeat("k", MaxKeyBytes), true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := ValidateField("key", tc.in, MaxKeyBytes); (err == nil) != tc.ok {
				t.Fatalf("ValidateField(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

// FuzzPublishBody drives the whole publish-to-subscriber path of untrusted input: whatever
// ParsePublish accepts must encode to an SSE frame of exactly one data line whose CloudEvent is
// JSON and carries the same data back.
func FuzzPublishBody(f *testing.F) {
	f.Add("application/json", "", "", "", []byte(`{"a":1}`))
	f.Add("text/plain", "com.x", "Ce-Id", "x%0Ay", []byte("hello\nworld"))
	f.Add("text/plain", "", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", []byte("t"))
	f.Add("application/cloudevents+json", "", "", "", []byte(`{"type":"t","data":{"b":[1]}}`))
	f.Add("application/cloudevents+json", "", "", "", []byte(`{"id":"a\n\u2028","source":"/s","ext":1.5e3,"b":false,"data_base64":"/wA="}`))
	f.Add("application/octet-stream", "", "Ce-Ext", "\xff", []byte{0xff, 0xfe, '\n', '\r'})
	f.Add("application/json", "", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", []byte(`null`))
	f.Add("application/json; charset=utf-8", "", "", "", []byte(`{"a": [1, "b c"]}`))
	f.Add("application/cloudevents+json", "", "", "", []byte(`{"type":"t"}`))
	f.Add("application/octet-stream", "", "", "", []byte{})
	enc := NewEncoder("ns", "ch", 0)
	f.Fuzz(func(t *testing.T, ct, ceType, header, value string, body []byte) {
		h := http.Header{}
		h.Set("Content-Type", ct)
		h.Set("Ce-Type", ceType)
		if header != "" {
			h[header] = []string{value}
		}
		p, err := ParsePublish(h, body)
		if err != nil {
			return
		}
		key := "k"
		if p.Subject != "" {
			key = p.Subject
		}
		// Written back as a structured event (as the sidecar sends the publishes it coalesces into
		// a batch), it reads as the same message.
		raw := AppendStructured(nil, p, key)
		if back, err := ParseBatchEvent(http.Header{}, raw); err != nil || back.Subject != key || back.Type != p.Type ||
			back.ContentType != p.ContentType || !bytes.Equal(back.Data, p.Data) || back.Attrs.String() != p.Attrs.String() {
			t.Fatalf("%+v written as %s reads back as %+v (%v)", p, raw, back, err)
		}
		m := Message{ID: cursor.ID{Ms: 1, Seq: 1}, Key: key, Type: p.Type, ContentType: p.ContentType, Attrs: p.Attrs.String(), Data: string(p.Data)}
		// The live payload must survive the channel.
		back, err := DecodeLive(string(AppendLive(nil, m)))
		if err != nil || back != m {
			t.Fatalf("live round trip: %+v, %v", back, err)
		}
		e := enc.Encode(m)
		if bytes.Count(e.SSE, []byte("\n")) != 4 || bytes.ContainsRune(e.SSE, '\r') {
			t.Fatalf("SSE frame breaks lines: %q", e.SSE)
		}
		var ce cloudEvent
		if err := json.Unmarshal(e.JSON, &ce); err != nil {
			t.Fatalf("not JSON: %v: %s", err, e.JSON)
		}
		// Every attribute the producer set comes back, and nothing else is added.
		var all map[string]json.RawMessage
		if err := json.Unmarshal(e.JSON, &all); err != nil {
			t.Fatal(err)
		}
		for name, v := range p.Attrs {
			if got := all[name]; !bytes.Equal(got, v) {
				t.Fatalf("attribute %s = %s, want %s (event %s)", name, got, v, e.JSON)
			}
		}
		if ce.Cursor != "1-1" {
			t.Fatalf("heraldcursor %q", ce.Cursor)
		}
		var data []byte
		switch {
		case ce.DataBase64 != "":
			data, _ = base64.StdEncoding.DecodeString(ce.DataBase64)
		case IsJSONMediaType(p.ContentType) && json.Valid(p.Data):
			data = ce.Data
		default:
			var s string
			if err := json.Unmarshal(ce.Data, &s); err != nil {
				t.Fatalf("text data is not a JSON string: %s", ce.Data)
			}
			data = []byte(s)
		}
		if !bytes.Equal(data, p.Data) && utf8.Valid(p.Data) {
			t.Fatalf("data changed: %q -> %q", p.Data, data)
		}
	})
}

// FuzzBatch: a batch is either refused with an error, or every event of it is what reading
// that event alone (SplitBatch, then ParseBatchEvent) gives, and there are 1 to MaxBatchEvents.
func FuzzBatch(f *testing.F) {
	f.Add([]byte(`[{"subject":"a","data":{"n":1}},{"id":"x","source":"/s","data_base64":"/wA="}]`))
	f.Add([]byte(`[{"type":"t","datacontenttype":"text/plain","data":"hi"}] `))
	f.Add([]byte(`[{"specversion":"0.3"}]`))
	f.Add([]byte(`[] x`))
	f.Add([]byte(`[{"a":1},`))
	f.Add([]byte(` [ {"subject":"x]\\\"}","data":[1,{"b":"]"}]} , {"subject":"y","data":null}	]
`))
	f.Fuzz(func(t *testing.T, body []byte) {
		// The hand-written split agrees with encoding/json, valid events or not.
		var ref []json.RawMessage
		if json.Unmarshal(body, &ref) == nil && len(ref) >= 1 && len(ref) <= MaxBatchEvents {
			raws, err := SplitBatch(body)
			if err != nil || len(raws) != len(ref) {
				t.Fatalf("encoding/json reads %d values, SplitBatch %d (%v)", len(ref), len(raws), err)
			}
			for i := range ref {
				if !bytes.Equal(bytes.TrimSpace(ref[i]), raws[i]) {
					t.Fatalf("value %d: encoding/json %q, SplitBatch %q", i, ref[i], raws[i])
				}
			}
		}
		h := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
		events, err := ParseBatch(h, body)
		if err != nil {
			return
		}
		raws, err := SplitBatch(body)
		if err != nil || len(raws) != len(events) || len(events) == 0 || len(events) > MaxBatchEvents {
			t.Fatalf("ParseBatch took %d events, SplitBatch %d (%v)", len(events), len(raws), err)
		}
		if !json.Valid(body) {
			t.Fatalf("a batch that is not valid JSON was taken: %q", body)
		}
		for i, raw := range raws {
			one, err := ParseBatchEvent(h, raw)
			if err != nil || !reflect.DeepEqual(one, events[i]) {
				t.Fatalf("event %d alone reads as %+v (%v), in the batch as %+v", i, one, err, events[i])
			}
			if _, ok := events[i].Attrs["traceparent"]; !ok {
				t.Fatalf("event %d lost the request's trace context", i)
			}
		}
	})
}

// FuzzIsCompact: valid JSON that isCompact passes is what json.Compact returns unchanged, and
// jsonString reads a string as encoding/json does.
func FuzzIsCompact(f *testing.F) {
	f.Add([]byte(`{"a":[1,"b c",{"d":"\\\" x"}]}`))
	f.Add([]byte(`{"a": 1}`))
	f.Add([]byte("[1,\n2]"))
	f.Add([]byte(`"a\u00e9\n\"" `))
	f.Add([]byte("\"\xff\""))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			t.Fatal(err)
		}
		if compact := bytes.Equal(buf.Bytes(), b); isCompact(b) != compact {
			t.Fatalf("isCompact(%q) = %v, but json.Compact gives %q", b, !compact, buf.Bytes())
		}
		var want string
		if json.Unmarshal(b, &want) == nil {
			if got, ok := jsonString(bytes.TrimSpace(b)); !ok || got != want {
				t.Fatalf("jsonString(%q) = %q, encoding/json reads %q", b, got, want)
			}
		}
	})
}

func FuzzDecodeLive(f *testing.F) {
	f.Add("1-0\nabc\nk\nt\ntext/plain\n\ndata")
	f.Add("1-0\nabc\nk\nt\ntext/plain\n{\"id\":\"x\"}\nda\nta")
	f.Add("\x00probe 7")
	f.Fuzz(func(t *testing.T, payload string) {
		m, err := DecodeLive(payload)
		if err != nil {
			return
		}
		if got := string(AppendLive(nil, m)); got != payload && m.ID.String() == strings.SplitN(payload, "\n", 2)[0] {
			t.Fatalf("re-encoding %q gave %q", payload, got)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	enc := NewEncoder("team-a", "orders", 0)
	m := Message{ID: cursor.ID{Ms: 1712345678901, Seq: 3}, Key: "order-42", Type: "com.example.created",
		ContentType: "application/json", Data: `{"order":42,"items":[{"sku":"a-1","qty":2}],"note":"` + strings.Repeat("x", 180) + `"}`}
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Data)))
	for b.Loop() {
		_ = enc.Encode(m)
	}
}

// BenchmarkParseBatch: a batch of 16 events as (f)'s batched row sends them.
func BenchmarkParseBatch(b *testing.B) {
	var body []byte
	body = append(body, '[')
	for i := range 16 {
		if i > 0 {
			body = append(body, ',')
		}
		body = fmt.Appendf(body, `{"subject":"k","data":{"seq":%d,"ts":1796195126105000000,"pad":"%s"}}`, i, strings.Repeat("x", 540))
	}
	body = append(body, ']')
	h := http.Header{}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseBatch(h, body); err != nil {
			b.Fatal(err)
		}
	}
}

func TestKeySetFollowsKeysAndPrefixes(t *testing.T) {
	s := NewKeySet([]string{"user-42", "team-7/", "a/b/"})
	tests := map[string]bool{
		"user-42":        true,
		"user-4":         false,
		"user-42/x":      false, // a key is not a prefix
		"team-7/":        true,
		"team-7/alerts":  true,
		"team-7/a/b":     true,
		"team-7":         false,
		"team-77/x":      false,
		"a/b/c":          true,
		"a/c":            false,
		"a/":             false,
		"/":              false,
		"":               false,
		"x/team-7/alert": false, // prefixes anchor at the start
	}
	for key, want := range tests {
		if got := s.Has(key); got != want {
			t.Errorf("Has(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestEachPrefixStopsAndSkipsTheKeyItself(t *testing.T) {
	var got []string
	EachPrefix("a/b/c/", func(p string) bool { got = append(got, p); return true })
	if want := []string{"a/", "a/b/"}; !slices.Equal(got, want) {
		t.Fatalf("prefixes of a/b/c/ = %q, want %q", got, want)
	}
	got = nil
	EachPrefix("a/b/c", func(p string) bool { got = append(got, p); return false })
	if want := []string{"a/"}; !slices.Equal(got, want) {
		t.Fatalf("stopped after the first: %q, want %q", got, want)
	}
}
