package relay_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/httpapi"
)

// nextFrame returns the next frame that is not a heartbeat: an event or a comment.
func nextFrame(t *testing.T, s *relaytest.SSE) relaytest.Event {
	t.Helper()
	ev, err := s.Next(10 * time.Second)
	if err != nil {
		t.Fatalf("next frame: %v", err)
	}
	return ev
}

// keyOf returns a key of shard i of r's channel, made from prefix.
func keyOf(r *relaytest.Relay, prefix string, i int) string {
	for n := 0; ; n++ {
		if k := fmt.Sprint(prefix, n); r.Map.ShardFor(k) == i {
			return k
		}
	}
}

func postChange(t *testing.T, url, body, contentType string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("POST %s answered %d with %q", url, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

// An interest stream follows the keys it is given, changes them while connected, says in the
// stream where each change took effect, and resumes exactly from any cursor it showed.
func TestInterestStreamChangesItsKeysWhileConnected(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Shards: 2})
	a, b, c := keyOf(r, "a", 0), keyOf(r, "b", 0), keyOf(r, "c", 0)
	elsewhere := keyOf(r, "x", 1)

	s := relaytest.OpenSSE(t, r.ChannelURL("/events?interest=keys&key="+a), relaytest.SSEOptions{})
	hello := nextFrame(t, s)
	id, ok := strings.CutPrefix(hello.Comment, "stream ")
	if !ok || len(id) != 32 {
		t.Fatalf("an interest stream opens with %+v, want the comment \"stream <id>\"", hello)
	}
	streamURL := r.ChannelURL("/streams/" + id)
	message := func(key string) relaytest.Event {
		t.Helper()
		ev := nextFrame(t, s)
		if ev.Event != "message" || ev.CloudEvent(t).Subject != key {
			t.Fatalf("got %+v, want a message of key %s", ev, key)
		}
		return ev
	}

	r.MustPublish(t, b, `{"n":1}`)
	r.MustPublish(t, a, `{"n":2}`)
	message(a) // b is not followed

	code, v := postChange(t, streamURL, `{"seq":1,"add":["`+b+`"],"remove":["`+a+`"]}`, "application/json")
	if code != http.StatusOK || v["seq"] != 1.0 || v["keys"] != 1.0 || v["all"] != false {
		t.Fatalf("change answered %d %v", code, v)
	}
	if ev := nextFrame(t, s); ev.Comment != "interest 1 "+v["at"].(string) {
		t.Fatalf("after the change the stream shows %+v, want the comment \"interest 1 %s\"", ev, v["at"])
	}
	r.MustPublish(t, a, `{"n":3}`)
	r.MustPublish(t, b, `{"n":4}`)
	atB := message(b).ID

	code, v = postChange(t, streamURL, `{"seq":2,"all":true}`, "application/json")
	if code != http.StatusOK || v["all"] != true || v["at"] != atB {
		t.Fatalf("switching to every key answered %d %v, want it in effect after %s", code, v, atB)
	}
	if ev := nextFrame(t, s); ev.Comment != "interest 2 "+atB {
		t.Fatalf("got %+v, want the comment \"interest 2 %s\"", ev, atB)
	}
	r.MustPublish(t, c, `{"n":5}`)
	r.MustPublish(t, a, `{"n":6}`)
	message(c)
	last := message(a).ID

	// Bad changes are refused with a reason; the stream goes on.
	for _, tc := range []struct {
		url, body, contentType string
		code                   int
		says                   string
	}{
		{r.ChannelURL("/streams/0123"), `{"seq":3}`, "application/json", http.StatusNotFound, "no interest stream"},
		{streamURL, `{"seq":3,"add":"a"}`, "application/json", http.StatusBadRequest, "not a change"},
		{streamURL, `{"seq":3,"keys":["a"]}`, "application/json", http.StatusBadRequest, "unknown field"},
		{streamURL, `{"seq":3}{}`, "application/json", http.StatusBadRequest, "trailing"},
		{streamURL, `{"seq":3,"add":[""]}`, "application/json", http.StatusBadRequest, "empty"},
		{streamURL, `{"seq":3}`, "text/plain", http.StatusUnsupportedMediaType, "application/json"},
		{streamURL, `{"seq":3,"add":["` + elsewhere + `"]}`, "application/json", http.StatusMisdirectedRequest, "belongs to shard 1"},
	} {
		if code, v := postChange(t, tc.url, tc.body, tc.contentType); code != tc.code || !strings.Contains(fmt.Sprint(v["detail"]), tc.says) {
			t.Errorf("POST %s: answered %d %v, want %d saying %q", tc.body, code, v, tc.code, tc.says)
		}
	}
	for _, tc := range []struct{ query, says string }{
		{"?interest=some", "query parameter interest must be"},
		{"?interest=keys&key=" + elsewhere, "belongs to shard 1"},
		{"?interest=keys&live=false&since=0-0", "cannot be replay-only"},
	} {
		resp, err := http.Get(r.ChannelURL("/events" + tc.query))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 4 || !strings.Contains(string(body), tc.says) {
			t.Errorf("GET %s answered %d %s, want a 4xx saying %q", tc.query, resp.StatusCode, body, tc.says)
		}
	}

	if got := r.Metric(t, "herald_relay_interest_changes_total"); got != 2 {
		t.Fatalf("herald_relay_interest_changes_total = %v, want 2 (refused changes do not count)", got)
	}

	// A new stream resuming after the last cursor with the current interest gets exactly what
	// came since; the old stream's id is gone with it.
	s.Close()
	relaytest.Eventually(t, 5*time.Second, "the old stream to end", func() bool {
		code, _ := postChange(t, streamURL, `{"seq":9}`, "application/json")
		return code == http.StatusNotFound
	})
	r.MustPublish(t, b, `{"n":7}`)
	s = relaytest.OpenSSE(t, r.ChannelURL("/events?interest=keys&key="+b), relaytest.SSEOptions{LastEventID: last})
	if ev := nextFrame(t, s); ev.Event != "message" || ev.CloudEvent(t).Subject != b || !strings.Contains(ev.Data, `"n":7`) {
		t.Fatalf("the resumed stream starts with %+v, want message 7", ev)
	}
	if ev := nextFrame(t, s); !strings.HasPrefix(ev.Comment, "stream ") {
		t.Fatalf("after its replay the resumed stream shows %+v, want its announcement", ev)
	}
}

// A caller's interest streams follow at most its budget of keys, opened or changed (429 past
// it, naming the limit), and a caller changes them at most at its rate.
func TestInterestKeysAndChangesAreBudgeted(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Limits = httpapi.Limits{InterestKeysPerCaller: 5, InterestChangeRate: 1}
	}})
	s := relaytest.OpenSSE(t, r.ChannelURL("/events?interest=keys&key=a1&key=a2&key=a3"), relaytest.SSEOptions{})
	id, _ := strings.CutPrefix(nextFrame(t, s).Comment, "stream ")
	streamURL := r.ChannelURL("/streams/" + id)

	refused := func(resp *http.Response, limit string) {
		t.Helper()
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != http.StatusTooManyRequests || body["limit"] != limit || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("answered %d %v, want 429 for the limit %s", resp.StatusCode, body, limit)
		}
	}
	resp, err := http.Get(r.ChannelURL("/events?interest=keys&key=b1&key=b2&key=b3"))
	if err != nil {
		t.Fatal(err)
	}
	refused(resp, "interest_keys_per_caller") // 3 + 3 keys

	if resp, err = http.Post(streamURL, "application/json", strings.NewReader(`{"seq":1,"add":["a4","a5","a6"]}`)); err != nil {
		t.Fatal(err)
	}
	refused(resp, "interest_keys_per_caller") // 3 + 3 keys
	if code, v := postChange(t, streamURL, `{"seq":2,"add":["a4","a5"],"remove":["a1"]}`, "application/json"); code != http.StatusOK || v["keys"] != 4.0 {
		t.Fatalf("a change within the budget answered %d %v", code, v)
	}
	if resp, err = http.Post(streamURL, "application/json", strings.NewReader(`{"seq":3,"remove":["a2"]}`)); err != nil {
		t.Fatal(err)
	}
	refused(resp, "interest_change_rate") // a burst of 2 per second, both spent
}

// A plain stream may follow several keys and key prefixes (key= repeated, a prefix ends with
// "/"): live and in replay it gets exactly the events of those keys, and a prefix is followed
// on every shard, since the keys under it hash anywhere.
func TestAStreamFollowsSeveralKeysAndPrefixes(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Shards: 2})
	a, b := keyOf(r, "a", 0), keyOf(r, "b", 0)
	underTeam := keyOf(r, "team/", 0)
	elsewhere := keyOf(r, "x", 1)
	nearMiss := keyOf(r, "teams", 0) // shares the letters, not the prefix

	s := relaytest.OpenSSE(t, r.ChannelURL("/events?key="+a+"&key=team/"), relaytest.SSEOptions{})
	first := r.MustPublish(t, b, `{"n":1}`)
	r.MustPublish(t, underTeam, `{"n":2}`)
	r.MustPublish(t, nearMiss, `{"n":3}`)
	r.MustPublish(t, a, `{"n":4}`)
	var live []string
	for range 2 {
		ev := nextFrame(t, s)
		if ev.Event != "message" {
			t.Fatalf("a stream of fixed keys sent %+v, want messages only (it is not announced)", ev)
		}
		live = append(live, ev.CloudEvent(t).Subject+" "+ev.ID)
	}
	if !strings.HasPrefix(live[0], underTeam+" ") || !strings.HasPrefix(live[1], a+" ") {
		t.Fatalf("live: got %q, want the events of %s then %s", live, underTeam, a)
	}

	replay := relaytest.OpenSSE(t, r.ChannelURL("/events?live=false&key=team/&key="+a), relaytest.SSEOptions{LastEventID: first})
	var replayed []string
	for {
		ev, err := replay.Next(10 * time.Second)
		if err != nil {
			break // the replay-only stream ended
		}
		if ev.Event == "message" {
			replayed = append(replayed, ev.CloudEvent(t).Subject+" "+ev.ID)
		}
	}
	if strings.Join(replayed, ",") != strings.Join(live, ",") {
		t.Fatalf("replay after %s sent %q, want what the live stream sent: %q", first, replayed, live)
	}

	for _, tc := range []struct {
		query string
		code  int
		says  string
	}{
		{"?key=" + a + "&key=" + elsewhere, http.StatusMisdirectedRequest, "shard 1"},
		{"?key=" + a + strings.Repeat("&key=k", httpapi.MaxStreamKeys), http.StatusBadRequest, "at most 1000 keys"},
		{"?key=" + a + "&key=", http.StatusBadRequest, "empty"},
	} {
		resp, err := http.Get(r.ChannelURL("/events" + tc.query))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.says) {
			t.Errorf("GET %.80s: %d %s, want %d saying %q", tc.query, resp.StatusCode, body, tc.code, tc.says)
		}
	}
}

// ?history=N starts a stream with the last N events of each of its keys, oldest first, then
// goes live with nothing twice at the seam; a resumed stream ignores it (its cursor says what
// it needs), and a channel without history, a prefix or too deep a history is refused.
func TestAStreamStartsWithTheLastEventsOfEachKey(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Shards: 2, Modify: func(o *relay.ShardOptions) { o.Map.HistoryPerKey = 3 }})
	a, b, other := keyOf(r, "a", 0), keyOf(r, "b", 0), keyOf(r, "c", 0)
	var ids = map[string][]string{}
	for n := range 5 {
		for _, k := range []string{a, b, other} {
			ids[k] = append(ids[k], r.MustPublish(t, k, fmt.Sprintf(`{"n":%d}`, n)))
		}
	}
	want := append(append([]string(nil), ids[a][3:]...), ids[b][3:]...) // the last 2 of a and b
	slices.Sort(want)                                                   // oldest first

	s := relaytest.OpenSSE(t, r.ChannelURL("/events?history=2&key="+a+"&key="+b), relaytest.SSEOptions{})
	var got []string
	for range want {
		got = append(got, nextFrame(t, s).ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("history: got %q, want the last 2 of %s and %s, oldest first: %q", got, a, b, want)
	}
	live := r.MustPublish(t, b, `{"n":5}`)
	r.MustPublish(t, other, `{"n":6}`)
	if ev := nextFrame(t, s); ev.ID != live {
		t.Fatalf("after the history the stream sent %+v, want the live event %s", ev, live)
	}

	// Replay-only history (what a sidecar reads), and one key's.
	h := relaytest.OpenSSE(t, r.ChannelURL("/events?live=false&history=3&key="+a), relaytest.SSEOptions{})
	got = nil
	for {
		ev, err := h.Next(10 * time.Second)
		if err != nil || ev.Comment == "end of replay" {
			break
		}
		got = append(got, ev.ID)
	}
	if !slices.Equal(got, ids[a][2:]) {
		t.Fatalf("history of %s alone: got %q, want %q", a, got, ids[a][2:])
	}

	// A resumed stream gets what came after its cursor, not the history.
	resumed := relaytest.OpenSSE(t, r.ChannelURL("/events?history=2&key="+b), relaytest.SSEOptions{LastEventID: ids[b][4]})
	if ev := nextFrame(t, resumed); ev.ID != live {
		t.Fatalf("a resumed stream with ?history sent %+v first, want %s (the event after its cursor)", ev, live)
	}

	for _, tc := range []struct{ query, says string }{
		{"?history=4&key=" + a, "keeps the last 3 events of each key"},
		{"?history=0&key=" + a, "must be a number of events, 1 or more"},
		{"?history=2&key=team/", "is a prefix"},
		{"?history=2", "name the keys"},
		{"?history=2&interest=keys&key=" + a, "interest streams start with no history"},
	} {
		resp, err := http.Get(r.ChannelURL("/events" + tc.query))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.says) {
			t.Errorf("GET %s: %d %s, want 400 saying %q", tc.query, resp.StatusCode, body, tc.says)
		}
	}
	plain := relaytest.StartRelay(t, relaytest.Options{})
	resp, err := http.Get(plain.ChannelURL("/events?history=1&key=x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "keeps no history per key") {
		t.Errorf("history on a channel without it: %d %s", resp.StatusCode, body)
	}
}
