package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// A change body from the network either is refused or is a change whose keys are valid and
// which reads back the same once written again.
func FuzzChangeBody(f *testing.F) {
	for _, seed := range []string{
		`{"seq":1,"add":["a","b"],"remove":["c"]}`,
		`{"seq":2,"all":true}`,
		`{"seq":3,"all":false,"add":["user 1"]}`,
		`{"seq":-1}`, `{"add":[""]}`, `{"seq":1}{}`, `{"keys":[]}`, `[]`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := decodeChange(bytes.NewReader(body))
		if err != nil {
			return
		}
		for _, k := range append(append([]string(nil), c.Add...), c.Remove...) {
			if k == "" || !utf8.ValidString(k) || len(k) > 256 {
				t.Fatalf("accepted key %q", k)
			}
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeChange(bytes.NewReader(again))
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("%q was accepted as %+v, which reads back as %+v, %v", body, c, back, err)
		}
	})
}

// An interest comment from the network is either not one, or reads as a sequence number and a
// cursor that write back to the same comment.
func FuzzInterestComment(f *testing.F) {
	for _, seed := range []string{"interest 1 1-0", "interest 18446744073709551615 1796163194967-12", "interest 1", "interest x 1-0", "interest 1 1-0 extra", "stream abc", "heartbeat"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, comment string) {
		seq, at, ok := ParseInterestComment(comment)
		if !ok {
			return
		}
		again := InterestComment(seq, at)
		seq2, at2, ok := ParseInterestComment(again)
		if !ok || seq2 != seq || at2 != at {
			t.Fatalf("%q read as %d %v; written back as %q it reads as %d %v %v", comment, seq, at, again, seq2, at2, ok)
		}
	})
}
