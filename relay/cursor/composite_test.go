package cursor

import (
	"strings"
	"testing"
)

func TestParseComposite(t *testing.T) {
	tests := map[string]struct {
		in      string
		n       int
		want    Composite
		wantErr bool
	}{
		"three shards":          {in: "1712345678901-0.1712345678905-3.0-0", n: 3, want: Composite{{1712345678901, 0}, {1712345678905, 3}, {}}},
		"one shard is plain id": {in: "1712345678901-7", n: 1, want: Composite{{1712345678901, 7}}},
		"bare ms components":    {in: "5.6", n: 2, want: Composite{{Ms: 5}, {Ms: 6}}},
		"too few":               {in: "1-0.2-0", n: 3, wantErr: true},
		"too many":              {in: "1-0.2-0.3-0", n: 2, wantErr: true},
		"plain id for 2 shards": {in: "1-0", n: 2, wantErr: true},
		"empty":                 {in: "", n: 1, wantErr: true},
		"empty component":       {in: "1-0..3-0", n: 3, wantErr: true},
		"trailing separator":    {in: "1-0.2-0.", n: 2, wantErr: true},
		"leading separator":     {in: ".1-0.2-0", n: 2, wantErr: true},
		"bad component":         {in: "1-0.x-0", n: 2, wantErr: true},
		"other separator":       {in: "1-0,2-0", n: 2, wantErr: true},
		"zero shards":           {in: "1-0", n: 0, wantErr: true},
		"too long":              {in: strings.Repeat("1", MaxCompositeLen(2)+1), n: 2, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseComposite(tc.in, tc.n)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseComposite(%q, %d) = %#v, want an error", tc.in, tc.n, got)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("ParseComposite(%q, %d) = %#v, %v; want %#v", tc.in, tc.n, got, err, tc.want)
			}
		})
	}
}

func TestCompositeStringRoundTrips(t *testing.T) {
	c := Composite{{1712345678901, 0}, {}, {^uint64(0), ^uint64(0)}}
	s := c.String()
	if s != "1712345678901-0.0-0.18446744073709551615-18446744073709551615" || len(s) > MaxCompositeLen(3) {
		t.Fatalf("String = %q", s)
	}
	back, err := ParseComposite(s, 3)
	if err != nil || !back.Equal(c) {
		t.Fatalf("round trip gave %#v, %v", back, err)
	}
	if one := (Composite{{7, 1}}).String(); one != "7-1" {
		t.Fatalf("a one-shard composite prints %q, want the plain id", one)
	}
	clone := c.Clone()
	clone[0] = ID{}
	if c[0].IsZero() {
		t.Fatal("Clone shares the array")
	}
}

func FuzzParseComposite(f *testing.F) {
	for _, s := range []string{"0-0", "1-0.2-0", "1712345678901-0.1712345678905-3.0-0", "1..2", ".", "1-0.", "18446744073709551616-0.1"} {
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, s string, n uint8) {
		shards := int(n%66) - 1 // -1..64: out-of-range counts must be refused, not crash
		c, err := ParseComposite(s, shards)
		if err != nil {
			return
		}
		if len(c) != shards {
			t.Fatalf("ParseComposite(%q, %d) returned %d IDs", s, shards, len(c))
		}
		// Whatever parses prints to a canonical form that parses to the same IDs.
		text := c.String()
		back, err := ParseComposite(text, shards)
		if err != nil || !back.Equal(c) {
			t.Fatalf("ParseComposite(%q) = %#v but its String %q parses to %#v, %v", s, c, text, back, err)
		}
		if len(text) > MaxCompositeLen(shards) {
			t.Fatalf("%q prints longer than MaxCompositeLen(%d)", text, shards)
		}
	})
}
