package sidecar_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/sidecar"
)

// follows reads what each upstream stream follows from the sidecar's /readyz.
func follows(t *testing.T, sc *testSidecar) []string {
	t.Helper()
	resp, err := http.Get(sc.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Channels []struct {
			Shards []struct {
				Follows string `json:"follows"`
			} `json:"shards"`
		} `json:"channels"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Channels) != 1 {
		t.Fatalf("/readyz: %v %+v", err, body)
	}
	var out []string
	for _, sh := range body.Channels[0].Shards {
		out = append(out, sh.Follows)
	}
	return out
}

// The relays send a sidecar only what its local subscribers follow: the keys of keyed ones,
// every key only while a whole-channel subscriber is connected.
func TestUpstreamsCarryOnlyTheKeysLocalSubscribersFollow(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 2}, 1)
	sc := startSidecar(t, c, "")
	// publishAll publishes n messages over 25 keys and waits until each relay has handed all of
	// them to its hub, so the next phase counts only its own.
	publishAll := func(n int) map[string]int {
		perKey := map[string]int{}
		last := map[int]cursor.ID{}
		for i := range n {
			key := fmt.Sprint("user-", i%25)
			code, p := sc.publish(t, key, fmt.Sprintf(`{"n":%d}`, i))
			if code != http.StatusAccepted {
				t.Fatalf("publish: %d %+v", code, p)
			}
			perKey[key]++
			last[p.Shard], _ = cursor.Parse(p.ID)
		}
		for shard, id := range last {
			r := c.Replicas[shard][0]
			relaytest.Eventually(t, 10*time.Second, "the relay of shard "+fmt.Sprint(shard)+" to deliver "+id.String(), func() bool {
				at, err := cursor.Parse(r.Status().LastDelivered)
				return err == nil && !at.Less(id)
			})
		}
		return perKey
	}

	a := relaytest.OpenSSE(t, sc.channelURL("/events?key=user-3"), relaytest.SSEOptions{})
	b := relaytest.OpenSSE(t, sc.channelURL("/events?key=user-17"), relaytest.SSEOptions{})
	before := c.Delivered()
	perKey := publishAll(200)
	a.Messages(t, perKey["user-3"], 10*time.Second)
	b.Messages(t, perKey["user-17"], 10*time.Second)
	if got, want := c.Delivered()-before, uint64(perKey["user-3"]+perKey["user-17"]); got != want {
		t.Fatalf("the relays sent the sidecar %d events for 2 keyed subscribers, want %d (their keys' messages only)", got, want)
	}
	want := []string{"0 keys", "0 keys"}
	for _, k := range []string{"user-3", "user-17"} {
		i := c.Map.ShardFor(k)
		n, _ := strconv.Atoi(strings.Fields(want[i])[0])
		want[i] = map[bool]string{true: "1 key", false: strconv.Itoa(n+1) + " keys"}[n == 0]
	}
	if got := follows(t, sc); !slices.Equal(got, want) {
		t.Fatalf("/readyz says the upstreams follow %q, want %q", got, want)
	}

	whole := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	before = c.Delivered()
	publishAll(100)
	whole.Messages(t, 100, 10*time.Second)
	if got := c.Delivered() - before; got != 100 {
		t.Fatalf("with a whole-channel subscriber the relays sent %d events for 100 messages, want 100 (each once)", got)
	}
	if got := follows(t, sc); !slices.Equal(got, []string{"every key", "every key"}) {
		t.Fatalf("/readyz says the upstreams follow %q with a whole-channel subscriber", got)
	}
	whole.Close()
	b.Close()
	relaytest.Eventually(t, 10*time.Second, "the sidecar to follow user-3 alone again", func() bool {
		before := c.Delivered()
		n := publishAll(25)["user-3"]
		a.Messages(t, n, 10*time.Second)
		return c.Delivered()-before == uint64(n)
	})
}

// A stream whose keys would not fit in a URL (here: over a budget of 1 byte) opens following
// every key and narrows to its keys with a change: the subscriber misses nothing, and then the
// relay sends only its key.
func TestAStreamWithTooManyKeysForAURLOpensWideAndNarrows(t *testing.T) {
	defer sidecar.SetOpenKeysBudget(1)()
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 1)
	sc := startSidecar(t, c, "")
	a := relaytest.OpenSSE(t, sc.channelURL("/events?key=user-3"), relaytest.SSEOptions{})
	r := c.Replicas[0][0]
	published := 0
	relaytest.Eventually(t, 10*time.Second, "the relay to send user-3 alone", func() bool {
		before := c.Delivered()
		var last cursor.ID
		for _, key := range []string{"user-1", "user-2", "user-3"} {
			code, p := sc.publish(t, key, fmt.Sprintf(`{"n":%d}`, published))
			if code != http.StatusAccepted {
				t.Fatalf("publish: %d %+v", code, p)
			}
			last, _ = cursor.Parse(p.ID)
		}
		published++
		relaytest.Eventually(t, 10*time.Second, "the relay to deliver "+last.String(), func() bool {
			at, err := cursor.Parse(r.Status().LastDelivered)
			return err == nil && !at.Less(last)
		})
		return c.Delivered()-before == 1
	})
	for i, ev := range a.Messages(t, published, 10*time.Second) {
		if got := decode(t, ev); got.subject != "user-3" || got.n != i {
			t.Fatalf("message %d of user-3's subscriber: %+v", i, got)
		}
	}
}

// Local subscribers come and go on random keys, whole-channel ones among them, while messages
// are published and the relay serving each upstream is killed: every subscriber gets, per key,
// an unbroken run of that key's messages in order, starting no later than the first message
// published after it subscribed.
func TestInterestChangesLoseAndRepeatNothing(t *testing.T) {
	const shards, keys, subscribers, rounds = 2, 12, 6, 8
	c := relaytest.StartChannel(t, relaytest.Options{Shards: shards}, 2)
	sc := startSidecar(t, c, "")

	type pub struct {
		n     int
		start time.Time
	}
	var mu sync.Mutex
	published := map[string][]pub{} // per key, in order
	stop := make(chan struct{})
	var publishers sync.WaitGroup
	var total atomic.Int64
	for range 2 {
		publishers.Add(1)
		go func() {
			defer publishers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprint("k", rand.IntN(keys))
				// Per key one publisher at a time, so its sequence is its publish order.
				mu.Lock()
				n := len(published[key])
				published[key] = append(published[key], pub{n: n, start: time.Now()})
				code, p := sc.publish(t, key, fmt.Sprintf(`{"n":%d}`, n))
				mu.Unlock()
				if code != http.StatusAccepted {
					t.Errorf("publish: %d %+v", code, p)
					return
				}
				total.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}

	var subs sync.WaitGroup
	var opened atomic.Int64
	for si := range subscribers {
		subs.Add(1)
		go func() {
			defer subs.Done()
			for round := range rounds {
				key := fmt.Sprint("k", rand.IntN(keys))
				path := "/events?key=" + key
				if round%4 == si%4 {
					key, path = "", "/events"
				}
				s := relaytest.OpenSSE(t, sc.channelURL(path), relaytest.SSEOptions{})
				since := time.Now()
				opened.Add(1)
				next := map[string]int{} // per key, the message expected next
				for range 15 {
					ev, err := s.Next(20 * time.Second)
					if err != nil || ev.Event != "message" {
						t.Errorf("subscriber %d round %d (%q): %+v %v", si, round, key, ev, err)
						return
					}
					got := decode(t, ev)
					if key != "" && got.subject != key {
						t.Errorf("subscriber of %s got a message of %s", key, got.subject)
						return
					}
					want, seen := next[got.subject]
					if !seen {
						// The first message of a key may be older than the subscription, but
						// none published after it subscribed may be skipped.
						mu.Lock()
						for _, p := range published[got.subject][:got.n] {
							if p.start.After(since) {
								t.Errorf("subscriber %d round %d (%q): first message of %s is %d, but %d was published after it subscribed", si, round, key, got.subject, got.n, p.n)
							}
						}
						mu.Unlock()
					} else if got.n != want {
						t.Errorf("subscriber %d round %d (%q): after message %d of %s came %d (lost or repeated)", si, round, key, want-1, got.subject, got.n)
						return
					}
					next[got.subject] = got.n + 1
				}
				s.Close()
			}
		}()
	}
	// Kill the relay serving each shard's upstream while the subscribers churn.
	for i := range shards {
		relaytest.Eventually(t, 20*time.Second, "subscribers to churn", func() bool { return opened.Load() >= int64(2*subscribers*(i+1)) })
		relaytest.Eventually(t, 20*time.Second, "an upstream stream on shard "+fmt.Sprint(i), func() bool { return upstreamsOf(t, c, i, nil) == 1 })
		for _, r := range c.Replicas[i] {
			if r.Hub().Subscribers() == 1 {
				r.Kill()
				break
			}
		}
	}
	subs.Wait()
	close(stop)
	publishers.Wait()
	if t.Failed() {
		return
	}
	if got := sc.metric(t, "herald_relay_sidecar_upstream_reconnects_total"); got < shards {
		t.Fatalf("%v upstream reconnects after killing a relay of each shard, want at least %d", got, shards)
	}
	t.Logf("%d messages published", total.Load())
}

// A relay from before interest streams takes an interest request for a plain stream: the
// sidecar sees no interest mark on the answer and follows the whole shard the old way, so its
// subscribers are served all the same.
func TestUpstreamFollowsTheWholeShardOfAnOlderRelay(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Server: func(srv *httptest.Server) {
		h := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			q.Del("interest") // as an older relay, which reads only the first key
			r.URL.RawQuery = q.Encode()
			h.ServeHTTP(w, r)
		})
	}}, 1)
	sc := startSidecar(t, c, "")
	a := relaytest.OpenSSE(t, sc.channelURL("/events?key=a"), relaytest.SSEOptions{})
	b := relaytest.OpenSSE(t, sc.channelURL("/events?key=b"), relaytest.SSEOptions{})
	before := c.Delivered()
	for i := range 30 {
		if code, p := sc.publish(t, []string{"a", "b", "c"}[i%3], fmt.Sprintf(`{"n":%d}`, i)); code != http.StatusAccepted {
			t.Fatalf("publish: %d %+v", code, p)
		}
	}
	for _, s := range []*relaytest.SSE{a, b} {
		for j, ev := range s.Messages(t, 10, 10*time.Second) {
			if got := decode(t, ev); got.n/3 != j {
				t.Fatalf("message %d of a keyed subscriber is %d", j, got.n)
			}
		}
	}
	// 30 deliveries or more: the whole shard, key c included (a and b alone are 20). More when
	// the first stream, a plain one of key a to the older relay, overlapped its replacement.
	relaytest.Eventually(t, 10*time.Second, "the older relay to send the whole shard", func() bool { return c.Delivered()-before >= 30 })
}

// An interest comment moves the upstream's position: a subscriber that joined at it, whose
// upstream then breaks before any event, is not sent the messages of its key published before
// it joined when the stream resumes on another replica.
func TestAReconnectResumesFromWhereAKeyWasAdded(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1}, 2)
	sc := startSidecar(t, c, "")
	other := relaytest.OpenSSE(t, sc.channelURL("/events?key=other"), relaytest.SSEOptions{}) // opens the upstream
	for i := range 5 {
		if code, p := sc.publish(t, "late", fmt.Sprintf(`{"n":%d}`, i)); code != http.StatusAccepted {
			t.Fatalf("publish: %d %+v", code, p)
		}
	}
	// A message of other after them: once other has it, the relay broadcast them all (a
	// publish is acknowledged once stored; its relay may broadcast it a moment later, and one
	// still in flight when late joins is rightly sent to it live).
	if code, p := sc.publish(t, "other", `{"n":-1}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	other.Messages(t, 1, 10*time.Second)
	late := relaytest.OpenSSE(t, sc.channelURL("/events?key=late"), relaytest.SSEOptions{})
	var serving *relaytest.Relay
	for _, r := range c.Replicas[0] {
		if r.Hub().Subscribers() == 1 {
			serving = r
		}
	}
	if serving == nil {
		t.Fatal("no relay serves the sidecar's upstream")
	}
	serving.Kill()
	relaytest.Eventually(t, 20*time.Second, "the upstream on the other replica", func() bool { return upstreamsOf(t, c, 0, serving) == 1 })
	if code, p := sc.publish(t, "late", `{"n":100}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	if got := decode(t, late.Messages(t, 1, 10*time.Second)[0]); got.n != 100 {
		t.Fatalf("after the reconnect the subscriber of late got message %d, published before it subscribed; want 100", got.n)
	}
	other.Close()
}

// One local stream follows several keys and a prefix over every shard: it gets exactly their
// events, each with a composite cursor; the relays send the sidecar only those keys; and a
// resume from any cursor it showed sends exactly what came after, once.
func TestAStreamOfSeveralKeysAndAPrefixGetsExactlyThem(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 3}, 1)
	sc := startSidecar(t, c, "")
	keyOn := func(prefix string, shard int) string {
		for n := 0; ; n++ {
			if k := fmt.Sprint(prefix, n); c.Map.ShardFor(k) == shard {
				return k
			}
		}
	}
	followed := []string{keyOn("user-", 0), keyOn("user-", 2)}
	wanted := func(key string) bool { return slices.Contains(followed, key) || strings.HasPrefix(key, "team-7/") }
	s := relaytest.OpenSSE(t, sc.channelURL("/events?key="+followed[0]+"&key="+followed[1]+"&key=team-7/"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })

	var want []string
	publish := func(from, to int) {
		for n := from; n < to; n++ {
			key := []string{followed[0], followed[1], fmt.Sprint("team-7/", n), fmt.Sprint("team-77/", n), fmt.Sprint("user-", n), fmt.Sprint("team-7", n)}[n%6]
			if code, p := sc.publish(t, key, fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
				t.Fatalf("publish: %d %+v", code, p)
			}
			if wanted(key) {
				want = append(want, fmt.Sprint(key, " ", n))
			}
		}
	}
	before := c.Delivered()
	publish(0, 120)
	got := s.Messages(t, len(want), 10*time.Second)
	var seen []string
	for _, ev := range got {
		m := decode(t, ev)
		if strings.Count(m.id, ".") != 2 {
			t.Fatalf("event %s: the cursor of a stream of several keys is not a 3-shard composite", m.id)
		}
		seen = append(seen, fmt.Sprint(m.subject, " ", m.n))
	}
	slices.Sort(seen)
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Fatalf("the stream of %q and team-7/ got\n%q\nwant\n%q", followed, seen, want)
	}
	// "user-<n>" keys are followed (wanted) only for the two chosen ones; the relays sent the
	// sidecar no other key.
	if sent := c.Delivered() - before; sent != uint64(len(want)) {
		t.Fatalf("the relays sent the sidecar %d events, want %d (the followed keys' only)", sent, len(want))
	}

	// Resume from the middle: exactly what came after, live included, nothing twice.
	mid := got[len(got)/2].ID
	s.Close()
	relaytest.Eventually(t, 10*time.Second, "subscriber gone", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 0 })
	var after []string
	for _, ev := range got[len(got)/2+1:] {
		m := decode(t, ev)
		after = append(after, fmt.Sprint(m.subject, " ", m.n))
	}
	want = nil
	publish(120, 180)
	after = append(after, want...)
	r := relaytest.OpenSSE(t, sc.channelURL("/events?key=team-7/&key="+followed[1]+"&key="+followed[0]), relaytest.SSEOptions{LastEventID: mid})
	var resumed []string
	for _, ev := range r.Messages(t, len(after), 15*time.Second) {
		m := decode(t, ev)
		resumed = append(resumed, fmt.Sprint(m.subject, " ", m.n))
	}
	slices.Sort(resumed)
	slices.Sort(after)
	if !slices.Equal(resumed, after) {
		t.Fatalf("resumed after %s got\n%q\nwant\n%q", mid, resumed, after)
	}
	want = nil
	publish(180, 186)
	var live []string
	for _, ev := range r.Messages(t, len(want), 10*time.Second) {
		m := decode(t, ev)
		live = append(live, fmt.Sprint(m.subject, " ", m.n))
	}
	slices.Sort(live)
	slices.Sort(want) // shards' streams interleave in any order
	if !slices.Equal(live, want) {
		t.Fatalf("after the resume the live stream got %q, want %q", live, want)
	}
}
