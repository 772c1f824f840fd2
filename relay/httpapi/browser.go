package httpapi

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/rs/cors"

	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/publish"
)

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
		ExposedHeaders: []string{publish.IdempotencyKeyHeader, "Retry-After", "WWW-Authenticate"},
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
// from an origin the flags do not allow (refuseOrigin, refuseNotUpgrade). It reports whether it
// did.
func (b Browser) RefuseWebSocket(w http.ResponseWriter, r *http.Request) bool {
	return b.refuseOrigin(w, r) || refuseNotUpgrade(w, r)
}

// refuseNotUpgrade answers 426 to a request that is not a WebSocket upgrade.
func refuseNotUpgrade(w http.ResponseWriter, r *http.Request) bool {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		problem.Write(w, http.StatusUpgradeRequired, "this is a WebSocket endpoint: send a WebSocket upgrade request (the same stream as Server-Sent Events is at .../events)")
		return true
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		problem.Write(w, http.StatusUpgradeRequired, "Sec-WebSocket-Version "+strconv.Quote(clip(v))+" is not spoken here: use 13 (RFC 6455)")
		return true
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(key) != 16 {
		problem.Write(w, http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 4.1)")
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
	problem.Write(w, http.StatusForbidden, "WebSocket from Origin "+strconv.Quote(clip(origin))+" refused: it is not this host ("+
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
