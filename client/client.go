// Package client is a Go client of Herald's HTTP API, as served by the sidecar in an app's pod
// (http://127.0.0.1:7070) or by a shard relay (api/openapi.yaml, api/asyncapi.yaml).
//
// Publish retries what may be retried (no answer, 429, 503) with one Idempotency-Key, so a
// message is stored once however often it is sent. Subscribe follows a channel over
// Server-Sent Events and resumes after every break from the last event's cursor, so the
// handler sees every message once, in order; what cannot be replayed (older than retention, a
// Live channel) arrives as an Event whose Gap says so, never as a silent hole.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls one sidecar or relay.
type Client struct {
	base  string
	http  *http.Client
	token func() (string, error)
	tries int
}

// Option changes a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: one without a timeout, as streams last).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithToken sends a bearer token on every call (a shard relay wants a service account token
// with the audience herald.dev/<namespace>/<channel>; a sidecar needs none).
func WithToken(token func() (string, error)) Option { return func(c *Client) { c.token = token } }

// WithPublishAttempts sets how many times Publish tries before it gives up (default 5).
func WithPublishAttempts(n int) Option { return func(c *Client) { c.tries = max(n, 1) } }

// New returns a client of the API at baseURL, e.g. "http://127.0.0.1:7070".
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), http: &http.Client{}, tries: 5}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Message is what Publish sends: a CloudEvent in binary mode.
type Message struct {
	Key         string // the key (CloudEvents subject): picks the shard, and what subscribers filter on
	Data        []byte
	ContentType string // default application/json
	Type        string // CloudEvents type (default dev.herald.message)
	// ID and Source are the event's own CloudEvents id and source (optional); with an ID and no
	// IdempotencyKey the relay deduplicates the event by source and id.
	ID, Source string
	Extensions map[string]string // CloudEvents extension attributes (lower-case names)
	// IdempotencyKey makes retries safe; empty: one is made up (unless ID is set) and kept for
	// every attempt of this call.
	IdempotencyKey string
	AckReplicated  bool // answer once a replica has the message too (?ack=replicated)
}

// Published is the answer to a publish.
type Published struct {
	ID         string `json:"id"`      // the message's cursor on its shard
	Shard      int    `json:"shard"`   // its shard
	EventID    string `json:"eventId"` // the CloudEvents id subscribers get
	Duplicate  bool   `json:"duplicate,omitempty"`
	Replicated *bool  `json:"replicated,omitempty"`
	Replicas   *int   `json:"replicas,omitempty"`
}

// Error is an answer other than success: an RFC 9457 problem.
type Error struct {
	Status     int    `json:"status"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Detail     string `json:"detail"`
	RetryAfter int    `json:"retryAfter,omitempty"` // seconds
	Shard      *int   `json:"shard,omitempty"`      // 421: the shard the key belongs to
	Limit      string `json:"limit,omitempty"`      // 429: the limit that refused the call
}

func (e *Error) Error() string {
	return fmt.Sprintf("herald: %d %s: %s", e.Status, e.Title, e.Detail)
}

// Retryable reports whether the same call may succeed later.
func (e *Error) Retryable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Publish sends m on channel. It retries a call that got no answer, 429 or 5xx (waiting as the
// answer says) with the same Idempotency-Key; any other error is returned as an *Error.
func (c *Client) Publish(ctx context.Context, channel string, m Message) (Published, error) {
	q := url.Values{}
	if m.Key != "" {
		q.Set("key", m.Key)
	}
	if m.AckReplicated {
		q.Set("ack", "replicated")
	}
	u := c.base + "/v1/channels/" + url.PathEscape(channel) + "/messages?" + q.Encode()
	idem := m.IdempotencyKey
	if idem == "" && m.ID == "" {
		idem = newKey()
	}
	var last error
	for attempt := 0; attempt < c.tries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt, last)); err != nil {
				return Published{}, errors.Join(err, last)
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(m.Data))
		if err != nil {
			return Published{}, err
		}
		setPublishHeaders(req.Header, m, idem)
		if err := c.authorize(req); err != nil {
			return Published{}, err
		}
		var p Published
		last = c.do(req, &p)
		var herr *Error
		switch {
		case last == nil:
			return p, nil
		case ctx.Err() != nil:
			return Published{}, last
		case errors.As(last, &herr) && !herr.Retryable():
			return Published{}, last
		}
	}
	return Published{}, last
}

func setPublishHeaders(h http.Header, m Message, idem string) {
	ct := m.ContentType
	if ct == "" {
		ct = "application/json"
	}
	h.Set("Content-Type", ct)
	if idem != "" {
		h.Set("Idempotency-Key", idem)
	}
	for name, v := range map[string]string{"Ce-Type": m.Type, "Ce-Id": m.ID, "Ce-Source": m.Source} {
		if v != "" {
			h.Set(name, v)
		}
	}
	for name, v := range m.Extensions {
		h.Set("Ce-"+name, url.PathEscape(v))
	}
}

// do sends req and decodes a 2xx JSON answer into out, or returns the *Error it got.
func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return problem(resp, b)
	}
	return json.Unmarshal(b, out)
}

func problem(resp *http.Response, body []byte) *Error {
	e := &Error{}
	_ = json.Unmarshal(body, e)
	e.Status = resp.StatusCode
	if e.Title == "" {
		e.Title = http.StatusText(resp.StatusCode)
	}
	if e.Detail == "" {
		e.Detail = strings.TrimSpace(string(body))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = s
	}
	return e
}

func (c *Client) authorize(req *http.Request) error {
	if c.token == nil {
		return nil
	}
	tok, err := c.token()
	if err != nil {
		return fmt.Errorf("herald: reading the token: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

// backoff is the wait before attempt n: what a 429 or 503 asked for, else 100 ms doubling up
// to 5 s.
func backoff(n int, last error) time.Duration {
	var herr *Error
	if errors.As(last, &herr) && herr.RetryAfter > 0 {
		return time.Duration(herr.RetryAfter) * time.Second
	}
	return min(100*time.Millisecond<<min(n-1, 6), 5*time.Second)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
