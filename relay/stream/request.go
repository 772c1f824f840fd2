package stream

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
)

// ResumeCursor returns the cursor a subscriber resumes from (Last-Event-ID, else ?since=) and
// where it came from, for error messages; "" when there is none.
func ResumeCursor(r *http.Request) (raw, what string) {
	if raw = r.Header.Get("Last-Event-ID"); raw != "" {
		return raw, "Last-Event-ID header"
	}
	return r.URL.Query().Get("since"), "query parameter since"
}

// ParseLive reads the ?live= parameter: "" and "true" go live after replay, "false" ends the
// stream once what is stored after the cursor was sent (sidecars use it to resume a subscriber
// without opening a second live stream).
func ParseLive(q url.Values) (replayOnly bool, err error) {
	switch v := q.Get("live"); v {
	case "", "true":
		return false, nil
	case "false":
		return true, nil
	default:
		return false, errors.New("query parameter live must be \"true\" (default) or \"false\" (replay what is stored after the cursor, then end), not " + strconv.Quote(clip(v)))
	}
}

// ParseHistory reads ?history=N: a fresh stream starts with the last N events of each of its
// keys (0 when absent). depth is how many the channel keeps per key
// (spec.retention.historyPerKey).
func ParseHistory(q url.Values, depth int) (int, error) {
	v := q.Get("history")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil || n < 1:
		return 0, errors.New("query parameter history must be a number of events, 1 or more, not " + strconv.Quote(clip(v)))
	case depth == 0:
		return 0, errors.New("query parameter history: this channel keeps no history per key (spec.retention.historyPerKey is 0)")
	case n > depth:
		return 0, errors.New("query parameter history: this channel keeps the last " + strconv.Itoa(depth) + " events of each key (spec.retention.historyPerKey), not " + strconv.Itoa(n))
	}
	return n, nil
}

// ErrReplayNeedsCursor is the refusal of ?live=false without a cursor.
var ErrReplayNeedsCursor = errors.New("live=false replays what is stored after a cursor: give one with Last-Event-ID or ?since=, or ask for the keys' history (?history=N)")

// clip shortens what a client sent before it is quoted back in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
