package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// IssuerKeys checks the signatures of service account tokens against the public keys of the API
// server's token issuer (its JWKS, GET /openid/v1/jwks, which every service account may read),
// so that a forged token is refused on the spot and costs no TokenReview. A token whose
// signature holds still goes to the TokenReview (which alone knows whether its service account
// and pod still exist); a token it cannot judge (the keys out of reach) too.
type IssuerKeys struct {
	fetch func(context.Context) ([]byte, error)
	now   func() time.Time

	fetching sync.Mutex // one fetch at a time; a Verify never waits for one

	mu      sync.Mutex
	keys    *jose.JSONWebKeySet // nil until a fetch succeeded
	fetched time.Time           // when keys were fetched
	tried   time.Time           // the last fetch tried
}

// issuerKeysRefetch bounds how often a key ID the keys lack makes IssuerKeys fetch them again
// (the API server's keys change rarely; forged key IDs must not make it ask every time).
const issuerKeysRefetch = 10 * time.Second

// The algorithms the API server signs service account tokens with.
var issuerAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256}

// NewIssuerKeys reads the issuer keys of the API server of cfg, on first use.
func NewIssuerKeys(cfg *rest.Config) (*IssuerKeys, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for the issuer keys: %w", err)
	}
	rc := cs.Discovery().RESTClient()
	return newIssuerKeys(func(ctx context.Context) ([]byte, error) {
		return rc.Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	}), nil
}

func newIssuerKeys(fetch func(context.Context) ([]byte, error)) *IssuerKeys {
	return &IssuerKeys{fetch: fetch, now: time.Now}
}

// Verify reports whether it could judge token's signature (judged) and, if so, err: nil for a
// signature of one of the issuer's keys, ErrInvalidToken (with why) for any other. A key ID
// the keys lack is refused only while they are fresh (fetched within issuerKeysRefetch):
// otherwise they are fetched again first, and while they cannot be, the TokenReview decides.
// A key the API server has just begun to sign with is thus refused for 10 s at most.
func (k *IssuerKeys) Verify(ctx context.Context, token string) (judged bool, err error) {
	sig, err := jose.ParseSigned(token, issuerAlgorithms)
	if err != nil || len(sig.Signatures) != 1 {
		return true, fmt.Errorf("%w: not a JWT signed with one of %v", ErrInvalidToken, issuerAlgorithms)
	}
	kid := sig.Signatures[0].Header.KeyID
	keys, fresh := k.keysFor(kid)
	if len(keys) == 0 && !fresh {
		k.refetch(ctx)
		keys, fresh = k.keysFor(kid)
	}
	if len(keys) == 0 {
		if !fresh {
			return false, nil // the keys are out of reach: the TokenReview decides
		}
		return true, fmt.Errorf("%w: signed with a key (kid %q) the API server's issuer does not have", ErrUnknownKey, kid)
	}
	for _, key := range keys {
		if _, err := sig.Verify(key.Key); err == nil {
			return true, nil
		}
	}
	return true, fmt.Errorf("%w: its signature does not verify with the API server's issuer keys", ErrInvalidToken)
}

// ErrUnknownKey is ErrInvalidToken for a key ID the issuer's fresh keys lack. It is not
// remembered as a verdict on the token: the issuer may have begun to sign with a new key.
var ErrUnknownKey = fmt.Errorf("%w", ErrInvalidToken)

// keysFor returns the keys that may have signed a token of kid (every key when kid is empty),
// and whether the set is fresh (fetched within issuerKeysRefetch).
func (k *IssuerKeys) keysFor(kid string) ([]jose.JSONWebKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		return nil, false
	}
	fresh := k.now().Sub(k.fetched) < issuerKeysRefetch
	if kid == "" {
		return k.keys.Keys, fresh
	}
	return k.keys.Key(kid), fresh
}

// refetch fetches the keys again unless one was tried within issuerKeysRefetch or another is
// under way. It runs on a context of its own: a caller that goes away does not cancel it.
func (k *IssuerKeys) refetch(ctx context.Context) {
	if !k.fetching.TryLock() {
		return
	}
	defer k.fetching.Unlock()
	k.mu.Lock()
	if k.now().Sub(k.tried) < issuerKeysRefetch {
		k.mu.Unlock()
		return
	}
	k.tried = k.now()
	k.mu.Unlock()
	set, err := k.load(context.WithoutCancel(ctx))
	if err != nil {
		return
	}
	k.mu.Lock()
	k.keys, k.fetched = set, k.now()
	k.mu.Unlock()
}

// load fetches and parses the JWKS; it holds public keys only.
func (k *IssuerKeys) load(ctx context.Context) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := k.fetch(ctx)
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	for _, key := range set.Keys {
		if !key.IsPublic() {
			return nil, errors.New("the issuer's JWKS holds a private key")
		}
	}
	return &set, nil
}
