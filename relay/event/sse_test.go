package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/heraldhq/herald/relay/cursor"
)

func TestSSEReaderRebuildsTheRelaysFramesByteForByte(t *testing.T) {
	enc := NewEncoder("team-a", "orders", 0)
	msg := enc.Encode(Message{ID: cursor.ID{Ms: 17, Seq: 2}, Key: "order-1", Type: "t", ContentType: "application/json", Data: `{"a":1}`})
	gap := enc.EncodeGap(Gap{Reason: GapTrimmed, From: cursor.ID{Ms: 1}, Resume: cursor.ID{Ms: 9}, Message: "m"})
	var stream bytes.Buffer
	stream.Write(Heartbeat.SSE)
	stream.Write(msg.SSE)
	stream.WriteString("\n") // a stray blank line is ignored
	stream.Write(gap.SSE)
	stream.WriteString(": closed: bye\r\n\r\n")
	rd := NewSSEReader(&stream, 1<<10)
	want := []struct {
		comment string
		enc     *Encoded
	}{{comment: "heartbeat"}, {enc: msg}, {enc: gap}, {comment: "closed: bye"}}
	for i, w := range want {
		f, err := rd.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if w.enc == nil {
			if f.Comment != w.comment || f.Event != "" {
				t.Fatalf("frame %d = %+v, want comment %q", i, f, w.comment)
			}
			continue
		}
		got, err := FromFrame(f)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got.SSE, w.enc.SSE) || !bytes.Equal(got.JSON, w.enc.JSON) || got.ID != w.enc.ID || got.Kind != w.enc.Kind || got.Key != w.enc.Key {
			t.Fatalf("frame %d rebuilt as %+v, want %+v", i, got, w.enc)
		}
	}
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
	if _, err := NewSSEReader(strings.NewReader("id: 1-0\nevent: mess"), 1<<10).Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("a frame broken off: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := NewSSEReader(strings.NewReader("data: "+strings.Repeat("x", 200<<10)+"\n\n"), 100<<10).Next(); !errors.Is(err, ErrFrameTooLong) {
		t.Fatalf("an over-long line: %v, want ErrFrameTooLong", err)
	}
}

func TestWithIDChangesOnlyTheCursor(t *testing.T) {
	enc := NewEncoder("team-a", "orders", 0)
	for _, e := range []*Encoded{
		enc.Encode(Message{ID: cursor.ID{Ms: 17, Seq: 2}, Key: "k", Type: "t", ContentType: "text/plain", Data: "hello \"id\""}),
		enc.EncodeGap(Gap{Reason: GapRollback, From: cursor.ID{Ms: 1}, Resume: cursor.ID{Ms: 9}, Message: "m"}),
	} {
		e.Shard = 2
		got := WithID(e, []byte("17-2.5-0.0-0"))
		if got == nil {
			t.Fatalf("WithID refused %q", e.SSE)
		}
		f, err := NewSSEReader(bytes.NewReader(got.SSE), 1<<10).Next()
		if err != nil || f.ID != "17-2.5-0.0-0" || !bytes.Equal(f.Data, got.JSON) {
			t.Fatalf("re-identified frame %q reads as %+v, %v", got.SSE, f, err)
		}
		var before, after map[string]any
		if err := json.Unmarshal(e.JSON, &before); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got.JSON, &after); err != nil {
			t.Fatal(err)
		}
		if after[CursorAttr] != "17-2.5-0.0-0" || after["id"] != before["id"] {
			t.Fatalf("cursor %v, id %v (was %v): the cursor changes, the CloudEvent id does not", after[CursorAttr], after["id"], before["id"])
		}
		delete(before, CursorAttr)
		delete(after, CursorAttr)
		b1, _ := json.Marshal(before)
		b2, _ := json.Marshal(after)
		if !bytes.Equal(b1, b2) || got.Shard != 2 || got.Key != e.Key || got.ID != e.ID || got.Kind != e.Kind {
			t.Fatalf("WithID changed more than the cursor: %s vs %s", b1, b2)
		}
	}
	if WithID(Heartbeat, []byte("1-0")) != nil {
		t.Fatal("WithID of a heartbeat must be nil")
	}
}

func FuzzSSEReader(f *testing.F) {
	enc := NewEncoder("ns", "c", 0)
	f.Add(enc.Encode(Message{ID: cursor.ID{Ms: 1}, Key: "k", Type: "t", ContentType: "application/json", Data: `{}`}).SSE)
	f.Add([]byte(": heartbeat\n\nid: 1-0\nevent: gap\ndata: {\"specversion\":\"1.0\",\"id\":\"1-0\"}\n\n"))
	f.Add([]byte("id\nevent\ndata\n\n\r\n:\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := NewSSEReader(bytes.NewReader(b), 4<<10)
		for range 1000 {
			fr, err := rd.Next()
			if err != nil {
				return
			}
			e, err := FromFrame(fr)
			if err != nil {
				continue
			}
			// What FromFrame accepts must read back as the same frame, and re-identify cleanly.
			back, err := NewSSEReader(bytes.NewReader(e.SSE), 1<<20).Next()
			if err != nil || back.ID != fr.ID || back.Event != fr.Event || !bytes.Equal(back.Data, fr.Data) {
				t.Fatalf("frame %+v rebuilt as %q reads back as %+v, %v", fr, e.SSE, back, err)
			}
			if w := WithID(e, []byte("1-0.2-0")); w != nil && !bytes.HasPrefix(w.SSE, []byte("id: 1-0.2-0\n")) {
				t.Fatalf("WithID produced %q", w.SSE)
			}
		}
	})
}
