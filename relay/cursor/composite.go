package cursor

import (
	"errors"
	"strconv"
)

// Separator joins the shard IDs of a composite cursor.
const Separator = '.'

// ErrCompositeSyntax is returned for text that is not a composite cursor of the expected shape.
var ErrCompositeSyntax = errors.New("cursor must be one stream ID per shard joined by '.', such as 1712345678901-0.1712345678905-3 (resume with the id of the last event received)")

// Composite is the cursor of a subscription that merges several shards (a sidecar's
// whole-channel subscription): the last stream ID seen on each shard, in shard order. Resuming
// from it replays every shard after its own ID, so no shard loses or repeats anything.
//
// Its text form is the shard IDs joined by Separator:
//
//	"1712345678901-0.1712345678905-3.0-0"   shards 0, 1 and 2; nothing seen yet on shard 2
//
// A channel with one shard has a one-element composite, which prints as the plain stream ID:
// a sidecar's cursors are then exactly a shard relay's.
type Composite []ID

// MaxCompositeLen is the longest text form of a composite of n shards.
func MaxCompositeLen(n int) int { return n*MaxLen + n - 1 }

// ParseComposite reads the composite cursor of a channel with n shards (1..64). Every
// component must parse as a stream ID (see Parse); a count other than n is an error, so a
// cursor of another channel, or a plain stream ID given for a multi-shard channel, is rejected
// rather than misread.
func ParseComposite(s string, n int) (Composite, error) {
	if n < 1 || len(s) > MaxCompositeLen(n) {
		return nil, ErrCompositeSyntax
	}
	c := make(Composite, 0, n)
	for start := 0; ; {
		end := start
		for end < len(s) && s[end] != Separator {
			end++
		}
		if len(c) == n {
			return nil, ErrCompositeSyntax
		}
		id, err := Parse(s[start:end])
		if err != nil {
			return nil, ErrCompositeSyntax
		}
		c = append(c, id)
		if end == len(s) {
			break
		}
		start = end + 1
	}
	if len(c) != n {
		return nil, ErrCompositeSyntax
	}
	return c, nil
}

// String prints the canonical text form.
func (c Composite) String() string {
	return string(c.AppendTo(make([]byte, 0, MaxCompositeLen(len(c)))))
}

// AppendTo appends the canonical text form to b.
func (c Composite) AppendTo(b []byte) []byte {
	for i, id := range c {
		if i > 0 {
			b = append(b, Separator)
		}
		b = id.AppendTo(b)
	}
	return b
}

// Clone returns a copy that does not share c's array.
func (c Composite) Clone() Composite { return append(Composite(nil), c...) }

// Equal reports whether c and o hold the same IDs.
func (c Composite) Equal(o Composite) bool {
	if len(c) != len(o) {
		return false
	}
	for i := range c {
		if c[i] != o[i] {
			return false
		}
	}
	return true
}

// GoString helps test failures: the text form, quoted.
func (c Composite) GoString() string { return strconv.Quote(c.String()) }
