package cursor

import (
	"errors"
	"strconv"
)

// ID is a Redis stream ID. The zero ID ("0-0") sorts before every real entry, so resuming from
// it replays the whole retained stream.
type ID struct {
	Ms  uint64 // milliseconds part, the writing master's clock
	Seq uint64 // sequence within the millisecond
}

// Zero is the ID before every stream entry.
var Zero = ID{}

// MaxLen is the longest text form of an ID: two 20-digit numbers and a dash.
const MaxLen = 41

// ErrSyntax is returned for any text that is not "<ms>-<seq>" or "<ms>".
var ErrSyntax = errors.New("cursor must be a stream ID such as 1712345678901-0")

// Parse reads "<ms>-<seq>" or a bare "<ms>" (meaning "<ms>-0"), the forms Redis accepts for
// XRANGE bounds. It rejects signs, spaces, empty parts, leading '+' and numbers that overflow
// 64 bits. Parse never allocates on success.
func Parse(s string) (ID, error) {
	if len(s) == 0 || len(s) > MaxLen {
		return ID{}, ErrSyntax
	}
	dash := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			dash = i
			break
		}
	}
	if dash < 0 {
		ms, ok := parseUint(s)
		if !ok {
			return ID{}, ErrSyntax
		}
		return ID{Ms: ms}, nil
	}
	ms, ok1 := parseUint(s[:dash])
	seq, ok2 := parseUint(s[dash+1:])
	if !ok1 || !ok2 {
		return ID{}, ErrSyntax
	}
	return ID{Ms: ms, Seq: seq}, nil
}

// parseUint accepts 1..20 ASCII digits that fit in a uint64.
func parseUint(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 20 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// MustParse is Parse for IDs that Redis itself returned; it panics on malformed input, which
// would mean a protocol violation, never user input.
func MustParse(s string) ID {
	id, err := Parse(s)
	if err != nil {
		panic("cursor: malformed stream ID from Redis: " + strconv.Quote(s))
	}
	return id
}

// String prints the canonical "<ms>-<seq>" form.
func (id ID) String() string {
	var b [MaxLen]byte
	return string(id.AppendTo(b[:0]))
}

// AppendTo appends the canonical form to b, for encoders that build a frame in one buffer.
func (id ID) AppendTo(b []byte) []byte {
	b = strconv.AppendUint(b, id.Ms, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, id.Seq, 10)
}

// Compare returns -1, 0 or +1 as id sorts before, equal to or after o.
func (id ID) Compare(o ID) int {
	switch {
	case id.Ms < o.Ms:
		return -1
	case id.Ms > o.Ms:
		return 1
	case id.Seq < o.Seq:
		return -1
	case id.Seq > o.Seq:
		return 1
	}
	return 0
}

// Less reports whether id sorts before o.
func (id ID) Less(o ID) bool { return id.Compare(o) < 0 }

// Prev is the greatest ID before id (Zero stays Zero): reading after id.Prev() includes id.
func (id ID) Prev() ID {
	switch {
	case id.Seq > 0:
		return ID{Ms: id.Ms, Seq: id.Seq - 1}
	case id.Ms > 0:
		return ID{Ms: id.Ms - 1, Seq: ^uint64(0)}
	}
	return id
}

// IsZero reports whether id is "0-0".
func (id ID) IsZero() bool { return id == ID{} }

// Exclusive is the XRANGE start bound that returns entries strictly after id: "(<id>".
func (id ID) Exclusive() string { return "(" + id.String() }
