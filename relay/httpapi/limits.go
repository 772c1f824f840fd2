package httpapi

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/relay/problem"
)

// Limits cap what callers may hold at one relay, so that one authorised pod opening thousands
// of streams or looping replays cannot exhaust file descriptors, memory or Redis for everyone
// else. A caller is who Config.Authorize named (a service account); zero fields mean no cap.
type Limits struct {
	Subscribers           int     // streams (SSE and WebSocket) of the relay, all callers together
	SubscribersPerCaller  int     // streams of one caller
	ReplaysPerCaller      int     // streams of one caller still replaying stored events
	ReplayRate            float64 // replays one caller may start per second (bursts of twice as many)
	BodiesPerCaller       int     // request bodies (publishes, interest changes) of one caller read at once
	InterestKeys          int     // keys the relay's interest streams follow, all callers together
	InterestKeysPerCaller int     // keys the interest streams of one caller follow together
	InterestChangeRate    float64 // interest changes one caller may make per second (bursts of twice as many)
}

// Refusal reasons, as the herald_relay_refused_total label and in 429 bodies.
const (
	RefusedSubscribers           = "subscribers"
	RefusedSubscribersPerCaller  = "subscribers_per_caller"
	RefusedReplaysPerCaller      = "replays_per_caller"
	RefusedReplayRate            = "replay_rate"
	RefusedBodiesPerCaller       = "bodies_per_caller"
	RefusedInterestKeys          = "interest_keys"
	RefusedInterestKeysPerCaller = "interest_keys_per_caller"
	RefusedInterestChangeRate    = "interest_change_rate"
)

type limiter struct {
	Limits
	mu      sync.Mutex
	total   int // streams
	keys    int // keys of interest streams
	callers map[string]*callerUse
}

type callerUse struct {
	streams, replays, bodies, keys int
	rate                           *rate.Limiter // replays started
	changes                        *rate.Limiter // interest changes
}

// ticket is one admitted stream; its methods are safe on nil (no limits) and idempotent.
type ticket struct {
	l         *limiter
	caller    string
	replaying bool
	keys      int // the keys it holds of the interest budgets
	done      bool
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

// keysRefusalLocked says which interest key budget n more keys of caller's would pass, or "".
func (l *limiter) keysRefusalLocked(u *callerUse, n int) string {
	switch {
	case n <= 0:
		return ""
	case l.InterestKeys > 0 && l.keys+n > l.InterestKeys:
		return RefusedInterestKeys
	case l.InterestKeysPerCaller > 0 && u.keys+n > l.InterestKeysPerCaller:
		return RefusedInterestKeysPerCaller
	}
	return ""
}

func newLimiter(l Limits) *limiter { return &limiter{Limits: l, callers: map[string]*callerUse{}} }

// admit takes a stream for caller, a replay when replay is set, and keys of the interest
// budgets; otherwise it says which limit refused it and how many seconds to wait.
func (l *limiter) admit(caller string, replay bool, keys int) (t *ticket, reason string, retryAfter int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.useLocked(caller)
	switch {
	case l.Subscribers > 0 && l.total >= l.Subscribers:
		reason, retryAfter = RefusedSubscribers, 5
	case l.SubscribersPerCaller > 0 && u.streams >= l.SubscribersPerCaller:
		reason, retryAfter = RefusedSubscribersPerCaller, 5
	case replay && l.ReplaysPerCaller > 0 && u.replays >= l.ReplaysPerCaller:
		reason, retryAfter = RefusedReplaysPerCaller, 1
	default:
		reason, retryAfter = l.keysRefusalLocked(u, keys), 5
	}
	if reason == "" && replay && u.rate != nil {
		if r := u.rate.Reserve(); r.Delay() > 0 {
			r.Cancel()
			reason, retryAfter = RefusedReplayRate, max(1, int(math.Ceil(1/l.ReplayRate)))
		}
	}
	if reason != "" {
		l.forgetLocked(caller, u)
		return nil, reason, retryAfter
	}
	l.total++
	u.streams++
	if replay {
		u.replays++
	}
	l.keys += keys
	u.keys += keys
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
	u := t.l.callers[t.caller]
	if reason := t.l.keysRefusalLocked(u, n-t.keys); reason != "" {
		return reason
	}
	t.l.keys += n - t.keys
	u.keys += n - t.keys
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
	l.forgetLocked(caller, u)
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
		t.l.callers[t.caller].replays--
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
	t.l.total--
	t.l.keys -= t.keys
	u := t.l.callers[t.caller]
	u.streams--
	u.keys -= t.keys
	t.l.forgetLocked(t.caller, u)
}

// forgetLocked forgets a caller that holds nothing once its replay budget is whole again, so
// the map holds only callers that hold something; l.mu is held.
func (l *limiter) forgetLocked(caller string, u *callerUse) {
	if u.streams == 0 && u.bodies == 0 && whole(u.rate) && whole(u.changes) {
		delete(l.callers, caller)
	}
}

// whole reports whether a rate limiter has its whole burst again (nil: no limit).
func whole(r *rate.Limiter) bool { return r == nil || r.TokensAt(time.Now()) >= float64(r.Burst()) }

// admitBody takes one of caller's body reads; release gives it back. ok is false when the
// caller reads BodiesPerCaller bodies already.
func (l *limiter) admitBody(caller string) (release func(), ok bool) {
	if l.BodiesPerCaller <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.useLocked(caller)
	if u.bodies >= l.BodiesPerCaller {
		l.forgetLocked(caller, u)
		return nil, false
	}
	u.bodies++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		u.bodies--
		l.forgetLocked(caller, u)
	}, true
}

// readBody reads a request body as ReadBody does, within the caller's share of body reads
// (BodiesPerCaller, else 429) and the body read timeout.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64, tooLarge string) ([]byte, bool) {
	if s.limits != nil {
		release, ok := s.limits.admitBody(callerOf(r))
		if !ok {
			s.refuse(w, r, RefusedBodiesPerCaller, 1)
			return nil, false
		}
		defer release()
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
