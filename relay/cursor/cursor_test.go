package cursor

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    ID
		wantErr bool
	}{
		"full":                {in: "1712345678901-7", want: ID{1712345678901, 7}},
		"zero":                {in: "0-0", want: ID{}},
		"bare ms":             {in: "1712345678901", want: ID{Ms: 1712345678901}},
		"max":                 {in: "18446744073709551615-18446744073709551615", want: ID{^uint64(0), ^uint64(0)}},
		"leading zeros":       {in: "007-01", want: ID{7, 1}},
		"empty":               {in: "", wantErr: true},
		"dash only":           {in: "-", wantErr: true},
		"missing seq":         {in: "12-", wantErr: true},
		"missing ms":          {in: "-3", wantErr: true},
		"negative":            {in: "-1-2", wantErr: true},
		"plus sign":           {in: "+1-2", wantErr: true},
		"two dashes":          {in: "1-2-3", wantErr: true},
		"space":               {in: "1 -2", wantErr: true},
		"exclusive prefix":    {in: "(1-2", wantErr: true},
		"overflow ms":         {in: "18446744073709551616-0", wantErr: true},
		"overflow seq":        {in: "1-18446744073709551616", wantErr: true},
		"too long":            {in: strings.Repeat("1", 42), wantErr: true},
		"redis special $":     {in: "$", wantErr: true},
		"redis special minus": {in: "-", wantErr: true},
		"unicode digit":       {in: "١-1", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestCompareAndString(t *testing.T) {
	ids := []ID{{}, {0, 1}, {1, 0}, {1, 5}, {2, 0}, {^uint64(0), 0}}
	for i := range ids {
		for j := range ids {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := ids[i].Compare(ids[j]); got != want {
				t.Fatalf("%v.Compare(%v) = %d, want %d", ids[i], ids[j], got, want)
			}
		}
		back, err := Parse(ids[i].String())
		if err != nil || back != ids[i] {
			t.Fatalf("round trip of %v gave %v, %v", ids[i], back, err)
		}
	}
	prev := map[ID]ID{{5, 2}: {5, 1}, {5, 0}: {4, ^uint64(0)}, {}: {}}
	for in, want := range prev {
		if got := in.Prev(); got != want {
			t.Fatalf("%v.Prev() = %v, want %v", in, got, want)
		}
	}
	if got := (ID{5, 2}).Exclusive(); got != "(5-2" {
		t.Fatalf("Exclusive = %q", got)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = Parse("1712345678901-42") }); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}

func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"0-0", "1712345678901-7", "1", "-", "1-", "+1-1", "18446744073709551616-0", "(1-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must print to a form that parses to the same ID and sorts consistently.
		back, err := Parse(id.String())
		if err != nil || back != id {
			t.Fatalf("Parse(%q) = %v but its String %q parses to %v, %v", s, id, id.String(), back, err)
		}
		if id.Compare(back) != 0 || id.Less(back) {
			t.Fatalf("%v does not compare equal to itself", id)
		}
		if len(id.String()) > MaxLen {
			t.Fatalf("%v prints longer than MaxLen", id)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("1712345678901-42"); err != nil {
			b.Fatal(err)
		}
	}
}
