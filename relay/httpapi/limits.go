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
	Subscribers          int     // streams (SSE and WebSocket) of the relay, all callers together
	SubscribersPerCaller int     // streams of one caller
	ReplaysPerCaller     int     // streams of one caller still replaying stored events
	ReplayRate           float64 // replays one caller may start per second (bursts of twice as many)
	BodiesPerCaller      int     // request bodies (publishes, interest changes) of one caller read at once
}

// Refusal reasons, as the herald_relay_refused_total label and in 429 bodies.
const (
	RefusedSubscribers          = "subscribers"
	RefusedSubscribersPerCaller = "subscribers_per_caller"
	RefusedReplaysPerCaller     = "replays_per_caller"
	RefusedReplayRate           = "replay_rate"
	RefusedBodiesPerCaller      = "bodies_per_caller"
)

type limiter struct {
	Limits
	mu      sync.Mutex
	total   int
	callers map[string]*callerUse
}

type callerUse struct {
	streams, replays, bodies int
	rate                     *rate.Limiter
}

// ticket is one admitted stream; its methods are safe on nil (no limits) and idempotent.
type ticket struct {
	l         *limiter
	caller    string
	replaying bool
	done      bool
}

func newLimiter(l Limits) *limiter { return &limiter{Limits: l, callers: map[string]*callerUse{}} }

// admit takes a stream for caller, and a replay when replay is set; otherwise it says which
// limit refused it and how many seconds to wait.
func (l *limiter) admit(caller string, replay bool) (t *ticket, reason string, retryAfter int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.callers[caller]
	if u == nil {
		u = &callerUse{}
		if l.ReplayRate > 0 {
			u.rate = rate.NewLimiter(rate.Limit(l.ReplayRate), max(1, int(math.Ceil(2*l.ReplayRate))))
		}
	}
	switch {
	case l.Subscribers > 0 && l.total >= l.Subscribers:
		return nil, RefusedSubscribers, 5
	case l.SubscribersPerCaller > 0 && u.streams >= l.SubscribersPerCaller:
		return nil, RefusedSubscribersPerCaller, 5
	case replay && l.ReplaysPerCaller > 0 && u.replays >= l.ReplaysPerCaller:
		return nil, RefusedReplaysPerCaller, 1
	}
	if replay && u.rate != nil {
		if r := u.rate.Reserve(); r.Delay() > 0 {
			r.Cancel()
			return nil, RefusedReplayRate, max(1, int(math.Ceil(1/l.ReplayRate)))
		}
	}
	l.callers[caller] = u
	l.total++
	u.streams++
	if replay {
		u.replays++
	}
	return &ticket{l: l, caller: caller, replaying: replay}, "", 0
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
	u := t.l.callers[t.caller]
	u.streams--
	t.l.forgetLocked(t.caller, u)
}

// forgetLocked forgets a caller that holds nothing once its replay budget is whole again, so
// the map holds only callers that hold something; l.mu is held.
func (l *limiter) forgetLocked(caller string, u *callerUse) {
	if u.streams == 0 && u.bodies == 0 && (u.rate == nil || u.rate.TokensAt(time.Now()) >= float64(u.rate.Burst())) {
		delete(l.callers, caller)
	}
}

// admitBody takes one of caller's body reads; release gives it back. ok is false when the
// caller reads BodiesPerCaller bodies already.
func (l *limiter) admitBody(caller string) (release func(), ok bool) {
	if l.BodiesPerCaller <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.callers[caller]
	if u == nil {
		u = &callerUse{}
		l.callers[caller] = u
	}
	if u.bodies >= l.BodiesPerCaller {
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
			s.cfg.Metrics.Refused.WithLabelValues(RefusedBodiesPerCaller).Inc()
			w.Header().Set("Retry-After", "1")
			problem.WriteWith(w, http.StatusTooManyRequests, "your service account sends "+strconv.Itoa(s.cfg.Limits.BodiesPerCaller)+
				" request bodies to this relay at once already; retry after the Retry-After seconds", map[string]any{"limit": RefusedBodiesPerCaller, "caller": callerOf(r)})
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
	t, reason, retry := s.limits.admit(callerOf(r), req.from != nil)
	if t != nil {
		return t, true
	}
	s.cfg.Metrics.Refused.WithLabelValues(reason).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	problem.WriteWith(w, http.StatusTooManyRequests, refusalMessage(reason, s.cfg.Limits), map[string]any{"limit": reason, "caller": callerOf(r)})
	return nil, false
}

func refusalMessage(reason string, l Limits) string {
	switch reason {
	case RefusedSubscribers:
		return "this relay serves " + strconv.Itoa(l.Subscribers) + " streams already; retry after the Retry-After seconds (another replica may have room)"
	case RefusedSubscribersPerCaller:
		return "your service account holds " + strconv.Itoa(l.SubscribersPerCaller) + " streams at this relay already; close some, or retry after the Retry-After seconds"
	case RefusedReplaysPerCaller:
		return "your service account runs " + strconv.Itoa(l.ReplaysPerCaller) + " replays at this relay already; retry after the Retry-After seconds"
	default:
		return "your service account starts replays faster than " + strconv.FormatFloat(l.ReplayRate, 'g', -1, 64) + " per second at this relay; retry after the Retry-After seconds"
	}
}
