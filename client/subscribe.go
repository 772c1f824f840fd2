package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/heraldhq/herald/relay/event"
)

// Event is one event of a stream: a message, or a gap (Gap set).
type Event struct {
	// Cursor is where the stream is after this event (the heraldcursor extension): resume
	// after it with SubscribeOptions.After.
	Cursor          string
	ID              string // the CloudEvents id: the same on every stream, to deduplicate by
	Source          string
	Type            string
	Subject         string // the key
	Time            time.Time
	DataContentType string
	// Data is the data member as sent: JSON data inline, text as a JSON string (see Text), nil
	// when the event carries data_base64 (DataBase64).
	Data       json.RawMessage
	DataBase64 string
	Raw        json.RawMessage // the whole CloudEvent, extensions included
	Gap        *Gap            // non-nil for a gap event
}

// Text returns data sent as text.
func (e Event) Text() string {
	var s string
	if json.Unmarshal(e.Data, &s) != nil {
		return string(e.Data)
	}
	return s
}

// Gap says which events a stream could not deliver.
type Gap struct {
	Reason  string `json:"reason"` // trimmed, rollback, cursor-ahead or no-replay
	From    string `json:"from"`
	Resume  string `json:"resume"`
	Message string `json:"message"`
}

// SubscribeOptions choose what to follow.
type SubscribeOptions struct {
	Key   string // follow one key; empty: the whole channel
	After string // resume after this cursor; empty: from now on
}

// Subscribe follows channel until ctx ends or handle returns an error, calling handle for every
// event in order. After a break it reconnects with the last cursor (100 ms, doubling up to 5 s,
// or as a 429/503 answer asks), so handle sees every message once. Answers that cannot get
// better (400, 401, 403, 404, 421) end it with an *Error.
func (c *Client) Subscribe(ctx context.Context, channel string, opt SubscribeOptions, handle func(Event) error) error {
	cursor := opt.After
	failures := 0
	for {
		delivered, err := c.stream(ctx, channel, opt.Key, &cursor, handle)
		var herr *Error
		var stop *handlerError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &stop):
			return stop.err
		case errors.As(err, &herr) && !herr.Retryable():
			return err
		}
		if delivered {
			failures = 0
		}
		failures++
		if err := sleep(ctx, backoff(failures, err)); err != nil {
			return err
		}
	}
}

type handlerError struct{ err error }

func (h *handlerError) Error() string { return h.err.Error() }

// stream reads one SSE connection; it reports whether it delivered anything.
func (c *Client) stream(ctx context.Context, channel, key string, cursor *string, handle func(Event) error) (bool, error) {
	u := c.base + "/v1/channels/" + url.PathEscape(channel) + "/events"
	if key != "" {
		u += "?key=" + url.QueryEscape(key)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *cursor != "" {
		req.Header.Set("Last-Event-ID", *cursor)
	}
	if err := c.authorize(req); err != nil {
		return false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return false, problem(resp, b)
	}
	rd := event.NewSSEReader(resp.Body, maxEventLine)
	delivered := false
	for {
		f, err := rd.Next()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // a stream ends only when the connection breaks
			}
			return delivered, err
		}
		if f.Event != "message" && f.Event != "gap" {
			continue // comments (heartbeats), the retry field
		}
		ev, err := decode(f.Data, f.Event == "gap")
		if err != nil {
			return delivered, err
		}
		if err := handle(ev); err != nil {
			return delivered, &handlerError{err}
		}
		*cursor, delivered = ev.Cursor, true
	}
}

// maxEventLine bounds one line of a stream: the largest event of the largest channel
// (maxMessageBytes 16 MiB, base64 and escaping included) fits.
const maxEventLine = 128 << 20

func decode(data []byte, gap bool) (Event, error) {
	var ce struct {
		Cursor          string          `json:"heraldcursor"`
		ID              string          `json:"id"`
		Source          string          `json:"source"`
		Type            string          `json:"type"`
		Subject         string          `json:"subject"`
		Time            time.Time       `json:"time"`
		DataContentType string          `json:"datacontenttype"`
		Data            json.RawMessage `json:"data"`
		DataBase64      string          `json:"data_base64"`
	}
	if err := json.Unmarshal(data, &ce); err != nil {
		return Event{}, errors.New("herald: an event is not a CloudEvent: " + err.Error())
	}
	ev := Event{Cursor: ce.Cursor, ID: ce.ID, Source: ce.Source, Type: ce.Type, Subject: ce.Subject, Time: ce.Time,
		DataContentType: ce.DataContentType, Data: ce.Data, DataBase64: ce.DataBase64, Raw: data}
	if gap {
		ev.Gap = &Gap{}
		if err := json.Unmarshal(ce.Data, ev.Gap); err != nil {
			return Event{}, errors.New("herald: a gap event without its reason: " + err.Error())
		}
	}
	return ev, nil
}
