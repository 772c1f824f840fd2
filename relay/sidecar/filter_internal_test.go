package sidecar

import (
	"testing"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
)

// A pong queued while a stream crosses its seam (the client pinged during the replay) is
// neither an event of shard 0 nor a cursor: events the replay sent are still dropped after it,
// and the subscriber's cursor stays where the replay left it.
func TestAPongAtTheSeamMovesNothing(t *testing.T) {
	enc := event.NewEncoder("ns", "ch", 0)
	replayed := enc.Encode(event.Message{ID: cursor.ID{Ms: 5, Seq: 0}, Key: "k", Type: "t", ContentType: "text/plain", Data: "x"})
	ls := &localSub{shards: []int{0}, own: cursor.Composite{{Ms: 5}}, seam: []bool{true}, synced: true}
	pong := &event.Encoded{Kind: event.KindNotice, SSE: []byte{0x8a, 0}}

	kept := ls.Filter([]*event.Encoded{pong, replayed})
	if len(kept) != 1 || kept[0] != pong {
		t.Fatalf("kept %d of the pong and an event the replay sent, want the pong alone", len(kept))
	}
	if got := ls.Cursor(); got != "5-0" {
		t.Fatalf("after the pong the subscriber's cursor is %q, want 5-0", got)
	}
}
