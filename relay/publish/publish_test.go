package publish

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// FuzzEventKeys: a Herald-Event-Keys value is refused, or reads as keys that write back as a
// value that reads the same.
func FuzzEventKeys(f *testing.F) {
	f.Add("k:abc - r:sidecar-0f", 3)
	f.Add("k:a:b  -\tk:", 3)
	f.Add("x:y", 1)
	f.Fuzz(func(t *testing.T, v string, n int) {
		if n < 0 || n > 1000 {
			return
		}
		keys, err := ParseEventKeys(v, n)
		if err != nil {
			return
		}
		var b []byte
		for _, k := range keys {
			if k.Key != "" && ValidIdempotencyKey(k.Key) != nil {
				t.Fatalf("%q gave the invalid key %q", v, k.Key)
			}
			b = AppendEventKey(b, k)
		}
		again, err := ParseEventKeys(string(b), n)
		if err != nil || !reflect.DeepEqual(again, keys) {
			t.Fatalf("%q -> %+v -> %q -> %+v (%v)", v, keys, b, again, err)
		}
	})
}

// The publish answer built by hand says what encoding/json would (it does not escape <, > and
// & as encoding/json does for HTML, which JSON does not need).
func TestPublishAnswerIsWhatEncodingJSONWrites(t *testing.T) {
	yes, three := true, 3
	for _, r := range []Result{
		{ID: "1-0", Shard: 0, EventID: "0:1-0"},
		{ID: "1796163194967-12", Shard: 7, EventID: "order \"42\" <é>\u2028\x01\xff\\", Duplicate: true},
		{ID: "2-0", Shard: 1, EventID: "e", Replicated: &yes, Replicas: &three},
	} {
		b, _ := json.Marshal(r)
		got := r.AppendJSON(nil)
		var want, have any
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got, &have); err != nil || !reflect.DeepEqual(have, want) {
			t.Errorf("hand-built %q, encoding/json %q (%v)", got, b, err)
		}
	}
}

// An outcome reads back as what was written, a stored event's or a failure's, and an answer
// that is not about events is told apart.
func TestOutcomesReadBackAsWritten(t *testing.T) {
	yes, one := true, 1
	outcomes := []Outcome{
		{Result: Result{ID: "1-0", Shard: 2, EventID: "2:1-0", Duplicate: true, Replicated: &yes, Replicas: &one}},
		Failed(409, "its Idempotency-Key was used for another message"),
		Failed(503, "Redis did not accept it"),
	}
	b := []byte(`{"events":[`)
	for i, o := range outcomes {
		if i > 0 {
			b = append(b, ',')
		}
		b = o.AppendJSON(b)
	}
	b = append(b, "]}"...)
	got, ok := ParseBatchAnswer(b)
	if !ok || !reflect.DeepEqual(got, outcomes) {
		t.Fatalf("%s read back as %+v (%v), want %+v", b, got, ok, outcomes)
	}
	for _, other := range []string{`{"type":"x","status":415,"detail":"no"}`, `{"events":[]}`, `{"events":[{}]}`, `not json`} {
		if _, ok := ParseBatchAnswer([]byte(other)); ok {
			t.Errorf("%s read as a batch's outcomes", other)
		}
	}
}

// Read takes what a relay stores and refuses the rest with the status and detail a client can
// act on, naming the event of a batch; each event gets its key and the key it is deduplicated by.
func TestReadValidatesEveryEvent(t *testing.T) {
	const structured, batch = "application/cloudevents+json", "application/cloudevents-batch+json"
	tests := map[string]struct {
		query, ct, body string
		header          map[string]string
		status          int    // 0: valid
		says            string // in the detail
		keys, idem      []string
	}{
		"binary with ?key":         {query: "key=a", ct: "application/json", body: `{"n":1}`, keys: []string{"a"}, idem: []string{""}},
		"no key":                   {ct: "application/json", body: `{}`, status: 400, says: "needs a key"},
		"key and subject differ":   {query: "key=a", ct: structured, body: `{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"b","data":1}`, status: 400, says: "differ"},
		"data over the bound":      {query: "key=a", ct: "text/plain", body: "12345678901", status: 413, says: "over this channel's maxMessageBytes (10)"},
		"no media type":            {query: "key=a", body: `x`, status: 415},
		"the event's id wins":      {query: "key=a", ct: structured, body: `{"specversion":"1.0","id":"e1","source":"s","type":"t","data":1}`, keys: []string{"a"}, idem: []string{eventIdempotencyKey("s", "e1")}},
		"the app's key wins":       {query: "key=a", ct: "text/plain", body: "x", header: map[string]string{IdempotencyKeyHeader: "k1"}, keys: []string{"a"}, idem: []string{"k1"}},
		"a batch: an empty id":     {ct: batch, body: `[{"specversion":"1.0","id":"e","source":"s","type":"t","subject":"a"},{"specversion":"1.0","id":"","source":"s","type":"t","subject":"b"}]`, header: map[string]string{IdempotencyKeyHeader: "k"}, status: 400, says: "event 1:"},
		"a batch: key and index":   {ct: batch, body: `[{"subject":"a","data":1},{"subject":"b","data":2}]`, header: map[string]string{IdempotencyKeyHeader: "k"}, keys: []string{"a", "b"}, idem: []string{batchIdempotencyKey("k", 0), batchIdempotencyKey("k", 1)}},
		"a batch with ?key":        {query: "key=q", ct: batch, body: `[{"specversion":"1.0","id":"e","source":"s","type":"t"},{"specversion":"1.0","id":"f","source":"s","type":"t","subject":"q"}]`, keys: []string{"q", "q"}, idem: []string{eventIdempotencyKey("s", "e"), eventIdempotencyKey("s", "f")}},
		"a batch event over":       {query: "key=q", ct: batch, body: `[{"specversion":"1.0","id":"e","source":"s","type":"t","data":"12345678901"}]`, status: 413, says: "event 0: data of 13 bytes"},
		"event keys and a key":     {query: "key=q", ct: batch, body: `[{"specversion":"1.0","id":"e","source":"s","type":"t"}]`, header: map[string]string{IdempotencyKeyHeader: "k", EventKeysHeader: "k:x"}, status: 400, says: "exclude each other"},
		"event keys, one each":     {query: "key=q", ct: batch, body: `[{"specversion":"1.0","id":"e","source":"s","type":"t"},{"specversion":"1.0","id":"f","source":"s","type":"t"}]`, header: map[string]string{EventKeysHeader: "k:x r:y"}, keys: []string{"q", "q"}, idem: []string{"x", eventIdempotencyKey("s", "f")}},
		"event keys, wrong number": {query: "key=q", ct: batch, body: `[{"specversion":"1.0","id":"e","source":"s","type":"t"}]`, header: map[string]string{EventKeysHeader: "k:x r:y"}, status: 400, says: "2 tokens for 1 events"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/channels/c/messages?"+tc.query, strings.NewReader(tc.body))
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			p, err := ReadParams(r)
			if err != nil {
				t.Fatalf("ReadParams: %v", err)
			}
			req, bad := Read(p, r.Header, []byte(tc.body), 10, nil)
			if tc.status != 0 {
				if bad == nil || bad.Status != tc.status || !strings.Contains(bad.Detail, tc.says) {
					t.Fatalf("Read = %+v, want %d saying %q", bad, tc.status, tc.says)
				}
				return
			}
			if bad != nil {
				t.Fatalf("Read refused a valid publish: %+v", bad)
			}
			var keys, idem []string
			for _, ev := range req.Events {
				keys, idem = append(keys, ev.Key), append(idem, ev.Idempotency)
			}
			if !reflect.DeepEqual(keys, tc.keys) || !reflect.DeepEqual(idem, tc.idem) {
				t.Fatalf("keys %q, idempotency keys %q; want %q and %q", keys, idem, tc.keys, tc.idem)
			}
		})
	}
}

// Whatever a request carries, reading it never panics, and what it takes has a key, data
// within the bound and an Idempotency-Key that fits the header's rules.
func FuzzRead(f *testing.F) {
	f.Add("application/cloudevents+json", `{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"k","data":{"a":1}}`, "", "")
	f.Add("application/cloudevents-batch+json", `[{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"k"}]`, "k", "k:x")
	f.Add("text/plain", "hello", "key", "")
	f.Fuzz(func(t *testing.T, ct, body, key, eventKeys string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/channels/c/messages", strings.NewReader(body))
		r.URL.RawQuery = url.Values{"key": {key}}.Encode()
		r.Header.Set("Content-Type", ct)
		if eventKeys != "" {
			r.Header.Set(EventKeysHeader, eventKeys)
		}
		p, err := ReadParams(r)
		if err != nil {
			return
		}
		req, bad := Read(p, r.Header, []byte(body), 64, nil)
		if bad != nil {
			if bad.Status < 400 || bad.Status > 499 || bad.Detail == "" {
				t.Fatalf("refused with %d %q", bad.Status, bad.Detail)
			}
			return
		}
		for i, ev := range req.Events {
			if ev.Key == "" || len(ev.Data) > 64 || (ev.Idempotency != "" && ValidIdempotencyKey(ev.Idempotency) != nil) {
				t.Fatalf("event %d taken with key %q, %d bytes of data, Idempotency-Key %q", i, ev.Key, len(ev.Data), ev.Idempotency)
			}
		}
	})
}
