package stream

import (
	"context"
	"net/http"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// everything is a Source with no replay that sends every live event as it is.
type everything struct{}

func (everything) Replay(context.Context, Sink) bool              { return true }
func (everything) Filter(batch []*event.Encoded) []*event.Encoded { return batch }
func (everything) Cursor() string                                 { return "" }

// ServePulledSSE serves a live hub subscriber on the handler's goroutine (Next, then one
// Sink.Write per batch), as a stream that cannot be taken over is served.
func ServePulledSSE(w http.ResponseWriter, r *http.Request, sub *hub.Subscriber) {
	defer sub.Close()
	if startSSE(w) == nil {
		Options{WriteTimeout: DefaultWriteTimeout}.pump(r.Context(), sub, &sseSink{w: w, rc: http.NewResponseController(w), timeout: DefaultWriteTimeout}, everything{})
	}
}

// ServeLive serves a live hub subscriber as Serve does once its replay is over (pushed by the
// hub's writers).
func ServeLive(w http.ResponseWriter, r *http.Request, sub *hub.Subscriber) error {
	return Serve(w, r, sub, everything{}, Options{})
}
