package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// Whatever a client sends as a command, parsing it never panics: it is a command of a known
// name with valid keys, each once (or a non-empty token), or a refusal whose reply, queued for
// the stream as one text frame, is a JSON error with status 400 that says what was wrong and
// cannot pass for a CloudEvent.
func FuzzEdgeCommand(f *testing.F) {
	for _, seed := range []string{
		`{"follow":["user-42","team-7/"]}`, `{"unfollow":["team-7/"]}`, `{"token":"eyJ.x.y"}`,
		`{"follow":[]}`, `{"follow":[""]}`, `{"follow":"k"}`, `{"follow":["a","a"]}`, `{"follow":null}`,
		`{"follow":["a"],"token":"t"}`, `{"FOLLOW":["a"]}`, `{"subscribe":["a"]}`, `{"token":""}`,
		`{"follow":["a"]} {}`, `[]`, `null`, `"follow"`, ``, `{"follow":["\u0000"]}`, "{\"follow\":[\"\xff\"]}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		c, refused := parseCommand(text)
		if refused == nil {
			switch {
			case c.name == "token" && c.token != "" && c.keys == nil:
			case (c.name == "follow" || c.name == "unfollow") && len(c.keys) > 0 && c.token == "":
				for i, k := range c.keys {
					if err := event.ValidateField("key", k, event.MaxKeyBytes); err != nil || slices.Contains(c.keys[:i], k) {
						t.Fatalf("%q parsed to %+v: key %q is invalid (%v) or repeated", text, c, k, err)
					}
				}
			default:
				t.Fatalf("%q parsed to the command %+v", text, c)
			}
			return
		}
		// The refusal, as the stream queues it.
		sub := hub.New(1 << 20).SubscribeInterest(hub.Interest{})
		defer sub.Close()
		(&edgeStream{sub: sub}).run(text) // a refused command touches nothing of the stream
		batch, err := sub.Next(context.Background(), nil)
		if err != nil || len(batch) != 1 || batch[0].Kind != event.KindNotice {
			t.Fatalf("%q was refused with %d queued (%v), want one notice", text, len(batch), err)
		}
		frame := bytes.NewReader(batch[0].SSE)
		h, err := ws.ReadHeader(frame)
		if err != nil || h.OpCode != ws.OpText || !h.Fin || h.Masked || int(h.Length) != frame.Len() {
			t.Fatalf("%q was refused with a malformed frame %x", text, batch[0].SSE)
		}
		payload := batch[0].SSE[len(batch[0].SSE)-frame.Len():]
		var r map[string]any
		if !utf8.Valid(payload) || json.Unmarshal(payload, &r) != nil {
			t.Fatalf("%q was refused with %q, not JSON in UTF-8", text, payload)
		}
		detail, _ := r["detail"].(string)
		if _, ok := r["specversion"]; ok || r["type"] != "error" || r["status"] != float64(http.StatusBadRequest) || detail == "" {
			t.Fatalf("%q was refused with %s, want an error reply of status 400 with a detail", text, payload)
		}
	})
}
