package relaytest

import (
	"slices"
	"testing"
)

// TrackerState is window.tracker of the sample app's order tracker page
// (config/samples/orders-app/tracker.html): what it got, for tests that read it with a Tab.
type TrackerState struct {
	Events   []TrackerEvent `json:"events"`
	Gaps     int            `json:"gaps"`
	Opens    int            `json:"opens"`
	Sessions int            `json:"sessions"`
}

// TrackerEvent is an event the page got: its key (the CloudEvent subject) and data {"n": N}.
type TrackerEvent struct {
	Key  string `json:"key"`
	Data struct {
		N int `json:"n"`
	} `json:"data"`
}

// Has says whether the page got event n of every key.
func (s TrackerState) Has(keys []string, n int) bool {
	for _, k := range keys {
		if !slices.ContainsFunc(s.Events, func(e TrackerEvent) bool { return e.Key == k && e.Data.N == n }) {
			return false
		}
	}
	return true
}

// Check asserts the page got exactly want of each key, in order, no other key's, and no gap.
func (s TrackerState) Check(t testing.TB, keys []string, want []int) {
	t.Helper()
	perKey := map[string][]int{}
	for _, e := range s.Events {
		perKey[e.Key] = append(perKey[e.Key], e.Data.N)
	}
	for _, k := range keys {
		if !slices.Equal(perKey[k], want) {
			t.Errorf("key %s: the page got %v, want %v", k, perKey[k], want)
		}
	}
	if len(perKey) != len(keys) || s.Gaps != 0 {
		t.Errorf("the page got events of %d keys (%v) and %d gaps, want only its %d keys' and none", len(perKey), perKey, s.Gaps, len(keys))
	}
}
