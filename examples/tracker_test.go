package examples_test

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
)

// The sample app's order tracker (config/samples/orders-app), in headless Chromium: the page
// gets its session from the app (a token the app signs with the edge's key), follows three of
// its user's keys through the edge with a plain EventSource, shows the last two events of each
// first, and through a cut of its connection gets every later event of those keys once, in
// order, and nothing of another key, granted or not.
func TestTheSampleTrackerFollowsItsUserThroughTheEdge(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "orders-app")
	if out, err := exec.Command("go", "build", "-o", bin, "../config/samples/orders-app").CombinedOutput(); err != nil {
		t.Fatalf("building the sample app: %v\n%s", err, out)
	}
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 3, Modify: func(o *relay.ShardOptions) { o.Map.HistoryPerKey = 5 }}, 1)
	key := []byte("the-sample-app-signs-its-users!!")
	keyFile := filepath.Join(t.TempDir(), "edge-key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	appAddr := "127.0.0.1:" + freePort(t)
	audience := c.Map.Namespace + "/" + c.Map.Channel
	edge := relaytest.StartProxy(t, startEdge(t, c, key, audience, "http://"+appAddr))

	app := exec.Command(bin)
	app.Env = append(os.Environ(), "CHANNEL="+c.Map.Channel, "PUBLISH_INTERVAL=0", "FOLLOW=false",
		"EDGE_KEY_FILE="+keyFile, "EDGE_URL="+edge.URL, "EDGE_AUDIENCE="+audience, "LISTEN_ADDR="+appAddr)
	app.Stdout, app.Stderr = relaytest.NewTestLog(t), relaytest.NewTestLog(t)
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Process.Kill(); _ = app.Wait() })
	relaytest.Eventually(t, 10*time.Second, "the sample app to listen", func() bool {
		conn, err := net.Dial("tcp", appAddr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})

	followed := []string{"user-42", "user-42/order-1", "user-42/order-2"}
	// Keys on the same shards the page's do not follow: another user's, and one of the user's own
	// that the page did not ask for.
	others := []string{"user-43", "user-42/order-3", "user-7/order-1"}
	publish := func(from, to int) {
		for n := from; n < to; n++ {
			for _, k := range append(slices.Clone(others), followed...) {
				c.Replicas[c.Map.ShardFor(k)][0].MustPublish(t, k, fmt.Sprintf(`{"n":%d}`, n))
			}
		}
	}
	publish(0, 4) // the page starts with the last 2 of each key: n = 2, 3
	tab := relaytest.OpenTab(t, "http://"+appAddr+"/?"+url.Values{"user": {"42"}, "keys": {strings.Join(followed, ",")}, "history": {"2"}}.Encode())
	var page relaytest.TrackerState
	awaitPage := func(what string, cond func() bool) {
		t.Helper()
		relaytest.Eventually(t, 30*time.Second, what, func() bool {
			err := tab.Eval(`window.tracker`, &page)
			return err == nil && cond()
		})
	}
	awaitPage("the first screen", func() bool { return len(page.Events) >= 2*len(followed) })
	publish(4, 7)
	awaitPage("the live events", func() bool { return len(page.Events) >= 5*len(followed) })
	if edge.Cut() < 1 {
		t.Fatal("the page had no connection to the edge to cut")
	}
	publish(7, 10)
	for _, k := range followed {
		c.Replicas[c.Map.ShardFor(k)][0].MustPublish(t, k, `{"n":1000}`)
	}
	awaitPage("every key's last event", func() bool { return page.Has(followed, 1000) })
	page.Check(t, followed, []int{2, 3, 4, 5, 6, 7, 8, 9, 1000})
	if page.Opens < 2 {
		t.Errorf("the page opened its stream %d times, want a reconnect after the cut", page.Opens)
	}
}
