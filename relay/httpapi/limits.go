package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/relay/problem"
)

// Limits cap what callers may hold at one relay, so that one authorised pod opening thousands
// of streams or looping replays cannot exhaust file descriptors, memory or Redis for everyone
// else. A caller is who Config.Authorize named (a service account, "<namespace>/<name>"); the
// namespace caps bound a tenant that spreads its load over many service accounts. Zero fields
// mean no cap.
type Limits struct {
	Subscribers              int     // streams (SSE and WebSocket) of the relay, all callers together
	SubscribersPerCaller     int     // streams of one caller
	SubscribersPerNamespace  int     // streams of the callers of one namespace together
	ReplaysPerCaller         int     // streams of one caller still replaying stored events
	ReplaysPerNamespace      int     // streams of one namespace's callers still replaying
	ReplayRate               float64 // replays one caller may start per second (bursts of twice as many)
	BodiesPerCaller          int     // request bodies (publishes, interest changes) of one caller read at once
	InterestKeys             int     // keys the relay's interest streams follow, all callers together
	InterestKeysPerCaller    int     // keys the interest streams of one caller follow together
	InterestKeysPerNamespace int     // keys the interest streams of one namespace's callers follow together
	InterestChangeRate       float64 // interest changes one caller may make per second (bursts of twice as many)
}

// Refusal reasons, as the herald_relay_refused_total label and in 429 bodies.
const (
	RefusedSubscribers              = "subscribers"
	RefusedSubscribersPerCaller     = "subscribers_per_caller"
	RefusedSubscribersPerNamespace  = "subscribers_per_namespace"
	RefusedReplaysPerCaller         = "replays_per_caller"
	RefusedReplaysPerNamespace      = "replays_per_namespace"
	RefusedReplayRate               = "replay_rate"
	RefusedBodiesPerCaller          = "bodies_per_caller"
	RefusedInterestKeys             = "interest_keys"
	RefusedInterestKeysPerCaller    = "interest_keys_per_caller"
	RefusedInterestKeysPerNamespace = "interest_keys_per_namespace"
	RefusedInterestChangeRate       = "interest_change_rate"
)

// Refusals lists every refusal reason (metrics start each series at zero).
var Refusals = []string{RefusedSubscribers, RefusedSubscribersPerCaller, RefusedSubscribersPerNamespace,
	RefusedReplaysPerCaller, RefusedReplaysPerNamespace, RefusedReplayRate, RefusedBodiesPerCaller,
	RefusedInterestKeys, RefusedInterestKeysPerCaller, RefusedInterestKeysPerNamespace, RefusedInterestChangeRate}

type limiter struct {
	Limits
	mu         sync.Mutex
	all        share // the relay's, all callers together
	callers    map[string]*callerUse
	namespaces map[string]*share
	bodies     map[string]int // bodies being read, by caller: apart, so a publish costs a count
}

// share is what a caller, a namespace or the whole relay holds.
type share struct{ streams, replays, keys int }

func (s share) empty() bool { return s.streams == 0 && s.replays == 0 && s.keys == 0 }

type callerUse struct {
	share
	rate    *rate.Limiter // replays started
	changes *rate.Limiter // interest changes
}

// ticket is one admitted stream; its methods are safe on nil (no limits) and idempotent.
type ticket struct {
	l         *limiter
	caller    string
	replaying bool
	keys      int // the keys it holds of the interest budgets
	done      bool
}

func newLimiter(l Limits) *limiter {
	return &limiter{Limits: l, callers: map[string]*callerUse{}, namespaces: map[string]*share{}, bodies: map[string]int{}}
}

// namespaceOf is the namespace of a caller ("<namespace>/<name>"); "" for one without.
func namespaceOf(caller string) string {
	ns, _, _ := strings.Cut(caller, "/")
	return ns
}

// useLocked is caller's use, made (with its rate limiters) when it holds nothing yet; a use
// that ends up holding nothing is forgotten again (forgetLocked). l.mu is held.
func (l *limiter) useLocked(caller string) *callerUse {
	u := l.callers[caller]
	if u == nil {
		u = &callerUse{}
		if l.ReplayRate > 0 {
			u.rate = rate.NewLimiter(rate.Limit(l.ReplayRate), max(1, int(math.Ceil(2*l.ReplayRate))))
		}
		if l.InterestChangeRate > 0 {
			u.changes = rate.NewLimiter(rate.Limit(l.InterestChangeRate), max(1, int(math.Ceil(2*l.InterestChangeRate))))
		}
		l.callers[caller] = u
	}
	return u
}

// nsLocked is the share of caller's namespace; l.mu is held.
func (l *limiter) nsLocked(caller string) *share {
	ns := namespaceOf(caller)
	n := l.namespaces[ns]
	if n == nil {
		n = &share{}
		l.namespaces[ns] = n
	}
	return n
}

// add moves what caller holds (and its namespace and the relay) by d; l.mu is held.
func (l *limiter) addLocked(caller string, d share) {
	for _, s := range []*share{&l.all, &l.useLocked(caller).share, l.nsLocked(caller)} {
		s.streams += d.streams
		s.replays += d.replays
		s.keys += d.keys
	}
}

// keysRefusalLocked says which interest key budget n more keys of caller's would pass, or "".
func (l *limiter) keysRefusalLocked(caller string, n int) string {
	switch {
	case n <= 0:
		return ""
	case l.InterestKeys > 0 && l.all.keys+n > l.InterestKeys:
		return RefusedInterestKeys
	case l.InterestKeysPerCaller > 0 && l.useLocked(caller).keys+n > l.InterestKeysPerCaller:
		return RefusedInterestKeysPerCaller
	case l.InterestKeysPerNamespace > 0 && l.nsLocked(caller).keys+n > l.InterestKeysPerNamespace:
		return RefusedInterestKeysPerNamespace
	}
	return ""
}

// admit takes a stream for caller, a replay when replay is set, and keys of the interest
// budgets; otherwise it says which limit refused it and how many seconds to wait.
func (l *limiter) admit(caller string, replay bool, keys int) (t *ticket, reason string, retryAfter int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, ns := l.useLocked(caller), l.nsLocked(caller)
	switch {
	case l.Subscribers > 0 && l.all.streams >= l.Subscribers:
		reason, retryAfter = RefusedSubscribers, 5
	case l.SubscribersPerCaller > 0 && u.streams >= l.SubscribersPerCaller:
		reason, retryAfter = RefusedSubscribersPerCaller, 5
	case l.SubscribersPerNamespace > 0 && ns.streams >= l.SubscribersPerNamespace:
		reason, retryAfter = RefusedSubscribersPerNamespace, 5
	case replay && l.ReplaysPerCaller > 0 && u.replays >= l.ReplaysPerCaller:
		reason, retryAfter = RefusedReplaysPerCaller, 1
	case replay && l.ReplaysPerNamespace > 0 && ns.replays >= l.ReplaysPerNamespace:
		reason, retryAfter = RefusedReplaysPerNamespace, 1
	default:
		reason, retryAfter = l.keysRefusalLocked(caller, keys), 5
	}
	if reason == "" && replay && u.rate != nil {
		if r := u.rate.Reserve(); r.Delay() > 0 {
			r.Cancel()
			reason, retryAfter = RefusedReplayRate, max(1, int(math.Ceil(1/l.ReplayRate)))
		}
	}
	if reason != "" {
		l.forgetLocked(caller)
		return nil, reason, retryAfter
	}
	d := share{streams: 1, keys: keys}
	if replay {
		d.replays = 1
	}
	l.addLocked(caller, d)
	return &ticket{l: l, caller: caller, replaying: replay, keys: keys}, "", 0
}

// followKeys moves the keys t holds of the interest budgets to n; more keys than before are
// taken only within the budgets (it returns the refusing limit otherwise, and takes nothing).
func (t *ticket) followKeys(n int) (refused string) {
	if t == nil {
		return ""
	}
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	if t.done {
		return ""
	}
	if reason := t.l.keysRefusalLocked(t.caller, n-t.keys); reason != "" {
		return reason
	}
	t.l.addLocked(t.caller, share{keys: n - t.keys})
	t.keys = n
	return ""
}

// allowChange takes one of caller's interest changes from its rate; false when it changes
// faster than InterestChangeRate.
func (l *limiter) allowChange(caller string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.useLocked(caller)
	ok := u.changes == nil || u.changes.Allow()
	l.forgetLocked(caller)
	return ok
}

// ReplayDone gives the replay back once the stream is live (or over).
func (t *ticket) ReplayDone() {
	if t == nil {
		return
	}
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	if t.replaying {
		t.replaying = false
		t.l.addLocked(t.caller, share{replays: -1})
	}
}

// Release gives the stream back when it ends.
func (t *ticket) Release() {
	if t == nil {
		return
	}
	t.ReplayDone()
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	t.l.addLocked(t.caller, share{streams: -1, keys: -t.keys})
	t.l.forgetLocked(t.caller)
}

// forgetLocked forgets a caller (and its namespace) that holds nothing, once its rates are whole
// again, so the maps hold only those that hold something; l.mu is held.
func (l *limiter) forgetLocked(caller string) {
	if u := l.callers[caller]; u != nil && u.empty() && whole(u.rate) && whole(u.changes) {
		delete(l.callers, caller)
	}
	if ns := namespaceOf(caller); l.namespaces[ns] != nil && l.namespaces[ns].empty() {
		delete(l.namespaces, ns)
	}
}

// whole reports whether a rate limiter has its whole burst again (nil: no limit).
func whole(r *rate.Limiter) bool { return r == nil || r.TokensAt(time.Now()) >= float64(r.Burst()) }

// admitBody takes one of caller's body reads (give it back with releaseBody); false when the
// caller reads BodiesPerCaller bodies already.
func (l *limiter) admitBody(caller string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bodies[caller] >= l.BodiesPerCaller {
		return false
	}
	l.bodies[caller]++
	return true
}

func (l *limiter) releaseBody(caller string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bodies[caller]--; l.bodies[caller] <= 0 {
		delete(l.bodies, caller)
	}
}

// readBody reads a request body as ReadBody does, within the caller's share of body reads
// (BodiesPerCaller, else 429) and the body read timeout.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64, tooLarge string) ([]byte, bool) {
	if s.limits != nil && s.cfg.Limits.BodiesPerCaller > 0 {
		caller := callerOf(r)
		if !s.limits.admitBody(caller) {
			s.refuse(w, r, RefusedBodiesPerCaller, 1)
			return nil, false
		}
		defer s.limits.releaseBody(caller)
	}
	return ReadBody(w, r, limit, s.cfg.BodyReadTimeout, tooLarge)
}

// admitStream admits a subscribe call or answers 429 Too Many Requests with Retry-After.
func (s *Server) admitStream(w http.ResponseWriter, r *http.Request, req subscribeRequest) (*ticket, bool) {
	if s.limits == nil {
		return nil, true
	}
	keys := 0
	if req.interest != nil {
		keys = len(req.interest.Keys)
	}
	t, reason, retry := s.limits.admit(callerOf(r), req.from != nil, keys)
	if t != nil {
		return t, true
	}
	s.refuse(w, r, reason, retry)
	return nil, false
}

// refuse answers 429 Too Many Requests for the limit reason, with Retry-After: retry seconds.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, reason string, retry int) {
	s.cfg.Metrics.Refused.WithLabelValues(reason).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	problem.WriteWith(w, http.StatusTooManyRequests, refusalMessage(reason, s.cfg.Limits), map[string]any{"limit": reason, "caller": callerOf(r)})
}

func refusalMessage(reason string, l Limits) string {
	switch reason {
	case RefusedSubscribers:
		return "this relay serves " + strconv.Itoa(l.Subscribers) + " streams already; retry after the Retry-After seconds (another replica may have room)"
	case RefusedSubscribersPerCaller:
		return "your service account holds " + strconv.Itoa(l.SubscribersPerCaller) + " streams at this relay already; close some, or retry after the Retry-After seconds"
	case RefusedSubscribersPerNamespace:
		return "the service accounts of your namespace hold " + strconv.Itoa(l.SubscribersPerNamespace) + " streams at this relay already; close some, or retry after the Retry-After seconds"
	case RefusedReplaysPerNamespace:
		return "the service accounts of your namespace run " + strconv.Itoa(l.ReplaysPerNamespace) + " replays at this relay already; retry after the Retry-After seconds"
	case RefusedInterestKeysPerNamespace:
		return "the interest streams of your namespace at this relay would follow more than " + strconv.Itoa(l.InterestKeysPerNamespace) + " keys; follow fewer, or every key (?interest=all, one entry)"
	case RefusedReplaysPerCaller:
		return "your service account runs " + strconv.Itoa(l.ReplaysPerCaller) + " replays at this relay already; retry after the Retry-After seconds"
	case RefusedBodiesPerCaller:
		return "your service account sends " + strconv.Itoa(l.BodiesPerCaller) + " request bodies to this relay at once already; retry after the Retry-After seconds"
	case RefusedInterestKeys:
		return "this relay's interest streams follow " + strconv.Itoa(l.InterestKeys) + " keys in all; retry after the Retry-After seconds (another replica may have room)"
	case RefusedInterestKeysPerCaller:
		return "your service account's interest streams at this relay would follow more than " + strconv.Itoa(l.InterestKeysPerCaller) + " keys; follow fewer, or every key (?interest=all, one entry)"
	case RefusedInterestChangeRate:
		return "your service account changes interest streams faster than " + strconv.FormatFloat(l.InterestChangeRate, 'g', -1, 64) + " times per second at this relay; send changes together, or retry after the Retry-After seconds"
	default:
		return "your service account starts replays faster than " + strconv.FormatFloat(l.ReplayRate, 'g', -1, 64) + " per second at this relay; retry after the Retry-After seconds"
	}
}
