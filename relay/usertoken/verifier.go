package usertoken

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/heraldhq/herald/relay/event"
)

// Algorithms are the signature algorithms a token may use: HS256 with the HMAC key, the others
// with a public key of the JWKS. "none" and every other algorithm are refused.
var Algorithms = []jose.SignatureAlgorithm{jose.HS256, jose.RS256, jose.ES256, jose.EdDSA}

const (
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat: phones' clocks drift, and
	// half a minute more of a short-lived token costs little.
	DefaultLeeway = 30 * time.Second
	// MaxTokenBytes bounds a token: room for a few hundred granted keys; anything longer is
	// refused before it is parsed.
	MaxTokenBytes = 16 << 10
	// MaxGrantEntries bounds the keys and prefixes of a token's follow (and publish) claim.
	MaxGrantEntries = 1000
	// MinHMACKeyBytes is the shortest HS256 key accepted (RFC 7518 3.2: at least the hash size).
	MinHMACKeyBytes = 32
	// jwksMinInterval bounds how often a token with an unknown kid makes the verifier fetch the
	// JWKS URL again (a key rotated in): a flood of forged kids costs one fetch per interval.
	jwksMinInterval = 10 * time.Second
)

// Options configure a Verifier. At least one of HMACKeyFile, JWKSFile and JWKSURL is required.
type Options struct {
	Audience    string           // the aud a token must name: the channel, "<namespace>/<name>" by default at the edge
	HMACKeyFile string           // a file holding the HS256 key (a mounted Secret's key), at least MinHMACKeyBytes
	JWKSFile    string           // a file holding a JWKS (RFC 7517) of public keys for RS256, ES256, EdDSA
	JWKSURL     string           // a JWKS URL, fetched by Reload and when a token names an unknown kid
	Leeway      time.Duration    // clock skew allowed. Defaults to DefaultLeeway.
	Now         func() time.Time // the clock. Defaults to time.Now.
	HTTPClient  *http.Client     // fetches JWKSURL. Defaults to a client with a 10 s timeout.
}

// Verifier checks end-user tokens against the channel's keys. It is safe for concurrent use;
// Reload swaps the keys in (a rotated Secret, a fetched JWKS) without disturbing checks.
type Verifier struct {
	opt  Options
	keys atomic.Pointer[keyring]

	fetchMu   sync.Mutex
	lastFetch time.Time
}

// keyring is the keys a token is checked against.
type keyring struct {
	hmac    []byte
	jwks    []jose.JSONWebKey // from the file, then from the URL
	fromURL []jose.JSONWebKey // the URL's, kept when a later fetch fails
}

// New returns a Verifier with the keys of its files loaded (a missing or bad file is an error,
// since the edge would refuse everyone) and the JWKS URL fetched once (a failure is not: the
// URL's keys are fetched again when a token needs them).
func New(ctx context.Context, o Options) (*Verifier, error) {
	if o.Audience == "" {
		return nil, errors.New("usertoken: an audience is required")
	}
	if o.HMACKeyFile == "" && o.JWKSFile == "" && o.JWKSURL == "" {
		return nil, errors.New("usertoken: no key source: give an HMAC key file, a JWKS file or a JWKS URL")
	}
	if o.Leeway == 0 {
		o.Leeway = DefaultLeeway
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	v := &Verifier{opt: o}
	// Reload keeps the keys of its files when only the URL failed; a file that failed left none.
	if err := v.Reload(ctx); err != nil && v.keys.Load() == nil {
		return nil, err
	}
	return v, nil
}

// Leeway is the clock skew the verifier allows: a token is good until its exp plus this.
func (v *Verifier) Leeway() time.Duration { return v.opt.Leeway }

// HasURL reports whether keys come from a JWKS URL (fetched less often than files are read).
func (v *Verifier) HasURL() bool { return v.opt.JWKSURL != "" }

// Reload reads the key files and fetches the JWKS URL again. On an error the keys in use stay.
func (v *Verifier) Reload(ctx context.Context) error {
	k := &keyring{}
	if f := v.opt.HMACKeyFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading the HMAC key: %w", err)
		}
		if k.hmac = []byte(strings.TrimRight(string(b), "\r\n")); len(k.hmac) < MinHMACKeyBytes {
			return fmt.Errorf("the HMAC key in %s has %d bytes; HS256 needs at least %d", f, len(k.hmac), MinHMACKeyBytes)
		}
	}
	if f := v.opt.JWKSFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading the JWKS: %w", err)
		}
		keys, err := parseJWKS(b)
		if err != nil {
			return fmt.Errorf("the JWKS in %s: %w", f, err)
		}
		k.jwks = keys
	}
	var fetchErr error
	if v.opt.JWKSURL != "" {
		keys, err := v.fetch(ctx)
		if err != nil {
			fetchErr = err
			if old := v.keys.Load(); old != nil {
				keys = old.fromURL // keep the URL's keys fetched before
			}
		}
		k.fromURL = keys
		k.jwks = append(k.jwks, keys...)
	}
	v.keys.Store(k)
	return fetchErr
}

func (v *Verifier) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	v.lastFetch = v.opt.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.opt.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.opt.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the JWKS: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching the JWKS: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the JWKS: %s answered %d", v.opt.JWKSURL, resp.StatusCode)
	}
	return parseJWKS(b)
}

// parseJWKS reads a JWKS's public keys; a private key is refused, since it should not be where
// the edge can read it.
func parseJWKS(b []byte) ([]jose.JSONWebKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS ({\"keys\":[...]}): %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("the JWKS has no keys")
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %q is a private or symmetric key; give the JWKS public keys only (HS256 takes its key from the HMAC key)", k.KeyID)
		}
	}
	return set.Keys, nil
}

// Error is a refusal: the status to answer (401 or 403) and a detail that names what was wrong.
type Error struct {
	Status int
	Detail string
}

func (e *Error) Error() string { return e.Detail }

func unauthenticated(detail string) *Error {
	return &Error{Status: http.StatusUnauthorized, Detail: detail}
}

// Forbidden is the refusal of a verified token that does not grant what was asked.
func Forbidden(detail string) *Error { return &Error{Status: http.StatusForbidden, Detail: detail} }

// claims are the members of a token Herald reads besides the registered ones.
type claims struct {
	Herald *struct {
		Follow  []string `json:"follow"`
		Publish []string `json:"publish"`
	} `json:"herald"`
}

// Verify checks a token and returns what it grants, or an *Error.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Grant, error) {
	if len(raw) > MaxTokenBytes {
		return nil, unauthenticated("the token is longer than " + strconv.Itoa(MaxTokenBytes) + " bytes")
	}
	tok, err := jwt.ParseSigned(raw, Algorithms)
	if err != nil {
		return nil, unauthenticated("the token is not a JWT signed with HS256, RS256, ES256 or EdDSA (" + strings.TrimPrefix(err.Error(), "go-jose/go-jose: ") + ")")
	}
	h := tok.Headers[0]
	var std jwt.Claims
	var own claims
	verified, known := v.check(tok, h, &std, &own)
	if !known && v.opt.JWKSURL != "" && v.refetch(ctx) {
		verified, known = v.check(tok, h, &std, &own) // a key rotated in since the last fetch
	}
	switch {
	case !known:
		return nil, unauthenticated("no key of the channel fits the token (alg " + h.Algorithm + ", kid " + strconv.Quote(h.KeyID) + ")")
	case !verified:
		return nil, unauthenticated("the token's signature does not verify with the channel's keys")
	}
	return v.grant(&std, &own)
}

// check tries the keys that fit the token's header; known is false when none fits.
func (v *Verifier) check(tok *jwt.JSONWebToken, h jose.Header, std *jwt.Claims, own *claims) (verified, known bool) {
	k := v.keys.Load()
	if h.Algorithm == string(jose.HS256) {
		if len(k.hmac) == 0 {
			return false, false
		}
		return tok.Claims(k.hmac, std, own) == nil, true
	}
	for i := range k.jwks {
		key := &k.jwks[i]
		if (h.KeyID != "" && key.KeyID != h.KeyID) || (key.Algorithm != "" && key.Algorithm != h.Algorithm) || !fits(key, h.Algorithm) {
			continue
		}
		known = true
		if tok.Claims(key.Key, std, own) == nil {
			return true, true
		}
	}
	return false, known
}

// fits reports whether key's type can check alg (an RSA key cannot check ES256).
func fits(key *jose.JSONWebKey, alg string) bool {
	switch key.Key.(type) {
	case ed25519.PublicKey:
		return alg == string(jose.EdDSA)
	case *rsa.PublicKey:
		return alg == string(jose.RS256)
	case *ecdsa.PublicKey:
		return alg == string(jose.ES256)
	}
	return false
}

// refetch fetches the JWKS URL again unless that was done within jwksMinInterval; it reports
// whether it did.
func (v *Verifier) refetch(ctx context.Context) bool {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	if v.opt.Now().Sub(v.lastFetch) < jwksMinInterval {
		return false
	}
	return v.Reload(ctx) == nil
}

// grant checks the registered claims and reads Herald's.
func (v *Verifier) grant(std *jwt.Claims, own *claims) (*Grant, error) {
	now, leeway := v.opt.Now(), v.opt.Leeway
	switch {
	case std.Expiry == nil:
		return nil, unauthenticated("the token has no exp: Herald accepts only tokens that expire")
	case now.After(std.Expiry.Time().Add(leeway)):
		return nil, unauthenticated("the token expired at " + std.Expiry.Time().UTC().Format(time.RFC3339) + "; get a fresh one from the app")
	case std.NotBefore != nil && now.Add(leeway).Before(std.NotBefore.Time()):
		return nil, unauthenticated("the token is not valid before " + std.NotBefore.Time().UTC().Format(time.RFC3339) + " (nbf)")
	case std.IssuedAt != nil && now.Add(leeway).Before(std.IssuedAt.Time()):
		return nil, unauthenticated("the token is issued in the future (iat " + std.IssuedAt.Time().UTC().Format(time.RFC3339) + ")")
	case !std.Audience.Contains(v.opt.Audience):
		return nil, unauthenticated("the token is for audience " + quoteAll(std.Audience) + ", not " + strconv.Quote(v.opt.Audience) + ": it was minted for another channel")
	}
	g := &Grant{Subject: std.Subject, Expiry: std.Expiry.Time()}
	if own.Herald == nil {
		return g, nil // valid, grants nothing: every follow is refused with 403
	}
	for _, c := range []struct {
		name    string
		entries []string
		set     *grantSet
	}{{"follow", own.Herald.Follow, &g.follow}, {"publish", own.Herald.Publish, &g.publish}} {
		if len(c.entries) > MaxGrantEntries {
			return nil, unauthenticated("the token's herald." + c.name + " claim lists more than " + strconv.Itoa(MaxGrantEntries) + " keys; grant a prefix instead")
		}
		for _, k := range c.entries {
			if err := event.ValidateField("a key", k, event.MaxKeyBytes); err != nil {
				return nil, unauthenticated("the token's herald." + c.name + " claim: " + err.Error())
			}
		}
		*c.set = newGrantSet(c.entries)
	}
	return g, nil
}

func quoteAll(aud jwt.Audience) string {
	if len(aud) == 0 {
		return "(none)"
	}
	q := make([]string, len(aud))
	for i, a := range aud {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, ", ")
}

// Fingerprint names a token in logs and metrics without revealing it (the first 8 bytes of its
// SHA-256, hex).
func Fingerprint(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return fmt.Sprintf("%x", sum[:8])
}

// CookieName is the cookie a browser may carry its token in (EventSource sends no headers).
const CookieName = "herald_token"

// FromRequest returns the token a request carries: Authorization: Bearer, else the token
// query parameter (EventSource cannot send headers), else the herald_token cookie.
func FromRequest(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(tok) != "" {
			return strings.TrimSpace(tok), true
		}
		return "", false
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t, true
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		return c.Value, true
	}
	return "", false
}
