package sidecar

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/stream"
	"github.com/heraldhq/herald/relay/usertoken"
)

// An edge is this package's relay serving end users (browsers, phones) instead of its pod's
// app: Options.Edge set. It reaches the shard relays exactly as a sidecar does (one interest
// stream per shard, carrying only what its users follow); what differs is the front door:
//
//   - every call carries an end user's token (usertoken), checked locally; a stream follows
//     only keys and prefixes the token grants (all of them when it names none), and a publish
//     needs a publish grant for its key;
//   - a stream ends, with a reason and its cursor, when its token expires;
//   - a WebSocket takes commands: follow and unfollow keys, a fresh token (commands.go);
//   - limits per user (the token's sub) and per client address answer 429;
//   - the shard map and the metrics are not served to end users.

// EdgeOptions make a sidecar an edge. Zero limits take the documented defaults.
type EdgeOptions struct {
	Users             *usertoken.Verifier // required: checks end users' tokens
	StreamsPerUser    int                 // streams one user (token sub) holds at once. Defaults to 32: tabs and devices.
	StreamsPerAddress int                 // streams one client address holds at once. Defaults to 1000: many users share an office's NAT.
	KeysPerStream     int                 // keys and prefixes one stream follows. Defaults to 100.
	// TrustForwardedFor counts streams by the address the nearest proxy appended to
	// X-Forwarded-For (an Ingress controller's) instead of the connection's peer, which behind a
	// proxy is the proxy's own.
	TrustForwardedFor bool
	// DrainSpread is how long a shutdown takes to end the edge's streams, spread evenly, each
	// told to reconnect (they resume by cursor at another pod). Defaults to DefaultDrainSpread.
	DrainSpread time.Duration
}

const (
	// DefaultDrainSpread is how long an edge that is shutting down takes to send its users
	// elsewhere: a few seconds, inside Kubernetes' 30 s grace period, so that the edge pods
	// left take the reconnects a few at a time.
	DefaultDrainSpread = 5 * time.Second

	defaultStreamsPerUser    = 32
	defaultStreamsPerAddress = 1000
	defaultKeysPerStream     = 100
)

func (o *EdgeOptions) setDefaults() {
	if o.StreamsPerUser <= 0 {
		o.StreamsPerUser = defaultStreamsPerUser
	}
	if o.StreamsPerAddress <= 0 {
		o.StreamsPerAddress = defaultStreamsPerAddress
	}
	if o.KeysPerStream <= 0 {
		o.KeysPerStream = defaultKeysPerStream
	}
	if o.DrainSpread <= 0 {
		o.DrainSpread = DefaultDrainSpread
	}
}

// edge is the state of an edge's front door.
type edge struct {
	opt EdgeOptions

	mu        sync.Mutex
	byUser    map[string]int
	byAddress map[string]int
}

func newEdge(o EdgeOptions) *edge {
	o.setDefaults()
	return &edge{opt: o, byUser: map[string]int{}, byAddress: map[string]int{}}
}

type grantKey struct{}

// grantOf is the grant of the request's token at an edge, nil in a sidecar.
func grantOf(r *http.Request) *usertoken.Grant {
	g, _ := r.Context().Value(grantKey{}).(*usertoken.Grant)
	return g
}

// authenticate checks the token of a call at the edge and returns the request carrying its
// grant, or answers 401 and returns nil.
func (e *edge) authenticate(w http.ResponseWriter, r *http.Request) *http.Request {
	raw, ok := usertoken.FromRequest(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		problem.Write(w, http.StatusUnauthorized, "no token: send the token the app gave you as Authorization: Bearer <token>, the token query parameter or the "+usertoken.CookieName+" cookie")
		return nil
	}
	g, err := e.opt.Users.Verify(r.Context(), raw)
	if err != nil {
		refusal, _ := err.(*usertoken.Error)
		if refusal == nil {
			refusal = &usertoken.Error{Status: http.StatusUnauthorized, Detail: err.Error()}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald", error="invalid_token"`)
		problem.Write(w, refusal.Status, refusal.Detail)
		return nil
	}
	return r.WithContext(context.WithValue(r.Context(), grantKey{}, g))
}

// follows checks what a stream asks to follow against its grant: keys (none: all the grant
// allows) within the per-stream bound, each granted. It answers 400 or 403 and returns nil
// when it refuses.
func (e *edge) follows(w http.ResponseWriter, g *usertoken.Grant, keys []string) []string {
	if len(keys) == 0 {
		if keys = g.Follows(); len(keys) == 0 {
			problem.Write(w, http.StatusForbidden, "the token grants no keys to follow (its herald.follow claim is empty)")
			return nil
		}
	}
	if len(keys) > e.opt.KeysPerStream {
		problem.Write(w, http.StatusBadRequest, "a stream at the edge follows at most "+strconv.Itoa(e.opt.KeysPerStream)+" keys and prefixes; this one asks for "+strconv.Itoa(len(keys)))
		return nil
	}
	for _, k := range keys {
		if !g.MayFollow(k) {
			problem.WriteWith(w, http.StatusForbidden, "the token does not grant following "+strconv.Quote(k), map[string]any{"key": k})
			return nil
		}
	}
	return keys
}

// admit counts a stream against its user's and its address's limits, or answers 429; release
// gives it back.
func (e *edge) admit(w http.ResponseWriter, r *http.Request, g *usertoken.Grant) (release func(), ok bool) {
	addr := e.clientAddress(r)
	e.mu.Lock()
	defer e.mu.Unlock()
	var refusal string
	switch {
	case e.byUser[g.Subject] >= e.opt.StreamsPerUser:
		refusal = "user " + strconv.Quote(g.Subject) + " holds " + strconv.Itoa(e.opt.StreamsPerUser) + " streams at this edge already; close one"
	case e.byAddress[addr] >= e.opt.StreamsPerAddress:
		refusal = "your address holds " + strconv.Itoa(e.opt.StreamsPerAddress) + " streams at this edge already; close some"
	}
	if refusal != "" {
		w.Header().Set("Retry-After", "5")
		problem.Write(w, http.StatusTooManyRequests, refusal+", or retry after the Retry-After seconds")
		return nil, false
	}
	e.byUser[g.Subject]++
	e.byAddress[addr]++
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.byUser[g.Subject]--; e.byUser[g.Subject] == 0 {
				delete(e.byUser, g.Subject)
			}
			if e.byAddress[addr]--; e.byAddress[addr] == 0 {
				delete(e.byAddress, addr)
			}
		})
	}, true
}

// clientAddress is whom a stream is counted against: the connection's peer, or behind a trusted
// proxy the address it appended to X-Forwarded-For.
func (e *edge) clientAddress(r *http.Request) string {
	if e.opt.TrustForwardedFor {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			list := strings.Split(xff[len(xff)-1], ",")
			if a := strings.TrimSpace(list[len(list)-1]); a != "" {
				return a
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// expireWith ends sub when g's token expires (after the verifier's leeway): the subscriber is
// told why and where to resume, and comes back with a fresh token. A WebSocket that sends a
// fresh token re-arms the returned timer (commands.go).
func (e *edge) expireWith(sub *hub.Subscriber, g *usertoken.Grant) *time.Timer {
	t := time.AfterFunc(e.untilExpiry(g), func() {
		sub.Stop(&stream.Ended{Reason: "the token expired; get a fresh one from the app", Code: stream.StatusTokenExpired})
	})
	sub.OnClose(func() { t.Stop() })
	return t
}

// untilExpiry is how long a stream of g's token lives on.
func (e *edge) untilExpiry(g *usertoken.Grant) time.Duration {
	return time.Until(g.Expiry) + e.opt.Users.Leeway()
}

// drain ends every stream of an edge that is shutting down, spread over DrainSpread, each told
// to reconnect (WebSocket 1012, Service Restart): the Service sends them to the pods left, where
// they resume by cursor, a few at a time rather than all at once.
func (e *edge) drain(channels []*channel) {
	ctx, cancel := context.WithTimeout(context.Background(), e.opt.DrainSpread+time.Second)
	defer cancel()
	going := &stream.Ended{Reason: "this edge is shutting down", Code: 1012}
	var hubs []*hub.Hub
	for _, ch := range channels {
		hubs = append(hubs, ch.all)
		ch.startMu.Lock()
		for _, st := range ch.streams {
			hubs = append(hubs, st.keyed)
		}
		ch.startMu.Unlock()
	}
	var wg sync.WaitGroup
	for _, h := range hubs {
		wg.Add(1)
		go func() { defer wg.Done(); h.Drain(ctx, going, e.opt.DrainSpread) }()
	}
	wg.Wait()
}
