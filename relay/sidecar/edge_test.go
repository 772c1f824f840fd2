package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay/sidecar"
	"github.com/heraldhq/herald/relay/usertoken"
)

var edgeKey = []byte("edge-test-key-edge-test-key-0123")

// mint signs claims with key (HS256), as an app's backend does for its users.
func mint(t testing.TB, key []byte, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// userClaims is a user's token for audience: valid for a minute, following and publishing as given.
func userClaims(audience, sub string, follow, publish []string) map[string]any {
	return map[string]any{"aud": audience, "sub": sub, "exp": time.Now().Add(time.Minute).Unix(),
		"herald": map[string]any{"follow": follow, "publish": publish}}
}

type testEdge struct {
	URL, channel, audience string
	stop                   func() // a shutdown: ends Run, which drains the streams
}

// startEdge runs an edge for c's channel whose users' tokens are signed with edgeKey.
func startEdge(t *testing.T, c *relaytest.Channel, o sidecar.EdgeOptions) *testEdge {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(keyFile, edgeKey, 0o600); err != nil {
		t.Fatal(err)
	}
	audience := c.Map.Namespace + "/" + c.Map.Channel
	v, err := usertoken.New(context.Background(), usertoken.Options{Audience: audience, HMACKeyFile: keyFile, Leeway: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o.Users = v
	eps := filepath.Join(t.TempDir(), "endpoints.json")
	c.WriteEndpoints(t, eps)
	sc, url, stop := runSidecar(t, sidecar.Options{
		Channels:      []sidecar.ChannelRef{{Namespace: c.Map.Namespace, Name: c.Map.Channel}},
		EndpointsFile: eps, Heartbeat: time.Second, RefreshInterval: time.Second, Edge: &o,
	})
	relaytest.Eventually(t, 20*time.Second, "edge ready", func() bool { return sc.Ready() })
	return &testEdge{URL: url, channel: c.Map.Channel, audience: audience, stop: stop}
}

func (e *testEdge) url(path string) string { return e.URL + "/v1/channels/" + e.channel + path }

// call makes one request with a token as a bearer and returns the status and body.
func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, string(b)
}

// The edge lets a user follow exactly what the app's token grants: three keys on one stream
// (two keys and a prefix, none named: the grant's), with nothing else arriving; every refusal
// answers 401 or 403 with a problem that says why, and would pass on an edge without the check.
func TestTheEdgeServesWhatTheTokenGrantsAndRefusesTheRest(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 3}, 1)
	app := startSidecar(t, c, "") // publishes, as the app's pod does
	edge := startEdge(t, c, sidecar.EdgeOptions{StreamsPerUser: 2})
	grant := []string{"user-42", "order-7", "team-7/"}
	token := mint(t, edgeKey, userClaims(edge.audience, "user-42", grant, []string{"user-42"}))

	s := relaytest.OpenSSE(t, edge.url("/events?token="+token), relaytest.SSEOptions{})
	var want []string
	for n := range 60 {
		key := []string{"user-42", "order-7", fmt.Sprint("team-7/", n), "user-43", "order-70", fmt.Sprint("team-77/", n)}[n%6]
		if code, p := app.publish(t, key, fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
			t.Fatalf("publish: %d %+v", code, p)
		}
		if n%6 < 3 {
			want = append(want, fmt.Sprint(key, " ", n))
		}
	}
	var got []string
	for _, ev := range s.Messages(t, len(want), 10*time.Second) {
		m := decode(t, ev)
		got = append(got, fmt.Sprint(m.subject, " ", m.n))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the user's stream got\n%q\nwant\n%q", got, want)
	}

	expired := userClaims(edge.audience, "user-42", grant, nil)
	expired["exp"] = time.Now().Add(-time.Minute).Unix()
	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
		says                            string
	}{
		{"no token", "GET", "/events", "", "", 401, "no token"},
		{"forged signature", "GET", "/events", mint(t, []byte("another-key-another-key-another-k"), userClaims(edge.audience, "user-42", grant, nil)), "", 401, "signature does not verify"},
		{"expired", "GET", "/events", mint(t, edgeKey, expired), "", 401, "expired"},
		{"another channel's audience", "GET", "/events", mint(t, edgeKey, userClaims("other/payments", "user-42", grant, nil)), "", 401, "minted for another channel"},
		{"a foreign key", "GET", "/events?key=user-43", token, "", 403, `does not grant following \"user-43\"`},
		{"a wider prefix", "GET", "/events?key=team-/", token, "", 403, `does not grant following \"team-/\"`},
		{"a key beside the prefix", "GET", "/events?key=team-7", token, "", 403, `does not grant following \"team-7\"`},
		{"the whole channel", "GET", "/events", mint(t, edgeKey, userClaims(edge.audience, "user-9", nil, nil)), "", 403, "grants no keys to follow"},
		{"a WebSocket to a foreign key", "GET", "/ws?key=user-43", token, "", 403, "does not grant following"},
		{"publish to a foreign key", "POST", "/messages?key=user-43", token, `{"a":1}`, 403, `does not grant publishing to \"user-43\"`},
		{"publish without a grant", "POST", "/messages?key=order-7", token, `{"a":1}`, 403, "does not grant publishing"},
		{"the shard map", "GET", "/shards", token, "", 404, ""},
	} {
		code, body := call(t, tc.method, edge.url(tc.path), tc.token, tc.body)
		if code != tc.code || !strings.Contains(body, tc.says) {
			t.Errorf("%s: answered %d %s, want %d saying %q", tc.name, code, body, tc.code, tc.says)
		}
	}
	if code, body := call(t, "GET", edge.URL+"/metrics", token, ""); code != http.StatusNotFound {
		t.Errorf("GET /metrics at the edge answered %d %.100s, want 404 (metrics are served on their own listener)", code, body)
	}
	if code, body := call(t, "POST", edge.url("/messages?key=user-42"), token, `{"from":"the user"}`); code != http.StatusAccepted {
		t.Errorf("a granted publish answered %d %s", code, body)
	}

	// A user holds at most StreamsPerUser streams (one is open).
	second := relaytest.OpenSSE(t, edge.url("/events?key=user-42"), relaytest.SSEOptions{Header: http.Header{"Authorization": {"Bearer " + token}}})
	defer second.Close()
	if code, body := call(t, "GET", edge.url("/events?key=order-7"), token, ""); code != http.StatusTooManyRequests || !strings.Contains(body, `user \"user-42\" holds 2 streams`) {
		t.Errorf("a third stream of one user answered %d %s, want 429", code, body)
	}
}

// A stream whose token expires ends with a reason and its cursor: the client reconnects with a
// fresh token and resumes.
func TestAStreamEndsWhenItsTokenExpires(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 1)
	app := startSidecar(t, c, "")
	edge := startEdge(t, c, sidecar.EdgeOptions{})
	claims := userClaims(edge.audience, "user-1", []string{"user-1"}, nil)
	claims["exp"] = time.Now().Add(2 * time.Second).Unix()
	s := relaytest.OpenSSE(t, edge.url("/events"), relaytest.SSEOptions{Header: http.Header{"Cookie": {usertoken.CookieName + "=" + mint(t, edgeKey, claims)}}})
	if code, _ := app.publish(t, "user-1", `{"n":1}`); code != http.StatusAccepted {
		t.Fatal("publish failed")
	}
	last := s.Messages(t, 1, 10*time.Second)[0].ID
	for {
		ev, err := s.Next(10 * time.Second)
		if err != nil {
			t.Fatalf("the stream did not end with a reason when its token expired: %v", err)
		}
		if ev.Comment != "" && ev.Comment != "heartbeat" {
			if want := "closed: the token expired; get a fresh one from the app; reconnect with Last-Event-ID " + last + " to resume"; ev.Comment != want {
				t.Fatalf("the stream ended with %q, want %q", ev.Comment, want)
			}
			return
		}
	}
}

// A shutdown drains the edge: every stream ends with a reason and its cursor, spread over the
// drain time, so the pods left take the reconnects a few at a time.
func TestAShutdownSendsTheEdgesUsersElsewhereAFewAtATime(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 1)
	edge := startEdge(t, c, sidecar.EdgeOptions{DrainSpread: time.Second})
	token := mint(t, edgeKey, userClaims(edge.audience, "user-1", []string{"user-1"}, nil))
	const n = 10
	ended := make(chan time.Time, n)
	for range n {
		s := relaytest.OpenSSE(t, edge.url("/events?token="+token), relaytest.SSEOptions{})
		go func() {
			for {
				ev, err := s.Next(20 * time.Second)
				if err != nil {
					return
				}
				if strings.HasPrefix(ev.Comment, "closed: this edge is shutting down; reconnect with Last-Event-ID ") {
					ended <- time.Now()
					return
				}
			}
		}()
	}
	start := time.Now() // each stream registered before its answer's head came: all are live

	edge.stop()
	var last time.Time
	for i := range n {
		select {
		case e := <-ended:
			if e.After(last) {
				last = e
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d streams were told the edge is shutting down", i, n)
		}
	}
	if spread := last.Sub(start); spread < 800*time.Millisecond {
		t.Fatalf("the last stream ended %v after the shutdown began, want the ends spread over most of the 1s drain", spread)
	}
}
