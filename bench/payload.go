package bench

import (
	"bytes"
	"strconv"
)

// MessageBytes is the size of every published payload.
const MessageBytes = 256

// Payload returns a JSON body of exactly MessageBytes bytes stamped with seq and ts (Unix ns of
// the scheduled send time): {"seq":N,"ts":T,"pad":"xxx..."}.
func Payload(seq uint64, ts int64) []byte {
	b := make([]byte, 0, MessageBytes)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"pad":"`...)
	for len(b) < MessageBytes-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

var (
	seqField = []byte(`"seq":`)
	tsField  = []byte(`,"ts":`)
)

// parseStamp finds seq and ts in a line holding a payload (an SSE data line, a raw payload).
func parseStamp(line []byte) (seq uint64, ts int64, ok bool) {
	i := bytes.Index(line, seqField)
	if i < 0 {
		return 0, 0, false
	}
	rest := line[i+len(seqField):]
	seq, rest, ok = parseUint(rest)
	if !ok || !bytes.HasPrefix(rest, tsField) {
		return 0, 0, false
	}
	t, _, ok := parseUint(rest[len(tsField):])
	return seq, int64(t), ok
}

func parseUint(b []byte) (uint64, []byte, bool) {
	var v uint64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	return v, b[i:], i > 0
}

// parseStreamID parses "ms-seq" into a comparable pair.
func parseStreamID(b []byte) (ms, seq uint64, ok bool) {
	ms, rest, ok := parseUint(b)
	if !ok || len(rest) < 2 || rest[0] != '-' {
		return 0, 0, false
	}
	seq, rest, ok = parseUint(rest[1:])
	return ms, seq, ok && len(rest) == 0
}
