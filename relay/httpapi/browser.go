package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/rs/cors"
)

// SSERetry opens every SSE stream: the reconnection delay (milliseconds) an EventSource waits
// after the stream breaks before it reconnects with Last-Event-ID.
const SSERetry = "retry: 2000\n\n"

// CloudEventsSubprotocol is the WebSocket subprotocol of CloudEvents in JSON (the CloudEvents
// WebSocket binding): each text frame is one structured CloudEvent, as Herald sends anyway.
const CloudEventsSubprotocol = "cloudevents.json"

// Browser is what web pages need from a relay or a sidecar.
type Browser struct {
	// CORSOrigins may call publish and open streams from a page (CORS), e.g.
	// "https://app.example.com" or "https://*.example.com"; "*" is any origin. None: no CORS
	// headers, so browsers keep pages of other origins out.
	CORSOrigins []string
	// WSOriginPatterns are the Origin hosts a WebSocket is accepted from besides the request's
	// own Host (path.Match patterns, e.g. "app.example.com" or "*.example.com"): needed behind a
	// reverse proxy that rewrites Host. The hosts of CORSOrigins are accepted too.
	WSOriginPatterns []string
}

// Handler answers CORS preflights and adds CORS headers for the allowed origins; without any it
// returns h unchanged.
func (b Browser) Handler(h http.Handler) http.Handler {
	if len(b.CORSOrigins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: b.CORSOrigins,
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost},
		// Content-Type, Idempotency-Key, Last-Event-ID, Authorization, the ce-* attributes and
		// the trace context: a CloudEvents producer sends headers nobody can list in advance.
		AllowedHeaders: []string{"*"},
		ExposedHeaders: []string{"Idempotency-Key", "Retry-After", "WWW-Authenticate"},
		MaxAge:         600,
	}).Handler(h)
}

// wsOrigins is the Origin patterns a WebSocket is accepted from: hosts, and the CORS origins as
// scheme://host patterns.
func (b Browser) wsOrigins() []string {
	out := append([]string(nil), b.WSOriginPatterns...)
	for _, o := range b.CORSOrigins {
		if o == "*" {
			return []string{"*"}
		}
		out = append(out, o)
	}
	return out
}

// RefuseWebSocket answers, as a problem, a WebSocket request that is not an upgrade or comes
// from an origin the flags do not allow. It reports whether it did.
func (st Streams) RefuseWebSocket(w http.ResponseWriter, r *http.Request) bool {
	return st.Browser.refuseWebSocket(w, r)
}

// refuseWebSocket answers, as a problem, a request the WebSocket library would refuse in plain
// text (refuseOrigin, refuseNotUpgrade). It reports whether it did.
func (b Browser) refuseWebSocket(w http.ResponseWriter, r *http.Request) bool {
	return b.refuseOrigin(w, r) || refuseNotUpgrade(w, r)
}

// refuseNotUpgrade answers 426 to a request that is not a WebSocket upgrade.
func refuseNotUpgrade(w http.ResponseWriter, r *http.Request) bool {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		WriteError(w, http.StatusUpgradeRequired, "this is a WebSocket endpoint: send a WebSocket upgrade request (the same stream as Server-Sent Events is at .../events)")
		return true
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		WriteError(w, http.StatusUpgradeRequired, "Sec-WebSocket-Version "+strconv.Quote(clip(v))+" is not spoken here: use 13 (RFC 6455)")
		return true
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(key) != 16 {
		WriteError(w, http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 4.1)")
		return true
	}
	return false
}

// refuseOrigin answers 403 to a WebSocket whose Origin is another host that no pattern allows:
// a page of another site must not act with the caller's credentials.
func (b Browser) refuseOrigin(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	if err == nil && strings.EqualFold(u.Host, r.Host) {
		return false
	}
	if err == nil && u.Host != "" {
		for _, p := range b.wsOrigins() {
			target := u.Host
			if strings.Contains(p, "://") {
				target = u.Scheme + "://" + u.Host
			}
			if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
				return false
			}
		}
	}
	WriteError(w, http.StatusForbidden, "WebSocket from Origin "+strconv.Quote(clip(origin))+" refused: it is not this host ("+
		strconv.Quote(clip(r.Host))+") and --ws-origin-patterns / --cors-allowed-origins do not allow it")
	return true
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Streams serves subscriber streams: SSE or WebSocket, with the settings both need.
type Streams struct {
	WriteTimeout time.Duration // bound of one batch write
	Browser      Browser
}

// copiedHeaders are the response headers a hijacked stream copies from w: what the CORS
// handler set, and the interest stream's mark.
var copiedHeaders = []string{"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Vary", InterestHeader}

// streamHeader is the response header of a hijacked SSE stream, with any CORS headers (and
// interest mark) already set on w, and the stream's opening retry field.
func streamHeader(w http.ResponseWriter) []byte {
	h := w.Header()
	if h.Get("Access-Control-Allow-Origin") == "" && h.Get(InterestHeader) == "" {
		return []byte(sseHeader + SSERetry)
	}
	var b bytes.Buffer
	b.WriteString(sseHeader[:len(sseHeader)-2])
	for _, name := range copiedHeaders {
		for _, v := range h.Values(name) {
			b.WriteString(name + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n" + SSERetry)
	return b.Bytes()
}

// HoldSSE answers an SSE request 200 at once, for a stream that cannot start yet: an
// EventSource gives up on any other answer, while a held stream starts when ready and, if it
// must end instead, ends with a comment and is retried after the retry delay. It returns the
// writer to serve the stream with: its WriteHeader does nothing (the header is sent), and an
// error written through it becomes an SSE comment.
func HoldSSE(w http.ResponseWriter) http.ResponseWriter {
	_ = startSSE(w) // a failed write shows in the next one
	return &heldSSE{ResponseWriter: w}
}

// Comment writes an SSE comment (a line that EventSource ignores) and flushes it.
func Comment(w http.ResponseWriter, text string) error {
	if _, err := w.Write([]byte(": " + oneLine(text) + "\n\n")); err != nil {
		return err
	}
	return http.NewResponseController(w).Flush()
}

type heldSSE struct {
	http.ResponseWriter
	failed bool // an error status was written: the body becomes a comment
}

func (h *heldSSE) WriteHeader(code int) { h.failed = code != http.StatusOK }

func (h *heldSSE) Write(b []byte) (int, error) {
	if !h.failed {
		return h.ResponseWriter.Write(b)
	}
	if err := Comment(h.ResponseWriter, "error: "+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (h *heldSSE) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// oneLine keeps text on one SSE line.
func oneLine(s string) string {
	return string(bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, bytes.TrimSpace([]byte(s))))
}

// WaitSSE holds an SSE stream (HoldSSE) until ready reports nil: it tries every second and
// tells the subscriber why it waits in a comment. It returns the writer to serve the stream
// with, or nil when the subscriber left first.
func WaitSSE(ctx context.Context, w http.ResponseWriter, ready func(context.Context) error) http.ResponseWriter {
	err := ready(ctx)
	if err == nil {
		return w
	}
	w = HoldSSE(w)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if Comment(w, "waiting: "+err.Error()) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err = ready(ctx); err == nil {
			return w
		}
	}
}
