package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

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
	TTL        time.Duration // how long an answer (valid or invalid) is reused. Defaults to 1m.
	MaxEntries int           // answers remembered at most. Defaults to 4096.
	Timeout    time.Duration // bound of one TokenReview call. Defaults to 5s.
}

// TokenReviewer verifies bearer tokens with the TokenReview API and caches the answers.
// Errors talking to the API server are not cached.
type TokenReviewer struct {
	reviews authv1client.TokenReviewInterface
	opt     ReviewerOptions
	now     func() time.Time

	mu    sync.Mutex
	cache map[[sha256.Size]byte]*review
	calls uint64 // TokenReviews sent, for tests and metrics
}

type review struct {
	done    chan struct{} // closed when id/err are set
	id      Identity
	err     error
	expires time.Time
}

// NewTokenReviewer returns a reviewer that calls the API server of cfg.
func NewTokenReviewer(cfg *rest.Config, opt ReviewerOptions) (*TokenReviewer, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for TokenReview: %w", err)
	}
	if opt.Audience == "" {
		opt.Audience = DefaultAudience
	}
	if opt.TTL <= 0 {
		opt.TTL = time.Minute
	}
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = 4096
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	return &TokenReviewer{reviews: cs.AuthenticationV1().TokenReviews(), opt: opt, now: time.Now,
		cache: make(map[[sha256.Size]byte]*review)}, nil
}

// Calls is the number of TokenReviews sent so far (cache misses).
func (r *TokenReviewer) Calls() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// Review returns who token belongs to, ErrInvalidToken, or the error reaching the API server.
// Concurrent calls for one token share one TokenReview.
func (r *TokenReviewer) Review(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token)) // the cache never holds a token itself
	now := r.now()
	r.mu.Lock()
	if e, ok := r.cache[key]; ok && (e.expires.IsZero() || now.Before(e.expires)) {
		r.mu.Unlock()
		select {
		case <-e.done:
			return e.id, e.err
		case <-ctx.Done():
			return Identity{}, ctx.Err()
		}
	}
	if len(r.cache) >= r.opt.MaxEntries {
		r.evictLocked(now)
	}
	e := &review{done: make(chan struct{})}
	r.cache[key] = e
	r.calls++
	r.mu.Unlock()

	e.id, e.err = r.call(ctx, token)
	r.mu.Lock()
	if e.err != nil && !errors.Is(e.err, ErrInvalidToken) {
		delete(r.cache, key) // a failed call says nothing about the token: ask again next time
	} else {
		e.expires = r.now().Add(r.opt.TTL)
	}
	r.mu.Unlock()
	close(e.done)
	return e.id, e.err
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
