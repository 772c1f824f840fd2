package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/sidecar"
	"github.com/heraldhq/herald/relay/usertoken"
)

// A page in headless Chromium gets its user's token from the app, follows three keys through
// the channel's edge starting with the last two events of each, and, through a cut of its
// connection, gets exactly their events: every one once, each key's in order, no other key's;
// the shard relays send the edge only those keys' events.
func TestAPageFollowsItsUsersKeysThroughTheEdge(t *testing.T) {
	js := compileTypeScript(t)
	pages := relaytest.ServePages(t, "testdata")
	pages.Files["/herald.js"] = js

	c := relaytest.StartChannel(t, relaytest.Options{Shards: 3, Modify: func(o *relay.ShardOptions) { o.Map.HistoryPerKey = 5 }}, 1)
	key := []byte("the-app-signs-its-users-tokens!!")
	audience := c.Map.Namespace + "/" + c.Map.Channel
	keys := []string{"user-42", "order-7", "alert-3"}
	pages.HandleFunc("GET /token", func(w http.ResponseWriter, _ *http.Request) {
		// The app's backend: its user may follow their keys, for a minute.
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, nil)
		raw, err := jwt.Signed(signer).Claims(map[string]any{"aud": audience, "sub": "user-42", "exp": time.Now().Add(time.Minute).Unix(),
			"herald": map[string]any{"follow": keys}}).Serialize()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, raw)
	})
	edge := startEdge(t, c, key, audience, pages.URL)
	proxy := relaytest.StartProxy(t, edge)

	last := map[int]string{} // per shard, the newest ID published
	publish := func(k string, n int) {
		i := c.Map.ShardFor(k)
		last[i] = c.Replicas[i][0].MustPublish(t, k, fmt.Sprintf(`{"n":%d}`, n))
	}
	// settled waits until every shard's relay has handed all that was published to its hub.
	settled := func() {
		for i, id := range last {
			want, _ := cursor.Parse(id)
			relaytest.Eventually(t, 10*time.Second, "the relay of shard "+fmt.Sprint(i)+" to deliver "+id, func() bool {
				at, err := cursor.Parse(c.Replicas[i][0].Status().LastDelivered)
				return err == nil && !at.Less(want)
			})
		}
	}
	others := []string{"user-43", "order-70", "alert-"}
	for n := range 4 { // the page starts with the last 2 of each of its keys: n = 2, 3
		for _, k := range append(slices.Clone(keys), others...) {
			publish(k, n)
		}
	}
	var sent uint64
	cut := 0
	pages.OnCut = func() {
		// The page has its first screen: live events while it follows, of its keys and others;
		// the relays send the edge its keys' only.
		before := c.Delivered()
		for n := 4; n < 7; n++ {
			for _, k := range append(slices.Clone(keys), others...) {
				publish(k, n)
			}
		}
		settled()
		sent = c.Delivered() - before
		// A cut, and more events while the page reconnects (it resumes from its cursor).
		cut = proxy.Cut()
		for n := 7; n < 10; n++ {
			for _, k := range append(slices.Clone(keys), others...) {
				publish(k, n)
			}
		}
		for _, k := range keys {
			publish(k, 1000)
		}
	}
	report := pages.Run(t, "/edge.html?"+url.Values{"edge": {proxy.URL + "/v1/channels/" + c.Map.Channel},
		"keys": {strings.Join(keys, ",")}, "history": {"2"}}.Encode(), 90*time.Second)

	var res struct {
		Got    [][2]any `json:"got"`
		Breaks int      `json:"breaks"`
		Tokens int      `json:"tokens"`
	}
	if err := json.Unmarshal(report, &res); err != nil {
		t.Fatalf("report %s: %v", report, err)
	}
	perKey := map[string][]int{}
	for _, e := range res.Got {
		k, n := e[0].(string), int(e[1].(float64))
		perKey[k] = append(perKey[k], n)
	}
	want := []int{2, 3, 4, 5, 6, 7, 8, 9, 1000}
	for _, k := range keys {
		if !slices.Equal(perKey[k], want) {
			t.Errorf("key %s: the page got %v, want %v (the last 2, then every live event once, in order)", k, perKey[k], want)
		}
	}
	if len(perKey) != len(keys) {
		t.Errorf("the page got events of %d keys, want only its %d: %v", len(perKey), len(keys), perKey)
	}
	if cut < 1 || res.Breaks < 1 || res.Tokens < 2 {
		t.Errorf("cut %d connections; the page saw %d breaks and fetched %d tokens: want a reconnect with a fresh token", cut, res.Breaks, res.Tokens)
	}
	if wantSent := uint64(len(keys) * 3); sent != wantSent {
		t.Errorf("while the page followed, the shard relays sent the edge %d events of %d published, want %d: its keys' only", sent, 2*wantSent, wantSent)
	}
}

func compileTypeScript(t *testing.T) []byte {
	t.Helper()
	tsc := tool(t, "tsc", "node-typescript")
	out := t.TempDir()
	cmd := exec.Command(tsc, "--strict", "--target", "es2020", "--module", "es2020", "--lib", "es2020,dom", "--outDir", out, "typescript/herald.ts")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, b)
	}
	js, err := os.ReadFile(filepath.Join(out, "herald.js"))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// startEdge runs the channel's edge for pages of origin, with users' tokens signed with key.
func startEdge(t *testing.T, c *relaytest.Channel, key []byte, audience, origin string) string {
	t.Helper()
	dir := t.TempDir()
	keyFile, eps := filepath.Join(dir, "hmac"), filepath.Join(dir, "endpoints.json")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	c.WriteEndpoints(t, eps)
	users, err := usertoken.New(context.Background(), usertoken.Options{Audience: audience, HMACKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sidecar.New(sidecar.Options{
		Channels:      []sidecar.ChannelRef{{Namespace: c.Map.Namespace, Name: c.Map.Channel}},
		EndpointsFile: eps, Heartbeat: time.Second, RefreshInterval: time.Second,
		Browser: httpapi.Browser{CORSOrigins: []string{origin}},
		Edge:    &sidecar.EdgeOptions{Users: users},
		Logger:  slog.New(slog.NewTextHandler(relaytest.NewTestLog(t), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sc.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sc.Run(ctx) }()
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close(); cancel(); <-done })
	relaytest.Eventually(t, 20*time.Second, "edge ready", sc.Ready)
	return srv.URL
}
