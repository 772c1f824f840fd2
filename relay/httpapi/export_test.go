package httpapi

import (
	"net/http"
	"time"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// ServeLiveSSE serves a live hub subscriber as a shard relay does after the replay: the
// connection is hijacked and handed to the hub's writers. It reports false when the
// connection could not be taken over.
func ServeLiveSSE(w http.ResponseWriter, sub *hub.Subscriber, writeTimeout time.Duration) bool {
	c := hijackSSE(w, sub, writeTimeout)
	if c == nil {
		return false
	}
	c.goLive(func(batch []*event.Encoded) []*event.Encoded { return batch }, func() string { return "" })
	return true
}
