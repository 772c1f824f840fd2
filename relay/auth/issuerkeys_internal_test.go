package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// issuer is a stand-in for the API server's token issuer: a signing key and its JWKS.
type issuer struct {
	key     *rsa.PrivateKey
	kid     string
	fetches atomic.Int64
	down    atomic.Bool // the JWKS cannot be fetched
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{key: key, kid: "issuer-key-1"}
}

func (is *issuer) jwks(context.Context) ([]byte, error) {
	is.fetches.Add(1)
	if is.down.Load() {
		return nil, errors.New("the API server is out of reach")
	}
	return json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &is.key.PublicKey, KeyID: is.kid, Algorithm: "RS256", Use: "sig"}}})
}

// sign makes a token for audience "herald", signed with key under kid, unique by salt.
func sign(t *testing.T, key *rsa.PrivateKey, kid string, salt int) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := josejwt.Signed(signer).Claims(map[string]any{"aud": []string{"herald"}, "exp": time.Now().Add(time.Hour).Unix(), "jti": salt}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// With the issuer's keys, a forged token (another key under the issuer's kid, or a kid the
// issuer does not have) is refused without a TokenReview, however many arrive, so the review
// budget stays whole for real tokens; an unknown kid fetches the keys again at most once per
// 10 s. Without the keys at hand the TokenReview decides, as before.
func TestForgedSignaturesCostNoReview(t *testing.T) {
	is := newIssuer(t)
	good := sign(t, is.key, is.kid, 0)
	f := &fakeReviews{valid: map[string]bool{good: true}}
	keys := newIssuerKeys(is.jwks)
	r := newTokenReviewer(f, ReviewerOptions{Keys: keys, PerSecond: 5, PerPeerPerSecond: 1})
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		kid := is.kid
		if i%2 == 1 {
			kid = "made-up-" + string(rune('a'+i%26))
		}
		if _, err := r.ReviewFrom(context.Background(), "10.0.0.66", sign(t, forger, kid, i)); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("forged token %d (kid %s): %v, want ErrInvalidToken", i, kid, err)
		}
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("300 forged tokens cost %d TokenReviews, want none", n)
	}
	if n := is.fetches.Load(); n != 1 {
		t.Errorf("the forged key IDs fetched the issuer's keys %d times within 10 s, want once", n)
	}
	if r.Refused() != 300 {
		t.Errorf("Refused() = %d, want 300", r.Refused())
	}
	// The forger's own address still has its whole review budget: its real token passes.
	if id, err := r.ReviewFrom(context.Background(), "10.0.0.66", good); err != nil || id.Namespace != "team" || f.calls.Load() != 1 {
		t.Errorf("the issuer's token after the flood: %+v %v after %d reviews; want it reviewed and accepted", id, err, f.calls.Load())
	}

	// Keys out of reach: the TokenReview judges (a forged token is refused by it, at its cost).
	is2 := newIssuer(t)
	is2.down.Store(true)
	f2 := &fakeReviews{}
	r2 := newTokenReviewer(f2, ReviewerOptions{Keys: newIssuerKeys(is2.jwks)})
	if _, err := r2.Review(context.Background(), sign(t, forger, is2.kid, 1)); !errors.Is(err, ErrInvalidToken) || f2.calls.Load() != 1 {
		t.Errorf("without the keys: %v after %d reviews; want the TokenReview to refuse it", err, f2.calls.Load())
	}
}

// A key the API server has just begun to sign with is learnt at the next refetch (10 s at
// most), and its refusal meanwhile is not remembered against the token.
func TestANewIssuerKeyIsLearntWithinTenSeconds(t *testing.T) {
	old, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var published atomic.Bool // whether the JWKS lists the new key yet
	fetch := func(context.Context) ([]byte, error) {
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &old.PublicKey, KeyID: "old", Algorithm: "RS256", Use: "sig"}}}
		if published.Load() {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &rotated.PublicKey, KeyID: "new", Algorithm: "RS256", Use: "sig"})
		}
		return json.Marshal(set)
	}
	clock := time.Now()
	keys := newIssuerKeys(fetch)
	keys.now = func() time.Time { return clock }
	good := sign(t, rotated, "new", 1)
	f := &fakeReviews{valid: map[string]bool{good: true}}
	r := newTokenReviewer(f, ReviewerOptions{Keys: keys})
	if judged, err := keys.Verify(context.Background(), sign(t, old, "old", 0)); !judged || err != nil {
		t.Fatalf("a token of the old key: judged %t, %v", judged, err)
	}
	published.Store(true)
	if _, err := r.Review(context.Background(), good); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a new key within 10 s of the last fetch: %v, want ErrUnknownKey", err)
	}
	clock = clock.Add(11 * time.Second)
	if id, err := r.Review(context.Background(), good); err != nil || id.Namespace != "team" {
		t.Errorf("the same token once the keys are refetched: %+v %v; want it reviewed and accepted", id, err)
	}
}
