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
