package stream

import (
	"bytes"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/relay/hub"
)

// Whatever a client sends, reading its frames never panics, keeps only an unfinished frame's
// start (a suffix of the input, at most a control frame long, or a command's where the role
// takes commands), answers each ping with a well-formed pong, refuses control frames past the
// budget, hands on only commands that are UTF-8 within MaxCommandBytes (and none where the role
// takes none) and ends with a valid close code.
func FuzzClientFrames(f *testing.F) {
	masked := func(op ws.OpCode, payload string) []byte {
		var b bytes.Buffer
		fr := ws.MaskFrame(ws.NewFrame(op, true, []byte(payload)))
		_ = ws.WriteFrame(&b, fr)
		return b.Bytes()
	}
	f.Add(masked(ws.OpPing, "hello"), false)
	f.Add(append(masked(ws.OpPing, ""), masked(ws.OpClose, "\x0f\xa0bye")...), false)
	f.Add(masked(ws.OpText, "data"), false)
	f.Add(masked(ws.OpText, `{"follow":["a"]}`), true)
	f.Add(append(masked(ws.OpText, "\xff"), masked(ws.OpBinary, "b")...), true)
	f.Add(masked(ws.OpText, `{"token":"`+string(bytes.Repeat([]byte("t"), 300))+`"}`)[:200], true)
	f.Add(masked(ws.OpPing, "x")[:3], false)
	f.Add([]byte{0x89, 0x00}, false)
	f.Fuzz(func(t *testing.T, b []byte, takesCommands bool) {
		in := append([]byte(nil), b...)
		budget := 2 // past it the client is refused: both outcomes are reached
		commands := 2
		var command func(text []byte) bool
		if takesCommands {
			command = func(text []byte) bool {
				if !utf8.Valid(text) || len(text) > MaxCommandBytes {
					t.Fatalf("handed on a command of %d bytes that is not UTF-8 or too long", len(text))
				}
				commands--
				return commands >= 0
			}
		}
		rest, closed, code, _ := readClientFrames(in, func(pong []byte) bool {
			if pong != nil {
				h, err := ws.ReadHeader(bytes.NewReader(pong))
				if err != nil || h.OpCode != ws.OpPong || h.Masked || int(h.Length) != len(pong)-2 || h.Length > 125 {
					t.Fatalf("answered with a malformed pong %x", pong)
				}
			}
			budget--
			return budget >= 0
		}, command)
		limit := maxPartial
		if takesCommands {
			limit = maxPartialCommand
		}
		if !bytes.HasSuffix(b, rest) || len(rest) > limit {
			t.Fatalf("kept %d bytes that are not the end of the input", len(rest))
		}
		if (budget < 0 || commands < 0) && (!closed || code != ws.StatusPolicyViolation) {
			t.Fatalf("a client past its control-frame or command budget was not closed with 1008 (closed %v, code %d)", closed, code)
		}
		if closed && !validCloseCode(code) {
			t.Fatalf("ends with close code %d", code)
		}
	})
}

// A client's commands run one at a time in the order they came, on a goroutine that exists
// only while some wait; past maxWaitingCommands waiting, push refuses (the stream ends), and
// once the stream ended what waits is dropped.
func TestCommandsRunInOrderOnlyWhileTheyWait(t *testing.T) {
	sub := hub.New(1 << 20).Subscribe("")
	defer sub.Close()
	ran := make(chan string, maxWaitingCommands+1)
	gate := make(chan struct{})
	q := &commandQueue{sub: sub, run: func(text []byte) {
		<-gate
		ran <- string(text)
	}}
	if !q.push([]byte("0")) {
		t.Fatal("the first command was refused")
	}
	waiting := func(n int) {
		for !func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.waiting) == n }() {
			runtime.Gosched()
		}
	}
	waiting(0) // the first is held in run, so every other waits
	for i := 1; i <= maxWaitingCommands; i++ {
		if !q.push([]byte(strconv.Itoa(i))) {
			t.Fatalf("command %d of %d waiting was refused", i, maxWaitingCommands)
		}
	}
	if q.push([]byte("flood")) {
		t.Fatalf("a command past %d waiting was taken", maxWaitingCommands)
	}
	close(gate)
	for i := 0; i <= maxWaitingCommands; i++ {
		if got := <-ran; got != strconv.Itoa(i) {
			t.Fatalf("command %d ran as %s", i, got)
		}
	}
	idle := func() bool { q.mu.Lock(); defer q.mu.Unlock(); return !q.running }
	for deadline := time.Now().Add(5 * time.Second); !idle(); runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the command goroutine outlived its commands")
		}
	}

	// The stream ends while commands wait: they are dropped.
	gate = make(chan struct{})
	q.push([]byte("last"))
	q.push([]byte("dropped"))
	waiting(1) // "last" is held in run
	sub.Close()
	close(gate)
	if got := <-ran; got != "last" {
		t.Fatalf("ran %s", got)
	}
	for deadline := time.Now().Add(5 * time.Second); !idle(); runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the command goroutine outlived its stream")
		}
	}
	if len(ran) != 0 {
		t.Fatalf("ran %s after the stream ended", <-ran)
	}
}
