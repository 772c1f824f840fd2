package relaytest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Event is one SSE frame as a client sees it. Comment frames have only Comment set.
type Event struct {
	ID, Event, Data string
	Comment         string
	Retry           string // the retry field (the reconnection delay a stream opens with)
}

// CloudEvent decodes Data.
func (e Event) CloudEvent(t testing.TB) CloudEvent {
	t.Helper()
	var ce CloudEvent
	if err := json.Unmarshal([]byte(e.Data), &ce); err != nil {
		t.Fatalf("event data is not a CloudEvent: %v: %q", err, e.Data)
	}
	return ce
}

// CloudEvent is the JSON a subscriber receives.
type CloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	Cursor          string          `json:"heraldcursor"` // what a subscriber resumes from
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// SSE is an open event stream.
type SSE struct {
	Resp   *http.Response
	Events chan Event   // closed at EOF
	Err    error        // why the stream ended (after Events is closed)
	Retry  atomic.Value // the last retry field received (a string)
	cancel context.CancelFunc
}

// SSEOptions tune OpenSSE.
type SSEOptions struct {
	LastEventID string
	Header      http.Header // more request headers (Authorization...)
	NoRead      bool        // do not read: the connection's receive buffer fills (a stuck consumer)
	RecvBuffer  int         // SO_RCVBUF of the client socket; 0 = kernel default
}

// OpenSSE connects to url and, unless o.NoRead, parses frames into Events. It fails the test
// unless the answer is 200 text/event-stream. The stream is closed when the test ends.
func OpenSSE(t testing.TB, url string, o SSEOptions) *SSE {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dialer := &net.Dialer{}
	if o.RecvBuffer > 0 {
		dialer.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.RecvBuffer)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, DisableCompression: true}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if o.LastEventID != "" {
		req.Header.Set("Last-Event-ID", o.LastEventID)
	}
	for k, vs := range o.Header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %d %s %q", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &SSE{Resp: resp, Events: make(chan Event, 1<<16), cancel: cancel}
	t.Cleanup(s.Close)
	if !o.NoRead {
		go s.read(resp.Body)
	}
	return s
}

// OpenSSEWithHeader is OpenSSE with one extra request header.
func OpenSSEWithHeader(t testing.TB, url, name, value string) *SSE {
	t.Helper()
	return OpenSSE(t, url, SSEOptions{Header: http.Header{http.CanonicalHeaderKey(name): {value}}})
}

// StartReading starts parsing a stream opened with NoRead.
func (s *SSE) StartReading() { go s.read(s.Resp.Body) }

// Close ends the stream.
func (s *SSE) Close() {
	s.cancel()
	s.Resp.Body.Close()
}

func (s *SSE) read(body io.Reader) {
	defer close(s.Events)
	rd := bufio.NewReaderSize(body, 64<<10)
	var ev Event
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			s.Err = err
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			s.Events <- ev
			ev = Event{}
		case strings.HasPrefix(line, ":"):
			ev.Comment = strings.TrimSpace(line[1:])
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.ID = value
			case "event":
				ev.Event = value
			case "retry":
				ev.Retry = value
				s.Retry.Store(value)
			case "data":
				if ev.Data != "" {
					ev.Data += "\n"
				}
				ev.Data += value
			}
		}
	}
}

// ErrTimeout is returned by Next when no event came in time.
var ErrTimeout = errors.New("no event in time")

// Next returns the next non-heartbeat frame, or ErrTimeout, or io.EOF when the stream ended.
func (s *SSE) Next(within time.Duration) (Event, error) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				return Event{}, io.EOF
			}
			if (ev.Comment == "heartbeat" || ev.Comment == "" && ev.Retry != "") && ev.Event == "" && ev.Data == "" {
				continue // a heartbeat, or the retry field a stream opens with
			}
			return ev, nil
		case <-timer.C:
			return Event{}, ErrTimeout
		}
	}
}

// Messages reads n "message" events (failing the test on anything else or a timeout).
func (s *SSE) Messages(t testing.TB, n int, within time.Duration) []Event {
	t.Helper()
	deadline := time.Now().Add(within)
	out := make([]Event, 0, n)
	for len(out) < n {
		ev, err := s.Next(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		if ev.Event != "message" {
			t.Fatalf("after %d of %d messages: unexpected frame %+v", len(out), n, ev)
		}
		out = append(out, ev)
	}
	return out
}
