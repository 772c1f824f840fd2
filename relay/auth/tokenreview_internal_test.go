package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// These tests give the reviewer a stand-in for the TokenReview API to count and time its calls;
// the real API server is in tokenreview_test.go.

// fakeReviews accepts the tokens in valid (as system:serviceaccount:team:app) and refuses others.
type fakeReviews struct {
	valid map[string]bool
	calls atomic.Int64
}

func (f *fakeReviews) Create(ctx context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.calls.Add(1)
	if err := ctx.Err(); err != nil { // as a real client: no call on a canceled context
		return nil, err
	}
	out := tr.DeepCopy()
	if f.valid[tr.Spec.Token] {
		out.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
			User: authenticationv1.UserInfo{Username: "system:serviceaccount:team:app"}}
	}
	return out, nil
}

// jwt makes a token with the claims aud and exp and a made-up signature.
func jwt(aud any, exp time.Time, salt int) string {
	claims, _ := json.Marshal(map[string]any{"aud": aud, "exp": exp.Unix(), "jti": strconv.Itoa(salt)})
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(claims) + "." + enc([]byte("signature"))
}

// Tokens that cannot be valid for this audience cost no TokenReview.
func TestMalformedTokensAreRefusedWithoutAReview(t *testing.T) {
	f := &fakeReviews{}
	r := newTokenReviewer(f, ReviewerOptions{})
	hour := time.Now().Add(time.Hour)
	for name, token := range map[string]string{
		"not a JWT":        "not-a-token",
		"bad base64":       "a.%%%.c",
		"another audience": jwt([]string{"vault"}, hour, 0),
		"no audience":      jwt(nil, hour, 0),
		"expired":          jwt([]string{"herald"}, time.Now().Add(-time.Minute), 0),
	} {
		if _, err := r.Review(context.Background(), token); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
		}
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d TokenReviews for tokens refused on sight", n)
	}
	if _, err := r.Review(context.Background(), jwt("herald", hour, 0)); !errors.Is(err, ErrInvalidToken) || f.calls.Load() != 1 {
		t.Errorf("a well-formed token (aud as a string) must be reviewed: %v after %d calls", err, f.calls.Load())
	}
}

// A flood of forged but well-formed tokens is rate limited and cannot evict a valid answer.
func TestAFloodOfForgedTokensNeitherEvictsNorFloods(t *testing.T) {
	good := jwt([]string{"herald"}, time.Now().Add(time.Hour), -1)
	f := &fakeReviews{valid: map[string]bool{good: true}}
	r := newTokenReviewer(f, ReviewerOptions{MaxEntries: 8, MaxInvalid: 16, PerSecond: 50})
	if id, err := r.Review(context.Background(), good); err != nil || id.Namespace != "team" {
		t.Fatalf("the good token: %+v %v", id, err)
	}
	limited := 0
	for i := range 5000 {
		_, err := r.Review(context.Background(), jwt([]string{"herald"}, time.Now().Add(time.Hour), i))
		switch {
		case errors.Is(err, ErrTooManyReviews):
			limited++
		case !errors.Is(err, ErrInvalidToken):
			t.Fatalf("forged token %d: %v", i, err)
		}
	}
	if calls := f.calls.Load(); calls > 150 || limited == 0 {
		t.Errorf("5,000 forged tokens in a burst: %d TokenReviews, %d rate limited; want at most ~101 (the burst) and the rest limited", calls, limited)
	}
	before := f.calls.Load()
	if _, err := r.Review(context.Background(), good); err != nil || f.calls.Load() != before {
		t.Errorf("the good token after the flood: %v, %d new TokenReviews; want its cached answer", err, f.calls.Load()-before)
	}
}

// The review runs on a context of its own: a first caller that is gone (its context canceled)
// does not turn the answer every other caller shares into an error, nor cost a second review.
func TestAReviewOutlivesTheCallerThatStartedIt(t *testing.T) {
	good := jwt([]string{"herald"}, time.Now().Add(time.Hour), 1)
	f := &fakeReviews{valid: map[string]bool{good: true}}
	r := newTokenReviewer(f, ReviewerOptions{})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if id, err := r.Review(gone, good); err != nil || id.Namespace != "team" {
		t.Errorf("the review started by a caller already gone: %+v, %v; want the identity", id, err)
	}
	if id, err := r.Review(context.Background(), good); err != nil || id.Namespace != "team" || f.calls.Load() != 1 {
		t.Errorf("the next caller: %+v, %v after %d TokenReviews; want the shared answer from 1", id, err, f.calls.Load())
	}
}

// No answer is reused past the token's expiry.
func TestAnAnswerLivesNoLongerThanItsToken(t *testing.T) {
	now := time.Now()
	good := jwt([]string{"herald"}, now.Add(30*time.Second), 2)
	f := &fakeReviews{valid: map[string]bool{good: true}}
	r := newTokenReviewer(f, ReviewerOptions{TTL: time.Hour})
	r.now = func() time.Time { return now }
	if _, err := r.Review(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return now.Add(31 * time.Second) }
	if _, err := r.Review(context.Background(), good); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("the token 1 s past its expiry: %v, want ErrInvalidToken", err)
	}
	if e := r.cache[keyOf(good)]; e != nil && e.expires.After(now.Add(30*time.Second)) {
		t.Errorf("the cached answer lives until %s, past the token's expiry", e.expires)
	}
}

// One peer sending forged tokens spends its own budget of reviews, not everyone's: a new
// legitimate caller elsewhere is still reviewed.
func TestAFloodFromOnePeerLeavesOthersTheirReviews(t *testing.T) {
	good := jwt([]string{"herald"}, time.Now().Add(time.Hour), -2)
	f := &fakeReviews{valid: map[string]bool{good: true}}
	r := newTokenReviewer(f, ReviewerOptions{PerSecond: 20})
	for i := range 5000 {
		_, _ = r.ReviewFrom(context.Background(), "10.0.0.66", jwt([]string{"herald"}, time.Now().Add(time.Hour), i))
	}
	if n := f.calls.Load(); n > 10 {
		t.Errorf("one peer's 5,000 forged tokens cost %d TokenReviews, want its own burst", n)
	}
	if id, err := r.ReviewFrom(context.Background(), "10.0.0.7", good); err != nil || id.Namespace != "team" {
		t.Fatalf("a caller at another address after the flood: %+v %v; want it reviewed", id, err)
	}
}

// While no review can be had (a flood from many addresses spent the reviewer's budget), a
// token whose answer is known keeps working for one TTL past it; ahead of its expiry, the
// answer is reviewed again in the background while the cached one serves.
func TestAKnownTokenIsServedWhileReviewsAreSpent(t *testing.T) {
	now := time.Now()
	good := jwt([]string{"herald"}, now.Add(time.Hour), -3)
	f := &fakeReviews{valid: map[string]bool{good: true}}
	r := newTokenReviewer(f, ReviewerOptions{TTL: time.Minute, PerSecond: 5})
	clock := now
	r.now = func() time.Time { return clock }
	if _, err := r.ReviewFrom(context.Background(), "10.0.0.7", good); err != nil {
		t.Fatal(err)
	}

	// Ahead of expiry: the cached answer, and one review in the background.
	clock = now.Add(50 * time.Second)
	if id, err := r.ReviewFrom(context.Background(), "10.0.0.7", good); err != nil || id.Namespace != "team" {
		t.Fatalf("near its expiry: %+v %v", id, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the refresh runs on a goroutine of its own
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d TokenReviews after the answer neared its expiry, want 2 (one ahead of time)", n)
	}

	// The budget spent by new tokens from many addresses, past the refreshed answer's expiry.
	clock = now.Add(50*time.Second + 70*time.Second)
	for i := range 200 {
		_, _ = r.ReviewFrom(context.Background(), "10.1.0."+strconv.Itoa(i), jwt([]string{"herald"}, now.Add(time.Hour), i))
	}
	before := f.calls.Load()
	if id, err := r.ReviewFrom(context.Background(), "10.0.0.7", good); err != nil || id.Namespace != "team" {
		t.Fatalf("a known token while reviews are spent: %+v %v; want its last answer", id, err)
	}
	if f.calls.Load() != before {
		t.Fatal("a review was sent past the budget")
	}
	// Past one TTL of grace it is refused like any other.
	clock = clock.Add(2 * time.Minute)
	for i := range 200 {
		_, _ = r.ReviewFrom(context.Background(), "10.2.0."+strconv.Itoa(i), jwt([]string{"herald"}, now.Add(time.Hour), 1000+i))
	}
	if _, err := r.ReviewFrom(context.Background(), "10.0.0.7", good); !errors.Is(err, ErrTooManyReviews) {
		t.Fatalf("a known token a TTL past its answer's expiry while reviews are spent: %v, want ErrTooManyReviews", err)
	}
}
