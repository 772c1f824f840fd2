package usertoken_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/heraldhq/herald/relay/usertoken"
)

const audience = "shop/orders"

var (
	now     = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	hmacKey = []byte("0123456789abcdef0123456789abcdef")
	rsaKey  = must(rsa.GenerateKey(rand.Reader, 2048))
	ecKey   = must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	edPub   ed25519.PublicKey
	edKey   ed25519.PrivateKey
)

func init() { edPub, edKey, _ = ed25519.GenerateKey(rand.Reader) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// token is what a test mints: registered claims and Herald's, each changeable.
type token struct {
	alg    jose.SignatureAlgorithm
	key    any
	kid    string
	claims map[string]any
}

func valid() token {
	return token{alg: jose.HS256, key: hmacKey, claims: map[string]any{
		"aud": audience, "sub": "user-42",
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Add(-time.Minute).Unix(),
		"herald": map[string]any{"follow": []string{"user-42", "team-7/"}, "publish": []string{"user-42"}},
	}}
}

func (tk token) with(f func(*token)) token {
	c := make(map[string]any, len(tk.claims))
	for k, v := range tk.claims {
		c[k] = v
	}
	tk.claims = c
	f(&tk)
	return tk
}

func (tk token) mint(t testing.TB) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if tk.kid != "" {
		opts = opts.WithHeader("kid", tk.kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: tk.alg, Key: tk.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(tk.claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func jwks(t testing.TB, keys ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func publicJWKS(t testing.TB) []byte {
	return jwks(t,
		jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "rsa-1", Algorithm: "RS256", Use: "sig"},
		jose.JSONWebKey{Key: &ecKey.PublicKey, KeyID: "ec-1", Algorithm: "ES256", Use: "sig"},
		jose.JSONWebKey{Key: edPub, KeyID: "ed-1", Use: "sig"},
	)
}

func newVerifier(t testing.TB, o usertoken.Options) *usertoken.Verifier {
	t.Helper()
	if o.Audience == "" {
		o.Audience = audience
	}
	o.Now = func() time.Time { return now }
	v, err := usertoken.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Every refusal names what was wrong; each case passes on a verifier without that check (an
// attacker's token), so each would fail if the check went missing.
func TestVerifyRefusesWhatIsNotAValidGrant(t *testing.T) {
	v := newVerifier(t, usertoken.Options{HMACKeyFile: writeFile(t, "hmac", hmacKey), JWKSFile: writeFile(t, "jwks", publicJWKS(t))})
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := map[string]struct {
		raw  func(t *testing.T) string
		says string
	}{
		"forged HS256 signature": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.key = []byte("another-key-another-key-another-k") }).mint(t)
		}, "signature does not verify"},
		"forged RS256 signature": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.RS256, other, "rsa-1" }).mint(t)
		}, "signature does not verify"},
		"alg none": {func(t *testing.T) string {
			raw := valid().mint(t)
			_, rest, _ := strings.Cut(raw, ".")
			payload, _, _ := strings.Cut(rest, ".")
			return "eyJhbGciOiJub25lIn0." + payload + "."
		}, "not a JWT signed with"},
		"HS384 (not accepted)": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.alg = jose.HS384; tk.key = append(hmacKey, hmacKey...) }).mint(t)
		}, "not a JWT signed with"},
		"unknown kid": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.RS256, rsaKey, "rsa-9" }).mint(t)
		}, "no key of the channel fits"},
		"an RSA kid used with ES256": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.ES256, ecKey, "rsa-1" }).mint(t)
		}, "no key of the channel fits"},
		"expired": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.claims["exp"] = now.Add(-time.Minute).Unix() }).mint(t)
		}, "expired at 2026-12-07T11:59:00Z"},
		"no exp": {func(t *testing.T) string {
			return valid().with(func(tk *token) { delete(tk.claims, "exp") }).mint(t)
		}, "has no exp"},
		"not yet valid": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.claims["nbf"] = now.Add(time.Minute).Unix() }).mint(t)
		}, "not valid before"},
		"issued in the future": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.claims["iat"] = now.Add(time.Hour).Unix() }).mint(t)
		}, "issued in the future"},
		"another channel's audience": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.claims["aud"] = "shop/payments" }).mint(t)
		}, `for audience "shop/payments", not "shop/orders"`},
		"no audience": {func(t *testing.T) string {
			return valid().with(func(tk *token) { delete(tk.claims, "aud") }).mint(t)
		}, "for audience (none)"},
		"a bad key in the grant": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.claims["herald"] = map[string]any{"follow": []string{"a\nb"}} }).mint(t)
		}, "herald.follow claim: a key contains a control character"},
		"too many keys in the grant": {func(t *testing.T) string {
			return valid().with(func(tk *token) {
				tk.claims["herald"] = map[string]any{"publish": strings.Split(strings.Repeat("k,", usertoken.MaxGrantEntries+1), ",")}
			}).mint(t)
		}, "herald.publish claim lists more than 1000"},
		"too long": {func(t *testing.T) string {
			return valid().with(func(tk *token) { tk.claims["pad"] = strings.Repeat("x", usertoken.MaxTokenBytes) }).mint(t)
		}, "longer than"},
		"not a JWT": {func(*testing.T) string { return "hello" }, "not a JWT"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g, err := v.Verify(context.Background(), tc.raw(t))
			var refusal *usertoken.Error
			if g != nil || err == nil {
				t.Fatalf("accepted: %+v", g)
			}
			if !asError(err, &refusal) || refusal.Status != http.StatusUnauthorized || !strings.Contains(refusal.Detail, tc.says) {
				t.Fatalf("refused with %v, want 401 saying %q", err, tc.says)
			}
		})
	}
}

func asError(err error, target **usertoken.Error) bool {
	e, ok := err.(*usertoken.Error)
	*target = e
	return ok
}

func TestVerifyAcceptsEachAlgorithmAndReadsTheGrant(t *testing.T) {
	v := newVerifier(t, usertoken.Options{HMACKeyFile: writeFile(t, "hmac", append(hmacKey, '\n')), JWKSFile: writeFile(t, "jwks", publicJWKS(t))})
	for name, tk := range map[string]token{
		"HS256":                 valid(),
		"RS256":                 valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.RS256, rsaKey, "rsa-1" }),
		"ES256":                 valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.ES256, ecKey, "ec-1" }),
		"EdDSA":                 valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.EdDSA, edKey, "ed-1" }),
		"RS256 without a kid":   valid().with(func(tk *token) { tk.alg, tk.key = jose.RS256, rsaKey }),
		"expired within leeway": valid().with(func(tk *token) { tk.claims["exp"] = now.Add(-10 * time.Second).Unix() }),
		"one of two audiences":  valid().with(func(tk *token) { tk.claims["aud"] = []string{"shop/payments", audience} }),
		"nbf within the leeway": valid().with(func(tk *token) { tk.claims["nbf"] = now.Add(20 * time.Second).Unix() }),
	} {
		t.Run(name, func(t *testing.T) {
			g, err := v.Verify(context.Background(), tk.mint(t))
			if err != nil {
				t.Fatal(err)
			}
			if g.Subject != "user-42" || g.Expiry.IsZero() {
				t.Fatalf("grant %+v", g)
			}
		})
	}

	g, err := v.Verify(context.Background(), valid().mint(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"user-42": true, "user-4": false, "user-42/x": false, "team-7/": true, "team-7/a": true,
		"team-7/a/": true, "team-7": false, "team-8/a": false} {
		if got := g.MayFollow(k); got != want {
			t.Errorf("MayFollow(%q) = %v, want %v", k, got, want)
		}
	}
	if !g.MayPublish("user-42") || g.MayPublish("team-7/a") {
		t.Errorf("publish grant: user-42 %v (want true), team-7/a %v (want false)", g.MayPublish("user-42"), g.MayPublish("team-7/a"))
	}
	none, err := v.Verify(context.Background(), valid().with(func(tk *token) { delete(tk.claims, "herald") }).mint(t))
	if err != nil || none.MayFollow("user-42") || none.MayPublish("user-42") {
		t.Fatalf("a token without the herald claim is valid and grants nothing: %v %+v", err, none)
	}
}

// A key rotated into the JWKS URL is fetched when a token names it; a flood of unknown kids
// costs at most one fetch per interval.
func TestAKeyRotatedIntoTheJWKSURLIsFetchedOnce(t *testing.T) {
	var served atomic.Value
	served.Store(jwks(t, jose.JSONWebKey{Key: &ecKey.PublicKey, KeyID: "ec-1", Algorithm: "ES256"}))
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		_, _ = w.Write(served.Load().([]byte))
	}))
	defer srv.Close()
	clock := now
	v, err := usertoken.New(context.Background(), usertoken.Options{Audience: audience, JWKSURL: srv.URL, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	rotated := valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.RS256, rsaKey, "rsa-2" })
	if _, err := v.Verify(context.Background(), rotated.mint(t)); err == nil || fetches.Load() != 1 {
		t.Fatalf("a kid the URL does not serve yet: %v after %d fetches, want a refusal and no fetch within the interval", err, fetches.Load())
	}
	served.Store(jwks(t, jose.JSONWebKey{Key: &ecKey.PublicKey, KeyID: "ec-1", Algorithm: "ES256"}, jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "rsa-2", Algorithm: "RS256"}))
	clock = clock.Add(11 * time.Second)
	if _, err := v.Verify(context.Background(), rotated.mint(t)); err != nil {
		t.Fatalf("after the key rotated in: %v", err)
	}
	for range 100 {
		_, _ = v.Verify(context.Background(), rotated.with(func(tk *token) { tk.kid = "forged" }).mint(t))
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("the JWKS URL was fetched %d times, want 2 (start, one rotation; forged kids within the interval fetch nothing)", n)
	}
}

func TestNewRefusesKeysThatCannotBeTrusted(t *testing.T) {
	private := jwks(t, jose.JSONWebKey{Key: rsaKey, KeyID: "rsa-1"})
	for name, tc := range map[string]struct {
		o    usertoken.Options
		says string
	}{
		"short HMAC key": {usertoken.Options{HMACKeyFile: writeFile(t, "h", []byte("short"))}, "needs at least 32"},
		"private JWKS":   {usertoken.Options{JWKSFile: writeFile(t, "j", private)}, "private or symmetric"},
		"empty JWKS":     {usertoken.Options{JWKSFile: writeFile(t, "j", []byte(`{"keys":[]}`))}, "no keys"},
		"no key source":  {usertoken.Options{}, "no key source"},
	} {
		t.Run(name, func(t *testing.T) {
			tc.o.Audience = audience
			if _, err := usertoken.New(context.Background(), tc.o); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.says)
			}
		})
	}
}

func TestFromRequestReadsHeaderQueryAndCookie(t *testing.T) {
	for name, tc := range map[string]struct {
		set  func(r *http.Request)
		want string
		ok   bool
	}{
		"bearer":           {func(r *http.Request) { r.Header.Set("Authorization", "Bearer abc") }, "abc", true},
		"bearer, any case": {func(r *http.Request) { r.Header.Set("Authorization", "bearer abc") }, "abc", true},
		"basic is not":     {func(r *http.Request) { r.Header.Set("Authorization", "Basic abc") }, "", false},
		"query":            {func(r *http.Request) { r.URL.RawQuery = "token=q" }, "q", true},
		"cookie":           {func(r *http.Request) { r.AddCookie(&http.Cookie{Name: usertoken.CookieName, Value: "c"}) }, "c", true},
		"header first":     {func(r *http.Request) { r.Header.Set("Authorization", "Bearer h"); r.URL.RawQuery = "token=q" }, "h", true},
		"none":             {func(*http.Request) {}, "", false},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/channels/orders/events", nil)
			tc.set(r)
			if got, ok := usertoken.FromRequest(r); got != tc.want || ok != tc.ok {
				t.Fatalf("FromRequest = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzVerify: whatever arrives, Verify never panics, and what it accepts is a token that
// expires, for this audience, signed with the key.
func FuzzVerify(f *testing.F) {
	v := newVerifier(f, usertoken.Options{HMACKeyFile: writeFile(f, "hmac", hmacKey), JWKSFile: writeFile(f, "jwks", publicJWKS(f))})
	f.Add(valid().mint(f))
	f.Add(valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.ES256, ecKey, "ec-1" }).mint(f))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		g, err := v.Verify(context.Background(), raw)
		if err != nil {
			if e, ok := err.(*usertoken.Error); !ok || e.Status != http.StatusUnauthorized || e.Detail == "" || strings.Contains(e.Detail, raw) && len(raw) > 8 {
				t.Fatalf("refusal %#v: want a 401 that names the problem without echoing the token", err)
			}
			return
		}
		if g.Expiry.IsZero() || now.After(g.Expiry.Add(usertoken.DefaultLeeway)) {
			t.Fatalf("accepted a token that does not expire or has expired: %+v", g)
		}
	})
}

// A long grant (indexed) covers what a short one (scanned) does.
func TestALongGrantCoversItsKeysAndPrefixes(t *testing.T) {
	v := newVerifier(t, usertoken.Options{HMACKeyFile: writeFile(t, "hmac", hmacKey)})
	follow := []string{"team-7/"}
	for i := range 20 {
		follow = append(follow, "user-"+strconv.Itoa(i))
	}
	g, err := v.Verify(context.Background(), valid().with(func(tk *token) { tk.claims["herald"] = map[string]any{"follow": follow} }).mint(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"user-0": true, "user-19": true, "user-20": false, "team-7/x": true, "team-7": false, "user-1/": false} {
		if got := g.MayFollow(k); got != want {
			t.Errorf("MayFollow(%q) = %v, want %v", k, got, want)
		}
	}
}

// BenchmarkVerify: a whole token check (parse, HS256 or ES256 signature, claims, grant) beside
// its floor, the HMAC-SHA256 of the token's signed part alone; checks per second are b.N over
// the elapsed time, on one core.
func BenchmarkVerify(b *testing.B) {
	hs := newVerifier(b, usertoken.Options{HMACKeyFile: writeFile(b, "hmac", hmacKey), JWKSFile: writeFile(b, "jwks", publicJWKS(b))})
	for name, tk := range map[string]token{
		"HS256": valid(),
		"ES256": valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.ES256, ecKey, "ec-1" }),
	} {
		raw := tk.mint(b)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := hs.Verify(context.Background(), raw); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
		})
	}
	raw := valid().mint(b)
	signed := raw[:strings.LastIndexByte(raw, '.')]
	b.Run("floor: HMAC-SHA256 alone", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			m := hmac.New(sha256.New, hmacKey)
			m.Write([]byte(signed))
			_ = m.Sum(nil)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
	})
}

// A JWKS URL that stops answering leaves the keys it served before in use, beside the file's.
func TestTheURLsKeysStayWhenAFetchFails(t *testing.T) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_, _ = w.Write(jwks(t, jose.JSONWebKey{Key: &rsaKey.PublicKey, KeyID: "rsa-2", Algorithm: "RS256"}))
	}))
	defer srv.Close()
	file := jwks(t, jose.JSONWebKey{Key: &ecKey.PublicKey, KeyID: "ec-1", Algorithm: "ES256"}, jose.JSONWebKey{Key: edPub, KeyID: "ed-1"})
	v := newVerifier(t, usertoken.Options{JWKSFile: writeFile(t, "jwks", file), JWKSURL: srv.URL})
	down.Store(true)
	if err := v.Reload(context.Background()); err == nil {
		t.Fatal("Reload with the URL down reported no error")
	}
	for name, tk := range map[string]token{
		"the URL's key":  valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.RS256, rsaKey, "rsa-2" }),
		"a file's key":   valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.ES256, ecKey, "ec-1" }),
		"the other file": valid().with(func(tk *token) { tk.alg, tk.key, tk.kid = jose.EdDSA, edKey, "ed-1" }),
	} {
		if _, err := v.Verify(context.Background(), tk.mint(t)); err != nil {
			t.Errorf("%s after a failed fetch: %v", name, err)
		}
	}
}
