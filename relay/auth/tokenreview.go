package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	authv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
)

// DefaultAudience is the audience of the tokens sidecars present.
const DefaultAudience = "herald"

// ErrInvalidToken means the API server did not accept the token for the audience (expired,
// revoked, forged, another audience, the service account deleted).
var ErrInvalidToken = errors.New("the bearer token was not accepted")

// Identity is an authenticated caller.
type Identity struct {
	Username       string // as the API server names it, e.g. system:serviceaccount:shop:checkout
	Namespace      string // the service account's namespace; "" for callers that are not service accounts
	ServiceAccount string // the service account's name; "" likewise
}

// ParseServiceAccount reads "system:serviceaccount:<namespace>:<name>"; ok is false for any
// other username.
func ParseServiceAccount(username string) (namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(username, "system:serviceaccount:")
	if !found {
		return "", "", false
	}
	namespace, name, found = strings.Cut(rest, ":")
	if !found || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}

// ReviewerOptions tune a TokenReviewer. Zero values take the defaults.
type ReviewerOptions struct {
	Audience   string        // the audience tokens must carry. Defaults to DefaultAudience.
	TTL        time.Duration // how long an answer (valid or invalid) is reused, never past the token's exp. Defaults to 1m.
	MaxEntries int           // valid answers remembered at most. Defaults to 4096.
	MaxInvalid int           // invalid answers remembered at most, apart from the valid ones so a flood cannot evict them. Defaults to 1024.
	Timeout    time.Duration // bound of one TokenReview call. Defaults to 5s.
	PerSecond  float64       // TokenReviews sent per second at most (bursts of twice as many); beyond, callers get ErrTooManyReviews. Defaults to 20.
	// PerPeerPerSecond bounds the TokenReviews the tokens of one peer address cost (bursts of
	// four times as many), so that one client sending new tokens cannot spend everyone's
	// share. A sidecar needs one review per token it holds, about one an hour. Defaults to
	// DefaultReviewsPerPeer.
	PerPeerPerSecond float64
	MaxPeers         int // peer addresses whose review budgets are remembered. Defaults to 4096.
	// Keys checks a new token's signature before it is reviewed: one the API server's issuer did
	// not sign is refused without a TokenReview. Nil: every new token is reviewed.
	Keys *IssuerKeys
}

// DefaultReviewsPerPeer is the TokenReviews per second the new tokens of one peer address may
// cost: a pod's sidecar holds one token per channel, renewed about hourly, so one a second (in
// bursts of five) serves a restart, while a flood from one address spends its own budget only.
const DefaultReviewsPerPeer = 1.0

// ErrTooManyReviews: the reviewer already sends as many TokenReviews as it may; retry.
var ErrTooManyReviews = errors.New("too many new tokens to review right now")

// TokenReviewer verifies bearer tokens with the TokenReview API and caches the answers.
// Errors talking to the API server are not cached.
type TokenReviewer struct {
	reviews authv1client.TokenReviewInterface
	opt     ReviewerOptions
	now     func() time.Time
	limiter *rate.Limiter

	mu      sync.Mutex
	cache   map[[sha256.Size]byte]*review   // valid answers, and reviews in flight
	invalid map[[sha256.Size]byte]time.Time // tokens the API server refused, until when
	peers   map[string]*rate.Limiter        // each peer address's review budget
	calls   uint64                          // TokenReviews sent, for tests and metrics
	refused uint64                          // tokens refused for their signature, without a review
}

type review struct {
	done       chan struct{} // closed when id/err are set
	id         Identity
	err        error
	expires    time.Time // when the answer is due for a new review; zero while in flight
	tokenExp   time.Time // the token's own expiry: no answer is used past it
	refreshing bool      // a review ahead of expires is under way (r.mu)
}

// NewTokenReviewer returns a reviewer that calls the API server of cfg.
func NewTokenReviewer(cfg *rest.Config, opt ReviewerOptions) (*TokenReviewer, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for TokenReview: %w", err)
	}
	return newTokenReviewer(cs.AuthenticationV1().TokenReviews(), opt), nil
}

func newTokenReviewer(reviews authv1client.TokenReviewInterface, opt ReviewerOptions) *TokenReviewer {
	if opt.Audience == "" {
		opt.Audience = DefaultAudience
	}
	if opt.TTL <= 0 {
		opt.TTL = time.Minute
	}
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = 4096
	}
	if opt.MaxInvalid <= 0 {
		opt.MaxInvalid = 1024
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	if opt.PerSecond <= 0 {
		opt.PerSecond = 20
	}
	if opt.PerPeerPerSecond <= 0 {
		opt.PerPeerPerSecond = DefaultReviewsPerPeer
	}
	if opt.MaxPeers <= 0 {
		opt.MaxPeers = 4096
	}
	return &TokenReviewer{reviews: reviews, opt: opt, now: time.Now,
		limiter: rate.NewLimiter(rate.Limit(opt.PerSecond), int(2*opt.PerSecond)+1),
		cache:   make(map[[sha256.Size]byte]*review), invalid: make(map[[sha256.Size]byte]time.Time),
		peers: make(map[string]*rate.Limiter)}
}

// Calls is the number of TokenReviews sent so far (cache misses).
func (r *TokenReviewer) Calls() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// Review is ReviewFrom for a caller whose address is not known (it shares one budget with
// every other such caller).
func (r *TokenReviewer) Review(ctx context.Context, token string) (Identity, error) {
	return r.ReviewFrom(ctx, "", token)
}

// ReviewFrom returns who token, sent from the peer address peer, belongs to, ErrInvalidToken,
// ErrTooManyReviews, or the error reaching the API server. A token that is not a JWT for the
// audience and unexpired is refused before any review, and so is one whose signature is not the
// API server's issuer's (with ReviewerOptions.Keys); concurrent calls for one token share one
// TokenReview, which runs on a context of its own (the first caller going away does not fail
// the others). Reviews are limited per peer and in all: a valid answer is reviewed again ahead
// of its expiry while there is budget, and served for one TTL past it while there is none, so
// a flood of new tokens does not lock out callers whose tokens are known.
func (r *TokenReviewer) ReviewFrom(ctx context.Context, peer, token string) (Identity, error) {
	now := r.now()
	exp, err := precheck(token, r.opt.Audience, now)
	if err != nil {
		return Identity{}, err
	}
	key := keyOf(token)
	r.mu.Lock()
	if until, ok := r.invalid[key]; ok && now.Before(until) {
		r.mu.Unlock()
		return Identity{}, ErrInvalidToken
	}
	cached, ok := r.cache[key]
	switch {
	case ok && cached.expires.IsZero(): // in flight
		r.mu.Unlock()
		return r.wait(ctx, cached)
	case ok && now.Before(cached.expires):
		if !cached.refreshing && now.After(cached.expires.Add(-r.opt.TTL/4)) && cached.expires.Before(cached.tokenExp) && r.allowLocked(peer, now) {
			cached.refreshing = true // review it again ahead of time, answering from the cache meanwhile
			r.calls++
			go r.refresh(key, token, cached)
		}
		r.mu.Unlock()
		return cached.id, nil
	}
	r.mu.Unlock()

	// A token without an answer: its signature first, so that a forged one costs no review (one
	// whose answer expired was verified before).
	if r.opt.Keys != nil && !ok {
		if judged, err := r.opt.Keys.Verify(ctx, token); judged && err != nil {
			r.mu.Lock()
			r.refused++
			if !errors.Is(err, ErrUnknownKey) { // a new issuer key is learnt within seconds
				r.refuseLocked(key, exp, now)
			}
			r.mu.Unlock()
			return Identity{}, err
		}
	}

	// Another call may have answered meanwhile (the check above can wait on the API server).
	now = r.now()
	r.mu.Lock()
	if until, invalid := r.invalid[key]; invalid && now.Before(until) {
		r.mu.Unlock()
		return Identity{}, ErrInvalidToken
	}
	cached, ok = r.cache[key]
	switch {
	case ok && cached.expires.IsZero():
		r.mu.Unlock()
		return r.wait(ctx, cached)
	case ok && now.Before(cached.expires):
		r.mu.Unlock()
		return cached.id, nil
	}
	if !r.allowLocked(peer, now) {
		r.mu.Unlock()
		if ok && now.Before(cached.expires.Add(r.opt.TTL)) {
			return cached.id, nil // no budget for a new review: the last answer, for one TTL more
		}
		return Identity{}, ErrTooManyReviews
	}
	if len(r.cache) >= r.opt.MaxEntries {
		r.evictLocked(now)
	}
	e := &review{done: make(chan struct{}), tokenExp: exp}
	r.cache[key] = e
	r.calls++
	r.mu.Unlock()

	e.id, e.err = r.call(context.WithoutCancel(ctx), token)
	r.settle(key, e, e.err)
	close(e.done)
	return e.id, e.err
}

// wait returns the answer of a review in flight, or ctx's error.
func (r *TokenReviewer) wait(ctx context.Context, e *review) (Identity, error) {
	select {
	case <-e.done:
		return e.id, e.err
	case <-ctx.Done():
		return Identity{}, ctx.Err()
	}
}

// Refused is the number of tokens refused for their signature, without a review.
func (r *TokenReviewer) Refused() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

// refresh reviews a valid answer's token again before the answer expires and puts what the
// API server says in its place.
func (r *TokenReviewer) refresh(key [sha256.Size]byte, token string, old *review) {
	id, err := r.call(context.Background(), token)
	r.mu.Lock()
	old.refreshing = false
	r.mu.Unlock()
	if err != nil && !errors.Is(err, ErrInvalidToken) {
		return // says nothing about the token: the old answer stands until it expires
	}
	e := &review{done: make(chan struct{}), id: id, err: err, tokenExp: old.tokenExp}
	close(e.done)
	r.mu.Lock()
	if r.cache[key] == old {
		r.cache[key] = e
	}
	r.mu.Unlock()
	r.settle(key, e, err)
}

// settle records the outcome of a review: a valid answer until TTL from now (never past its
// token), an invalid one apart; a failed call is forgotten, to ask again next time.
func (r *TokenReviewer) settle(key [sha256.Size]byte, e *review, err error) {
	now := r.now()
	until := now.Add(r.opt.TTL)
	if e.tokenExp.Before(until) {
		until = e.tokenExp // no verdict outlives the token
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case errors.Is(err, ErrInvalidToken):
		if r.cache[key] == e {
			delete(r.cache, key)
		}
		r.refuseLocked(key, e.tokenExp, now)
	case err != nil:
		if r.cache[key] == e {
			delete(r.cache, key) // a failed call says nothing about the token: ask again next time
		}
	default:
		e.expires = until
	}
}

// refuseLocked remembers an invalid token for one TTL (never past its exp); r.mu is held.
func (r *TokenReviewer) refuseLocked(key [sha256.Size]byte, tokenExp, now time.Time) {
	until := now.Add(r.opt.TTL)
	if tokenExp.Before(until) {
		until = tokenExp
	}
	if len(r.invalid) >= r.opt.MaxInvalid {
		r.evictInvalidLocked(now)
	}
	r.invalid[key] = until
}

// allowLocked takes one review from peer's budget and from the reviewer's; r.mu is held.
func (r *TokenReviewer) allowLocked(peer string, now time.Time) bool {
	l := r.peers[peer]
	if l == nil {
		if len(r.peers) >= r.opt.MaxPeers {
			r.evictPeersLocked(now)
		}
		l = rate.NewLimiter(rate.Limit(r.opt.PerPeerPerSecond), int(4*r.opt.PerPeerPerSecond)+1)
		r.peers[peer] = l
	}
	if l.TokensAt(now) < 1 {
		return false
	}
	if !r.limiter.AllowN(now, 1) {
		return false
	}
	return l.AllowN(now, 1)
}

// evictPeersLocked forgets the peers whose budget is whole again, then arbitrary ones down to
// 3/4 (a forgotten peer starts with a whole budget, which costs at most one burst).
func (r *TokenReviewer) evictPeersLocked(now time.Time) {
	for p, l := range r.peers {
		if l.TokensAt(now) >= float64(l.Burst()) {
			delete(r.peers, p)
		}
	}
	for p := range r.peers {
		if len(r.peers) < r.opt.MaxPeers*3/4 {
			return
		}
		delete(r.peers, p)
	}
}

// keyOf is a token's cache key: the cache never holds a token itself.
func keyOf(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// precheck reads the token's claims without verifying them (the API server does that): a JWT
// whose aud names audience and whose exp is still ahead. It returns exp.
func precheck(token, audience string, now time.Time) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 16<<10 {
		return time.Time{}, fmt.Errorf("%w: not a JWT", ErrInvalidToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: not a JWT", ErrInvalidToken)
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
		Exp *float64        `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("%w: not a JWT", ErrInvalidToken)
	}
	var auds []string
	if json.Unmarshal(claims.Aud, &auds) != nil {
		var one string
		if json.Unmarshal(claims.Aud, &one) == nil {
			auds = []string{one}
		}
	}
	if !slices.Contains(auds, audience) {
		return time.Time{}, fmt.Errorf("%w: it is not for audience %q", ErrInvalidToken, audience)
	}
	if claims.Exp == nil {
		return time.Time{}, fmt.Errorf("%w: it has no expiry", ErrInvalidToken)
	}
	exp := time.Unix(int64(*claims.Exp), 0)
	if !now.Before(exp) {
		return time.Time{}, fmt.Errorf("%w: it expired at %s", ErrInvalidToken, exp.UTC().Format(time.RFC3339))
	}
	return exp, nil
}

// evictInvalidLocked drops expired invalid answers, then arbitrary ones down to 3/4.
func (r *TokenReviewer) evictInvalidLocked(now time.Time) {
	for k, until := range r.invalid {
		if !now.Before(until) {
			delete(r.invalid, k)
		}
	}
	for k := range r.invalid {
		if len(r.invalid) < r.opt.MaxInvalid*3/4 {
			return
		}
		delete(r.invalid, k)
	}
}

// evictLocked drops expired answers, and if that is not enough, arbitrary ones down to 3/4.
func (r *TokenReviewer) evictLocked(now time.Time) {
	for k, e := range r.cache {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			delete(r.cache, k)
		}
	}
	for k, e := range r.cache {
		if len(r.cache) < r.opt.MaxEntries*3/4 {
			return
		}
		if !e.expires.IsZero() { // never drop a review in flight: its waiters hold it
			delete(r.cache, k)
		}
	}
}

func (r *TokenReviewer) call(ctx context.Context, token string) (Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opt.Timeout)
	defer cancel()
	tr, err := r.reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{r.opt.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, fmt.Errorf("TokenReview: %w", err)
	}
	st := tr.Status
	switch {
	case !st.Authenticated:
		if st.Error != "" {
			return Identity{}, fmt.Errorf("%w: %s", ErrInvalidToken, st.Error)
		}
		return Identity{}, ErrInvalidToken
	case !slices.Contains(st.Audiences, r.opt.Audience):
		return Identity{}, fmt.Errorf("%w: it is not for audience %q", ErrInvalidToken, r.opt.Audience)
	}
	id := Identity{Username: st.User.Username}
	id.Namespace, id.ServiceAccount, _ = ParseServiceAccount(st.User.Username)
	return id, nil
}
