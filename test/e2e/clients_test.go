//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/relay/shardmap"
)

// --- publishing ---

type ack struct {
	seq   int
	key   string
	id    string
	shard int
	sent  time.Time // first attempt
	at    time.Time // acknowledged
}

// sid names the message's stream entry: stream IDs repeat across shards.
func (a ack) sid() string { return strconv.Itoa(a.shard) + "/" + a.id }

type publishLog struct {
	mu       sync.Mutex
	acked    map[int]ack
	failed   []int // gave up: never acknowledged
	attempts atomic.Int64
	retries  atomic.Int64
	lastErr  atomic.Value // string
	stop     atomic.Bool  // no new message is started once set (none in flight is given up)
}

// expectedBy is what subscriber s should receive: every acknowledged message of its key (all
// of them for a whole-channel subscriber).
func (p *publishLog) expectedBy(s *subscriber) []ack {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ack
	for _, a := range p.acked {
		if s.key == "" || s.key == a.key {
			out = append(out, a)
		}
	}
	return out
}

// snapshot copies the acknowledged messages.
func (p *publishLog) snapshot() []ack {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ack, 0, len(p.acked))
	for _, a := range p.acked {
		out = append(out, a)
	}
	return out
}

func (p *publishLog) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// publishAll publishes messages 0..n-1 ({"seq": n} with key keyOf(n) and Idempotency-Key
// e2e-n) through the sidecar at base from workers goroutines at about rate messages per second
// in total, retrying each message (same Idempotency-Key) until 202 or giveUp.
func publishAll(ctx context.Context, pl *publishLog, base string, m *shardmap.Map, n, workers int, rate float64, keyOf func(int) string, giveUp time.Duration) {
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Duration(float64(workers) / rate * float64(time.Second)))
			defer tick.Stop()
			for seq := w; seq < n && ctx.Err() == nil && !pl.stop.Load(); seq += workers {
				key := keyOf(seq)
				shard := m.ShardFor(key)
				sent := time.Now()
				deadline := sent.Add(giveUp)
				for {
					id, err := publishOnce(ctx, client, base+"/v1/channels/"+m.Channel, shard, key, seq)
					pl.attempts.Add(1)
					if err == nil {
						pl.mu.Lock()
						pl.acked[seq] = ack{seq: seq, key: key, id: id, shard: shard, sent: sent, at: time.Now()}
						pl.mu.Unlock()
						break
					}
					pl.lastErr.Store(err.Error())
					if time.Now().After(deadline) || ctx.Err() != nil {
						pl.mu.Lock()
						pl.failed = append(pl.failed, seq)
						pl.mu.Unlock()
						break
					}
					pl.retries.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
				<-tick.C
			}
		}()
	}
	wg.Wait()
}

func publishOnce(ctx context.Context, client *http.Client, channelURL string, shard int, key string, seq int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, channelURL+"/messages?key="+url.QueryEscape(key),
		strings.NewReader(`{"seq":`+strconv.Itoa(seq)+`}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "e2e-"+strconv.Itoa(seq))
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		ID    string `json:"id"`
		Shard int    `json:"shard"`
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if body.Shard != shard || body.ID == "" {
		return "", fmt.Errorf("202 for shard %d with %s", shard, b)
	}
	if ids := strings.Split(body.ID, "."); len(ids) > 1 { // a composite: this shard's part
		return ids[shard], nil
	}
	return body.ID, nil
}

// --- subscribing ---

// received is one event a subscriber got.
type received struct {
	id    streamID
	raw   string
	seq   int    // message: the published seq
	key   string // message: its key
	gap   string // gap: its reason
	isGap bool
	at    time.Time
	event string // the cursor as received (a composite for a whole-channel subscription)
}

// subscriber follows the channel (key "") or one key through a sidecar, over SSE or WebSocket,
// as an app does: after a disconnect it reconnects with Last-Event-ID.
type subscriber struct {
	name       string
	key        string
	ws         bool
	base       string // the sidecar's URL
	m          *shardmap.Map
	mu         sync.Mutex
	got        map[int][]received // by shard, in arrival order
	connected  bool
	prev       []string           // components of the last composite cursor (whole channel)
	hangUp     context.CancelFunc // ends the current connection (drop)
	reconnects atomic.Int64
	lastErr    atomic.Value // string
}

func newSubscriber(m *shardmap.Map, base, name, key string, ws bool) *subscriber {
	return &subscriber{name: name, key: key, ws: ws, base: base, m: m, got: map[int][]received{}}
}

func (s *subscriber) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.follow(ctx)
	}()
}

func (s *subscriber) isConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

func (s *subscriber) snapshot() map[int][]received {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int][]received{}
	for k, v := range s.got {
		out[k] = append([]received(nil), v...)
	}
	return out
}

func (s *subscriber) follow(ctx context.Context) {
	last := ""
	u := s.base + "/v1/channels/" + s.m.Channel + "/events"
	if s.ws {
		u = strings.Replace(s.base, "http://", "ws://", 1) + "/v1/channels/" + s.m.Channel + "/ws"
	}
	if s.key != "" {
		u += "?key=" + url.QueryEscape(s.key)
	}
	for ctx.Err() == nil {
		conn, hangUp := context.WithCancel(ctx)
		s.mu.Lock()
		s.hangUp = hangUp
		s.mu.Unlock()
		var err error
		if s.ws {
			err = s.readWS(conn, u, &last)
		} else {
			err = s.readSSE(conn, u, &last)
		}
		hangUp()
		if ctx.Err() != nil {
			return
		}
		s.reconnects.Add(1)
		if err != nil {
			s.lastErr.Store(err.Error())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// drop ends the current connection, as a network failure would; the subscriber reconnects
// with Last-Event-ID.
func (s *subscriber) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hangUp != nil {
		s.hangUp()
	}
}

func (s *subscriber) markConnected() {
	s.mu.Lock()
	s.connected = true
	s.mu.Unlock()
}

// cloudEvent is what the test reads of an event.
type cloudEvent struct {
	Cursor  string `json:"heraldcursor"` // what the subscriber resumes from
	ID      string `json:"id"`           // the event's own: "<shard>:<stream ID>" on every stream
	Type    string `json:"type"`
	Subject string `json:"subject"`
	Data    struct {
		Seq    *int   `json:"seq"`
		Reason string `json:"reason"`
	} `json:"data"`
}

const gapType = "dev.herald.gap"

// record adds one event and moves the cursor. A message's shard is its key's; its stream ID is
// the cursor (per key) or the shard's part of the composite cursor (whole channel). A gap
// belongs to the shards whose part of the composite moved (or to the key's shard).
func (s *subscriber) record(ce cloudEvent, isGap bool, last *string) error {
	parts := strings.Split(ce.Cursor, ".")
	if len(parts) != 1 && len(parts) != len(s.m.Shards) {
		return fmt.Errorf("event cursor %q is neither a stream ID nor a composite of %d", ce.Cursor, len(s.m.Shards))
	}
	var shards []int
	switch {
	case !isGap:
		shards = []int{s.m.ShardFor(ce.Subject)}
	case s.key != "":
		shards = []int{s.m.ShardFor(s.key)}
	default:
		for i := range parts {
			if len(parts) == len(s.prev) && parts[i] == s.prev[i] {
				continue
			}
			shards = append(shards, i)
		}
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(parts) > 1 {
		s.prev = parts
	}
	for _, shard := range shards {
		raw := parts[0]
		if len(parts) > 1 {
			raw = parts[shard]
		}
		id, err := parseStreamID(raw)
		if err != nil {
			return fmt.Errorf("event cursor: %w", err)
		}
		if !isGap && ce.ID != strconv.Itoa(shard)+":"+raw {
			return fmt.Errorf("event at cursor %s has CloudEvent id %q, want %d:%s on every stream", ce.Cursor, ce.ID, shard, raw)
		}
		r := received{id: id, raw: raw, key: ce.Subject, at: now, isGap: isGap, event: ce.Cursor}
		if isGap {
			r.gap = ce.Data.Reason
		} else {
			if ce.Data.Seq == nil {
				return fmt.Errorf("message %s has no seq", ce.Cursor)
			}
			r.seq = *ce.Data.Seq
		}
		s.got[shard] = append(s.got[shard], r)
	}
	*last = ce.Cursor
	return nil
}

func (s *subscriber) readSSE(ctx context.Context, u string, last *string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s %s", u, resp.Status, b)
	}
	s.markConnected()
	rd := bufio.NewReaderSize(resp.Body, 64<<10)
	var event, data string
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if event == "message" || event == "gap" {
				var ce cloudEvent
				if err := json.Unmarshal([]byte(data), &ce); err != nil {
					return fmt.Errorf("event data: %w: %q", err, data)
				}
				if err := s.record(ce, event == "gap", last); err != nil {
					return err
				}
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
}

func (s *subscriber) readWS(ctx context.Context, u string, last *string) error {
	h := http.Header{}
	if *last != "" {
		h.Set("Last-Event-ID", *last)
	}
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	s.markConnected()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			return errors.New("binary WebSocket frame")
		}
		var ce cloudEvent
		if err := json.Unmarshal(b, &ce); err != nil {
			return fmt.Errorf("frame: %w: %q", err, b)
		}
		if err := s.record(ce, ce.Type == gapType, last); err != nil {
			return err
		}
	}
}

// streamID is a Redis stream ID, ordered.
type streamID struct{ ms, seq uint64 }

func parseStreamID(s string) (streamID, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, fmt.Errorf("%q is not a stream ID", s)
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return streamID{}, fmt.Errorf("%q is not a stream ID", s)
	}
	return streamID{ms, seq}, nil
}

func (a streamID) less(b streamID) bool { return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq) }
