package auth_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/auth"
	"github.com/heraldhq/herald/relay/shardmap"
)

// cfg reaches the envtest API server as its administrator.
var cfg *rest.Config

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: the TokenReview tests need a real API server. "+
			"Run them with `make test`, or export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)")
		os.Exit(1)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env := &envtest.Environment{}
	var err error
	cfg, err = env.Start()
	defer func() { _ = env.Stop() }() // also after a failed start, which may leave processes
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	return m.Run()
}

// serviceAccountToken creates namespace ns (if needed) and service account "app" in it, and
// returns a token for audiences from the TokenRequest API, as the kubelet would project it.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, ns string, audiences ...string) string {
	t.Helper()
	ctx := context.Background()
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	_, _ = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{})
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/app: %v", ns, err)
	}
	return tr.Status.Token
}

func TestShardRelayAdmitsOnlySidecarsOfPermittedNamespaces(t *testing.T) {
	cs := kubernetes.NewForConfigOrDie(cfg)
	var reviewer *auth.TokenReviewer
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Map.Access = []string{"partner"}
		var err error
		// As `herald relay` does: the channel's own audience.
		reviewer, err = auth.NewTokenReviewer(cfg, auth.ReviewerOptions{Audience: shardmap.TokenAudience(o.Map.Namespace, o.Map.Channel)})
		if err != nil {
			t.Fatal(err)
		}
		o.Authorize = (&auth.Checker{Review: reviewer.ReviewFrom, Allows: o.Map.Allows, Namespace: o.Map.Namespace, Channel: o.Map.Channel}).Authorize
	}})
	audience := shardmap.TokenAudience(r.Map.Namespace, r.Map.Channel)
	own := serviceAccountToken(t, cs, r.Map.Namespace, audience) // relaytest maps live in namespace "test"
	partner := serviceAccountToken(t, cs, "partner", audience)
	outsider := serviceAccountToken(t, cs, "outsider", audience)
	otherAudience := serviceAccountToken(t, cs, r.Map.Namespace, "not-herald")
	// A token the same pod holds for another channel (the sidecar gets one per channel): a relay
	// that receives it must not be able to replay it at this channel's relays. The old shared
	// audience "herald" is refused too.
	otherChannel := serviceAccountToken(t, cs, r.Map.Namespace, shardmap.TokenAudience(r.Map.Namespace, "billing"))
	shared := serviceAccountToken(t, cs, r.Map.Namespace, "herald")

	tests := map[string]struct {
		header  string // Authorization
		want    int
		mention string
	}{
		"no token":                     {header: "", want: http.StatusUnauthorized, mention: "no bearer token"},
		"not bearer":                   {header: "Basic dXNlcjpwYXNz", want: http.StatusUnauthorized, mention: "no bearer token"},
		"garbage":                      {header: "Bearer not-a-token", want: http.StatusUnauthorized, mention: "not valid"},
		"token for another audience":   {header: "Bearer " + otherAudience, want: http.StatusUnauthorized, mention: "not valid"},
		"token for another channel":    {header: "Bearer " + otherChannel, want: http.StatusUnauthorized, mention: "not valid"},
		"token for every relay":        {header: "Bearer " + shared, want: http.StatusUnauthorized, mention: "not valid"},
		"namespace not permitted":      {header: "Bearer " + outsider, want: http.StatusForbidden, mention: `namespace "outsider" may not use channel`},
		"channel's own namespace":      {header: "Bearer " + own, want: http.StatusAccepted},
		"namespace in the access list": {header: "Bearer " + partner, want: http.StatusAccepted},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var hdr []string
			if tc.header != "" {
				hdr = []string{"Authorization", tc.header}
			}
			code, pr := r.Publish(t, "k", `{"n":1}`, hdr...)
			if code != tc.want || !strings.Contains(pr.Error, tc.mention) {
				t.Fatalf("publish with %q: %d %+v, want %d mentioning %q", name, code, pr, tc.want, tc.mention)
			}
		})
	}

	// Subscribing is guarded the same way; the shard map and health endpoints stay open.
	for path, want := range map[string]int{
		r.ChannelURL("/events"): http.StatusUnauthorized,
		r.ChannelURL("/ws"):     http.StatusUnauthorized,
		r.ChannelURL("/shards"): http.StatusOK,
		r.URL + "/readyz":       http.StatusOK,
		r.URL + "/healthz":      http.StatusOK,
		r.URL + "/metrics":      http.StatusOK,
	} {
		resp, err := http.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s without a token: %d %s, want %d", path, resp.StatusCode, b, want)
		}
		if want == http.StatusUnauthorized && (!strings.HasPrefix(string(b), `{"type":"https://herald.dev/problems/unauthenticated"`) || resp.Header.Get("WWW-Authenticate") == "") {
			t.Fatalf("GET %s: a 401 needs a JSON body and WWW-Authenticate, got %q %v", path, b, resp.Header)
		}
	}
	s := relaytest.OpenSSEWithHeader(t, r.ChannelURL("/events?key=sub"), "Authorization", "Bearer "+partner)
	id := r.MustPublishWith(t, "sub", `{"n":2}`, "Authorization", "Bearer "+own)
	if ev := s.Messages(t, 1, 10*time.Second)[0]; ev.ID != id {
		t.Fatalf("permitted subscriber got %s, want %s", ev.ID, id)
	}

	// Answers are cached: the same tokens again cost no TokenReview.
	before := reviewer.Calls()
	for range 20 {
		if code, pr := r.Publish(t, "k", `{"n":3}`, "Authorization", "Bearer "+own); code != http.StatusAccepted {
			t.Fatalf("cached token: %d %+v", code, pr)
		}
		if code, _ := r.Publish(t, "k", `{"n":3}`, "Authorization", "Bearer "+outsider); code != http.StatusForbidden {
			t.Fatalf("cached outsider token: %d", code)
		}
	}
	if after := reviewer.Calls(); after != before {
		t.Fatalf("%d TokenReviews for tokens already reviewed", after-before)
	}
}

func TestParseServiceAccount(t *testing.T) {
	tests := map[string]struct {
		user     string
		ns, name string
		ok       bool
	}{
		"service account":   {user: "system:serviceaccount:shop:checkout", ns: "shop", name: "checkout", ok: true},
		"user":              {user: "alice@example.com"},
		"node":              {user: "system:node:worker-1"},
		"missing name":      {user: "system:serviceaccount:shop"},
		"empty namespace":   {user: "system:serviceaccount::checkout"},
		"extra colon":       {user: "system:serviceaccount:shop:a:b"},
		"prefix only":       {user: "system:serviceaccount:"},
		"look-alike prefix": {user: "system:serviceaccounts:shop:checkout"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ns, sa, ok := auth.ParseServiceAccount(tc.user)
			if ns != tc.ns || sa != tc.name || ok != tc.ok {
				t.Fatalf("ParseServiceAccount(%q) = %q, %q, %v", tc.user, ns, sa, ok)
			}
		})
	}
}

// The API server's issuer keys, read as a service account reads them (every one may: the
// default RBAC binds system:service-account-issuer-discovery to them all), verify the tokens
// the API server mints and refuse the same claims signed with another key.
func TestIssuerKeysVerifyTheAPIServersTokens(t *testing.T) {
	cs := kubernetes.NewForConfigOrDie(cfg)
	token := serviceAccountToken(t, cs, "issuer-keys", "herald")
	asRelay := rest.CopyConfig(cfg)
	asRelay.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:issuer-keys:relay",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:issuer-keys", "system:authenticated"}}
	keys, err := auth.NewIssuerKeys(asRelay)
	if err != nil {
		t.Fatal(err)
	}
	if judged, err := keys.Verify(context.Background(), token); !judged || err != nil {
		t.Fatalf("the API server's own token: judged %t, %v; want its signature accepted", judged, err)
	}
	// The same header and claims, signed with a key of the forger's.
	parts := strings.Split(token, ".")
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	sig, err := rsa.SignPKCS1v15(rand.Reader, forger, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	forged := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	if judged, err := keys.Verify(context.Background(), forged); !judged || !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a forged signature: judged %t, %v; want ErrInvalidToken", judged, err)
	}
}
