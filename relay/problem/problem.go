// Package problem writes Herald's HTTP API errors as RFC 9457 problem details
// (application/problem+json), the same for every role: a shard relay, a sidecar.
package problem

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// Base prefixes the type URI of every error Herald answers (RFC 9457). The URIs name the
// kinds of error; docs/relay.md lists them. They are identifiers, not pages to fetch.
const Base = "https://herald.dev/problems/"

// problemTypes: one kind of error per status, as the API uses each status for one thing.
var problemTypes = map[int]string{
	http.StatusBadRequest:            "invalid-request",
	http.StatusUnauthorized:          "unauthenticated",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not-found",
	http.StatusMethodNotAllowed:      "method-not-allowed",
	http.StatusRequestTimeout:        "request-timeout",
	http.StatusConflict:              "idempotency-key-reused",
	http.StatusRequestEntityTooLarge: "message-too-large",
	http.StatusUnsupportedMediaType:  "unsupported-media-type",
	http.StatusMisdirectedRequest:    "wrong-shard",
	http.StatusUpgradeRequired:       "upgrade-required",
	http.StatusTooManyRequests:       "limit-reached",
	http.StatusInternalServerError:   "internal-error",
	http.StatusServiceUnavailable:    "unavailable",
}

// Type is the type URI of errors answered with status.
func Type(status int) string {
	if t, ok := problemTypes[status]; ok {
		return Base + t
	}
	return "about:blank"
}

// problem is the RFC 9457 members, in the order a reader expects them.
type problem struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail"`
	Error      string `json:"error"` // the detail again: what clients of the first API read
	RetryAfter int    `json:"retryAfter,omitempty"`
}

// Write answers status with an application/problem+json body whose detail says what is wrong
// and what to do (WriteWith without extension members).
func Write(w http.ResponseWriter, status int, detail string) { WriteWith(w, status, detail, nil) }

// WriteWith answers status with an application/problem+json body: type, title, status, detail,
// the same detail as "error", retryAfter when a Retry-After header was set, and ext as
// extension members (e.g. shard and endpoint for 421).
func WriteWith(w http.ResponseWriter, status int, detail string, ext map[string]any) {
	p := problem{Type: Type(status), Title: http.StatusText(status), Status: status, Detail: detail, Error: detail}
	if s, err := strconv.Atoi(w.Header().Get("Retry-After")); err == nil {
		p.RetryAfter = s
	}
	b, err := marshal(p)
	if err == nil && len(ext) > 0 {
		var more []byte
		if more, err = marshal(ext); err == nil && len(more) > 2 {
			b = append(append(b[:len(b)-1], ','), more[1:]...) // {...} + {...} = {..., ...}
		}
	}
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"type":"about:blank","status":500,"error":"encoding the error failed"}`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// marshal is json.Marshal without escaping <, > and &: the details are read by people, in curl.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
