package stream

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// Whatever a client sends, reading its frames never panics, keeps only an unfinished frame's
// start (a suffix of the input, at most a control frame long), answers each ping with a
// well-formed pong, refuses control frames past the budget and ends with a valid close code.
func FuzzClientFrames(f *testing.F) {
	masked := func(op ws.OpCode, payload string) []byte {
		var b bytes.Buffer
		fr := ws.MaskFrame(ws.NewFrame(op, true, []byte(payload)))
		_ = ws.WriteFrame(&b, fr)
		return b.Bytes()
	}
	f.Add(masked(ws.OpPing, "hello"))
	f.Add(append(masked(ws.OpPing, ""), masked(ws.OpClose, "\x0f\xa0bye")...))
	f.Add(masked(ws.OpText, "data"))
	f.Add(masked(ws.OpPing, "x")[:3])
	f.Add([]byte{0x89, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		budget := 2 // past it the client is refused: both outcomes are reached
		rest, closed, code, _ := readClientFrames(in, func(pong []byte) bool {
			if pong != nil {
				h, err := ws.ReadHeader(bytes.NewReader(pong))
				if err != nil || h.OpCode != ws.OpPong || h.Masked || int(h.Length) != len(pong)-2 || h.Length > 125 {
					t.Fatalf("answered with a malformed pong %x", pong)
				}
			}
			budget--
			return budget >= 0
		})
		if !bytes.HasSuffix(b, rest) || len(rest) > maxPartial {
			t.Fatalf("kept %d bytes that are not the end of the input", len(rest))
		}
		if budget < 0 && (!closed || code != ws.StatusPolicyViolation) {
			t.Fatalf("a client past its control-frame budget was not closed with 1008 (closed %v, code %d)", closed, code)
		}
		if closed && !validCloseCode(code) {
			t.Fatalf("ends with close code %d", code)
		}
	})
}
