package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/event"
)

// Sub is what one subscriber saw. Only its reader goroutine writes it; the other fields may be
// read once Done is closed.
type Sub struct {
	set        *SubSet
	delivered  atomic.Int64 // distinct messages of this set's sequence range
	seen       Bitmap       // seq - set.Base
	hist       Hist
	dup, ooo   int64
	gaps       int64 // gap events (rollback, trimmed...)
	slow       atomic.Bool
	primed     atomic.Bool // received anything at all
	lastMs     uint64
	lastSeq    uint64
	firstAfter int64        // Unix ns of the first delivery of a message sent after set.KillAt
	index      int          // which subscriber of the set it is (the order they were asked for)
	read       atomic.Int64 // bytes read from the connection
	msgBytes   atomic.Int64 // bytes of the frames of distinct messages of the set's range
	done       chan struct{}
	err        error
}

// SubSet is a group of subscribers measured together.
type SubSet struct {
	Base   uint64       // first sequence number this set counts; older ones are ignored
	KillAt atomic.Int64 // Unix ns of a disruption (failover), 0 = none
	// Wants says which messages subscriber i is owed (nil: all of them): a keyed subscriber
	// is owed its key's.
	Wants  func(i int, seq uint64) bool
	Subs   []*Sub
	cancel context.CancelFunc
	ctx    context.Context
	closer []io.Closer
	mu     sync.Mutex
}

func newSubSet(base uint64) *SubSet {
	ctx, cancel := context.WithCancel(context.Background())
	return &SubSet{Base: base, ctx: ctx, cancel: cancel}
}

func (s *SubSet) add(c io.Closer, index int) *Sub {
	sub := &Sub{set: s, index: index, done: make(chan struct{})}
	s.mu.Lock()
	s.Subs = append(s.Subs, sub)
	if c != nil {
		s.closer = append(s.closer, c)
	}
	s.mu.Unlock()
	return sub
}

// deliver records one message: stream ID (ms, seq) and payload stamp. It reports whether the
// message counts: of the set's range, and new.
func (s *Sub) deliver(ms, idSeq, seq uint64, ts int64, now time.Time) bool {
	if !s.primed.Load() {
		s.primed.Store(true)
	}
	if seq < s.set.Base {
		return false // an earlier phase's message
	}
	if s.seen.Set(seq - s.set.Base) {
		s.dup++
		return false
	}
	if ms < s.lastMs || (ms == s.lastMs && idSeq <= s.lastSeq) {
		s.ooo++
	}
	s.lastMs, s.lastSeq = ms, idSeq
	nowNs := now.UnixNano()
	s.hist.Record(time.Duration(nowNs - ts))
	if k := s.set.KillAt.Load(); k != 0 && ts > k && s.firstAfter == 0 {
		s.firstAfter = nowNs
	}
	s.delivered.Add(1)
	return true
}

// Delivered is the number of distinct messages delivered to all subscribers so far.
func (s *SubSet) Delivered() int64 {
	var n int64
	for _, sub := range s.Subs {
		n += sub.delivered.Load()
	}
	return n
}

// Bytes are the bytes the subscribers read, and those of the distinct messages they were sent.
func (s *SubSet) Bytes() (read, messages int64) {
	for _, sub := range s.Subs {
		read += sub.read.Load()
		messages += sub.msgBytes.Load()
	}
	return read, messages
}

// WaitDelivered waits until every subscriber has want messages (or within passes).
func (s *SubSet) WaitDelivered(want int64, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		all := true
		for _, sub := range s.Subs {
			if sub.delivered.Load() < want && !sub.slow.Load() && !sub.ended() {
				all = false
				break
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Sub) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Close ends every subscriber and waits for their readers.
func (s *SubSet) Close() {
	s.cancel()
	s.mu.Lock()
	for _, c := range s.closer {
		_ = c.Close()
	}
	s.mu.Unlock()
	for _, sub := range s.Subs {
		<-sub.done
	}
}

// Result counts what the set saw against the acknowledged sequence numbers.
type Result struct {
	Delivered int64
	Lost      int64 // acknowledged (seq, subscriber) pairs never delivered
	Dup, OOO  int64
	Gaps      int64
	Slow      int64 // subscribers closed as slow consumers
	Lat       Merged
	// Recovery: time from KillAt to the first delivery of a message sent after it, for the
	// slowest subscriber (max) and the median one; -1 when some subscriber never got one.
	RecoveryMax, RecoveryMedian time.Duration
}

// Collect must be called after Close.
func (s *SubSet) Collect(acked []uint64) Result {
	var r Result
	var firsts []int64
	for _, sub := range s.Subs {
		r.Delivered += sub.delivered.Load()
		r.Dup += sub.dup
		r.OOO += sub.ooo
		r.Gaps += sub.gaps
		if sub.slow.Load() {
			r.Slow++
		}
		r.Lat.Add(&sub.hist)
		for _, q := range acked {
			if q >= s.Base && !sub.seen.Has(q-s.Base) && (s.Wants == nil || s.Wants(sub.index, q)) {
				r.Lost++
			}
		}
		firsts = append(firsts, sub.firstAfter)
	}
	if k := s.KillAt.Load(); k != 0 && len(firsts) > 0 {
		sortInt64(firsts)
		if firsts[0] == 0 {
			r.RecoveryMax, r.RecoveryMedian = -1, -1
		} else {
			r.RecoveryMax = time.Duration(firsts[len(firsts)-1] - k)
			r.RecoveryMedian = time.Duration(firsts[len(firsts)/2] - k)
		}
	}
	return r
}

func sortInt64(a []int64) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// --- SSE subscribers (herald) ---

// sseTransport keeps one connection per stream; streams hold their connection for good.
var sseTransport = &http.Transport{
	DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	DisableCompression:  true,
	MaxIdleConnsPerHost: 16,
	WriteBufferSize:     1 << 10,
	ReadBufferSize:      8 << 10, // readSSE reads 64 KiB and more at a time, past this buffer
}

// OpenSSE connects n SSE subscribers to url (at most par connecting at once) and starts their
// readers.
func OpenSSE(url string, n, par int, base uint64) (*SubSet, error) {
	return OpenSSEEach(func(int) string { return url }, n, par, base)
}

// OpenSSEEach is OpenSSE with subscriber i connecting to url(i).
func OpenSSEEach(urlOf func(i int) string, n, par int, base uint64) (*SubSet, error) {
	set := newSubSet(base)
	client := &http.Client{Transport: sseTransport}
	var next atomic.Int64
	err := parallel(n, par, func() error {
		i := int(next.Add(1) - 1)
		url := urlOf(i)
		req, _ := http.NewRequestWithContext(set.ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
		}
		sub := set.add(resp.Body, i)
		go sub.readSSE(resp.Body)
		return nil
	})
	if err != nil {
		set.Close()
		return nil, err
	}
	return set, nil
}

var (
	idPrefix   = []byte("id: ")
	dataPrefix = []byte("data: ")
	eventGap   = []byte("event: gap")
	slowNote   = []byte(": closed: slow consumer")
)

// readSSE parses only what it needs: the id line, whether the event is a gap, and seq/ts of
// the data line. It reads up to 64 KiB at a time and stamps every event of one read with the
// same receive time (when the bytes reached the client), so a client keeps up with a busy
// stream at a fraction of a CPU; no allocation per event.
func (s *Sub) readSSE(body io.Reader) {
	defer close(s.done)
	buf := make([]byte, 128<<10)
	start, end := 0, 0
	for {
		if start > 0 { // keep the incomplete event at the front
			end = copy(buf, buf[start:end])
			start = 0
		}
		if end == len(buf) { // one event larger than the buffer
			buf = append(buf, make([]byte, len(buf))...)
		}
		n, err := body.Read(buf[end:])
		end += n
		s.read.Add(int64(n))
		now := time.Now()
		for {
			i := bytes.Index(buf[start:end], frameEnd)
			if i < 0 {
				break
			}
			s.frame(buf[start:start+i+1], i+len(frameEnd), now)
			start += i + len(frameEnd)
		}
		if err != nil {
			s.err = err
			return
		}
	}
}

var frameEnd = []byte("\n\n")

// frame handles one SSE frame (its lines, each ending in a newline).
func (s *Sub) frame(f []byte, size int, now time.Time) {
	var ms, idSeq, seq uint64
	var ts int64
	var haveID, haveStamp bool
	for len(f) > 0 {
		j := bytes.IndexByte(f, '\n')
		line := f[:j]
		f = f[j+1:]
		switch {
		case bytes.HasPrefix(line, idPrefix):
			ms, idSeq, haveID = parseStreamID(line[len(idPrefix):])
		case bytes.HasPrefix(line, dataPrefix):
			seq, ts, haveStamp = parseStamp(line)
		case bytes.Equal(line, eventGap):
			s.gaps++
			return
		case bytes.HasPrefix(line, slowNote):
			s.slow.Store(true)
		}
	}
	if haveID && haveStamp && s.deliver(ms, idSeq, seq, ts, now) {
		s.msgBytes.Add(int64(size))
	}
}

// --- raw Redis subscribers (baseline) ---

// OpenRaw opens n go-redis SSUBSCRIBE connections to channel (each PubSub has its own
// connection, as n independent subscribers would) and starts their readers.
func OpenRaw(cluster *redis.ClusterClient, channel string, n, par int, base uint64) (*SubSet, error) {
	set := newSubSet(base)
	err := parallel(n, par, func() error {
		ps := cluster.SSubscribe(set.ctx, channel)
		if _, err := ps.Receive(set.ctx); err != nil { // the ssubscribe confirmation
			ps.Close()
			return err
		}
		sub := set.add(ps, 0)
		go sub.readRaw(set.ctx, ps)
		return nil
	})
	if err != nil {
		set.Close()
		return nil, err
	}
	return set, nil
}

func (s *Sub) readRaw(ctx context.Context, ps *redis.PubSub) {
	defer close(s.done)
	for {
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				s.err = err
				return
			}
			time.Sleep(10 * time.Millisecond) // go-redis reconnects on the next call
			continue
		}
		m, err := event.DecodeLive(msg.Payload)
		if err != nil {
			continue // a relay's heartbeat probe or someone else's message
		}
		seq, ts, ok := parseStamp(unsafe.Slice(unsafe.StringData(m.Data), len(m.Data)))
		if !ok {
			continue
		}
		s.deliver(m.ID.Ms, m.ID.Seq, seq, ts, time.Now())
	}
}

// --- idle subscribers ---

// OpenIdleWS opens n WebSocket subscribers that only answer pings.
func OpenIdleWS(url string, n, par int) (*SubSet, error) {
	set := newSubSet(0)
	client := &http.Client{Transport: sseTransport}
	err := parallel(n, par, func() error {
		c, _, err := websocket.Dial(set.ctx, url, &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			return err
		}
		sub := set.add(wsCloser{c}, 0)
		rctx := c.CloseRead(set.ctx)
		go func() { <-rctx.Done(); close(sub.done) }()
		return nil
	})
	if err != nil {
		set.Close()
		return nil, err
	}
	return set, nil
}

type wsCloser struct{ c *websocket.Conn }

func (w wsCloser) Close() error { return w.c.CloseNow() }

// parallel runs fn n times, at most par at once, and returns the first error.
func parallel(n, par int, fn func() error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	sem := make(chan struct{}, par)
	for i := 0; i < n; i++ {
		mu.Lock()
		stop := ferr != nil
		mu.Unlock()
		if stop {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(); err != nil {
				mu.Lock()
				if ferr == nil {
					ferr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ferr
}
