package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/shardmap"
)

// channel is one channel the app may use: its shard map, its upstream streams (one per shard,
// opened on the first local subscriber) and the merge of those streams for whole-channel
// subscribers.
type channel struct {
	s     *Sidecar
	ref   ChannelRef
	m     atomic.Pointer[shardmap.Map]
	kick  chan struct{}  // a call failed or a relay said the map moved on: refresh now
	token *tokenSource   // the bearer token for this channel's relays
	enc   *event.Encoder // the gap events the sidecar makes up itself

	mu        sync.Mutex // guards the discovery status below
	reachable []bool     // per shard: a relay answered /readyz 200 at the last refresh
	lastErr   string

	startMu sync.Mutex     // serializes opening the streams
	streams []*shardStream // nil until the first local subscriber
	running sync.WaitGroup

	mergeMu sync.Mutex       // one merged sequence: positions and broadcast happen together
	pos     cursor.Composite // last stream ID merged per shard (the merged stream's cursor)
	idBuf   []byte
	all     *hub.Hub // whole-channel subscribers

	coalMu sync.Mutex
	coal   map[[2]int]*coalescer // (shard, waitReplicas) -> its queue of single publishes
}

func newChannel(s *Sidecar, ref ChannelRef) *channel {
	ch := &channel{s: s, ref: ref, kick: make(chan struct{}, 1), all: hub.New(s.opt.QueueBytes), coal: map[[2]int]*coalescer{},
		token: &tokenSource{file: watchedFile{path: s.opt.tokenPath(ref)}}, enc: event.NewEncoder(ref.Namespace, ref.Name, 0)}
	ch.all.SetWriteInterval(s.opt.WriteInterval)
	return ch
}

func (ch *channel) shardMap() *shardmap.Map { return ch.m.Load() }

// queueBytes is the subscriber queue limit: --queue-bytes, raised to two of the largest events
// the channel's shard map allows.
func (ch *channel) queueBytes() int {
	n := ch.s.opt.QueueBytes
	if m := ch.shardMap(); m != nil {
		n = max(n, int(shardmap.QueueBytes(m.MaxMessageBytes)))
	}
	return n
}

// serviceURL is the channel-wide relay Service the shard map is read from.
func (ch *channel) serviceURL() string {
	return "http://" + shardmap.ChannelServiceName(ch.ref.Name) + "." + ch.ref.Namespace + ".svc:" + strconv.Itoa(shardmap.RelayPort)
}

func (ch *channel) lastError() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.lastErr == "" {
		return "no answer yet"
	}
	return ch.lastErr
}

// refreshSoon asks the discovery loop for a new shard map now (after a failed call).
func (ch *channel) refreshSoon() {
	select {
	case ch.kick <- struct{}{}:
	default:
	}
}

// discoverLoop keeps the shard map and the shards' reachability fresh: quickly until the map
// is known, then every RefreshInterval or when kicked.
func (ch *channel) discoverLoop(ctx context.Context) {
	retry := retryBackoff(100 * time.Millisecond)
	for {
		err := ch.discover(ctx)
		ch.mu.Lock()
		if err != nil {
			ch.lastErr = err.Error()
		} else {
			ch.lastErr = ""
		}
		ch.mu.Unlock()
		wait := ch.s.opt.RefreshInterval
		if err != nil || !ch.ready() {
			if err != nil && ctx.Err() == nil {
				ch.s.log.Warn("channel discovery failed", "channel", ch.ref.String(), "error", err.Error())
			}
			wait = retry.Step()
		} else {
			retry = retryBackoff(100 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch.kick:
		case <-time.After(wait):
		}
	}
}

// probeTimeout bounds one call of discover's (the shard map, /readyz), which a relay answers at
// once: a replica that went silent must not use up discover's 5 s before the next is asked.
const probeTimeout = 2 * time.Second

// discover reads the shard map from the channel's relay Service and checks that every shard
// has a ready relay.
func (ch *channel) discover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := ch.fetchMap(ctx)
	if err != nil {
		return err
	}
	if old := ch.m.Load(); old != nil && len(old.Shards) != len(m.Shards) {
		return fmt.Errorf("the channel's shard count changed from %d to %d; restart the pod to use the new map", len(old.Shards), len(m.Shards))
	}
	ch.m.Store(m)
	ch.all.AtLeastQueueBytes(ch.queueBytes()) // subscribers register once the map is known
	reach := make([]bool, len(m.Shards))
	var firstErr error
	for i, sh := range m.Shards {
		_, err := ch.shardPosition(ctx, sh, false)
		reach[i] = err == nil
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("shard %d: %w", i, err)
		}
	}
	ch.mu.Lock()
	ch.reachable = reach
	ch.mu.Unlock()
	return firstErr
}

func (ch *channel) fetchMap(ctx context.Context) (*shardmap.Map, error) {
	bases, err := ch.s.resolver.resolve(ctx, ch.serviceURL(), true)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, base := range rotate(ch.s.preferLive(bases)) {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		resp, err := ch.get(pctx, base+"/v1/channels/"+ch.ref.Name+"/shards", nil)
		if err != nil {
			cancel()
			lastErr = err
			ch.s.markDown(base, err)
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		cancel()
		if err != nil || resp.StatusCode != http.StatusOK {
			lastErr = fmt.Errorf("GET %s/v1/channels/%s/shards: %d %s", base, ch.ref.Name, resp.StatusCode, clip(b))
			continue
		}
		m, err := shardmap.Parse(b)
		if err != nil {
			lastErr = err
			continue
		}
		if m.Namespace != ch.ref.Namespace || m.Channel != ch.ref.Name {
			lastErr = fmt.Errorf("%s answered with the shard map of %s/%s", base, m.Namespace, m.Channel)
			continue
		}
		return m, nil
	}
	return nil, lastErr
}

// shardPosition asks a ready relay of a shard where its stream is (readyz's lastDelivered):
// a first upstream stream starts after it, so it neither misses what is published from now on
// nor replays the past.
func (ch *channel) shardPosition(ctx context.Context, sh shardmap.Shard, fresh bool) (cursor.ID, error) {
	bases, err := ch.s.shardBases(ctx, sh, fresh)
	if err != nil {
		return cursor.ID{}, err
	}
	var lastErr error
	for _, base := range rotate(bases) {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		resp, err := ch.get(pctx, base+"/readyz", nil)
		if err != nil {
			cancel()
			lastErr = err
			ch.s.markDown(base, err)
			continue
		}
		var body struct {
			Ready    bool `json:"ready"`
			Upstream struct {
				LastDelivered string `json:"lastDelivered"`
			} `json:"upstream"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body)
		resp.Body.Close()
		cancel()
		if err != nil || !body.Ready {
			lastErr = fmt.Errorf("the relay at %s is not ready (%d)", base, resp.StatusCode)
			continue
		}
		id, err := cursor.Parse(body.Upstream.LastDelivered)
		if err != nil {
			lastErr = fmt.Errorf("the relay at %s reports position %q: %w", base, body.Upstream.LastDelivered, err)
			continue
		}
		return id, nil
	}
	return cursor.ID{}, lastErr
}

// ready: the map is known, every shard had a ready relay at the last check, and every
// upstream stream opened is connected.
func (ch *channel) ready() bool {
	st := ch.status()
	return st.Ready
}

// canServe reports why a subscriber cannot be served yet (nil when it can): the shard map is not
// known, or a shard has no ready relay to open its stream from.
func (ch *channel) canServe(ctx context.Context) error {
	if ch.shardMap() == nil {
		return errors.New("the shard map of channel " + ch.ref.String() + " is not known yet (" + ch.lastError() + ")")
	}
	_, err := ch.open(ctx)
	return err
}

type channelStatus struct {
	Channel  string        `json:"channel"`
	Ready    bool          `json:"ready"`
	MapKnown bool          `json:"mapKnown"`
	Shards   []shardStatus `json:"shards,omitempty"`
	Error    string        `json:"error,omitempty"`
}

type shardStatus struct {
	Reachable  bool   `json:"reachable"`           // a relay of the shard answered ready at the last check
	Streaming  *bool  `json:"streaming,omitempty"` // the upstream stream is connected (once opened)
	Replica    string `json:"replica,omitempty"`   // the relay the stream reads from
	Position   string `json:"position,omitempty"`  // the stream's cursor
	Reconnects uint64 `json:"reconnects,omitempty"`
	Follows    string `json:"follows,omitempty"` // what the stream asks the relay for: "every key" or "<n> keys"
}

func (ch *channel) status() channelStatus {
	st := channelStatus{Channel: ch.ref.String(), MapKnown: ch.m.Load() != nil}
	ch.mu.Lock()
	reach := append([]bool(nil), ch.reachable...)
	st.Error = ch.lastErr
	ch.mu.Unlock()
	ch.startMu.Lock()
	streams := ch.streams
	ch.startMu.Unlock()
	st.Ready = st.MapKnown && len(reach) > 0
	for i, r := range reach {
		ss := shardStatus{Reachable: r}
		st.Ready = st.Ready && r
		if streams != nil && i < len(streams) {
			on := streams[i].connected.Load()
			ss.Streaming = &on
			ss.Replica, ss.Position, ss.Reconnects = streams[i].snapshot()
			ss.Follows = streams[i].interest.describe()
			st.Ready = st.Ready && on
		}
		st.Shards = append(st.Shards, ss)
	}
	return st
}

func (ch *channel) connectedStreams() int {
	ch.startMu.Lock()
	defer ch.startMu.Unlock()
	n := 0
	for _, st := range ch.streams {
		if st.connected.Load() {
			n++
		}
	}
	return n
}

func (ch *channel) localSubscribers() int {
	n := int(ch.all.Subscribers())
	ch.startMu.Lock()
	defer ch.startMu.Unlock()
	for _, st := range ch.streams {
		n += int(st.keyed.Subscribers())
	}
	return n
}

// heartbeat sends part i of the local subscribers a heartbeat (hub.HeartbeatPart).
func (ch *channel) heartbeat(i int) {
	ch.all.HeartbeatPart(i)
	ch.startMu.Lock()
	streams := ch.streams
	ch.startMu.Unlock()
	for _, st := range streams {
		st.keyed.HeartbeatPart(i)
	}
}

// closeSubscribers ends every local subscriber's stream (on shutdown).
func (ch *channel) closeSubscribers() {
	ch.all.Close()
	ch.startMu.Lock()
	streams := ch.streams
	ch.startMu.Unlock()
	for _, st := range streams {
		st.keyed.Close()
	}
}

// wait returns when every upstream stream has stopped (after Run's context ended).
func (ch *channel) wait() { ch.running.Wait() }

// open starts the channel's upstream streams, once: each begins at its shard's current
// position, so the merged stream's cursor is exact from the first event on.
func (ch *channel) open(ctx context.Context) ([]*shardStream, error) {
	ch.startMu.Lock()
	defer ch.startMu.Unlock()
	if ch.streams != nil {
		return ch.streams, nil
	}
	runCtx, err := ch.s.context()
	if err != nil {
		return nil, err
	}
	m := ch.m.Load()
	if m == nil {
		return nil, errors.New("the shard map of channel " + ch.ref.String() + " is not known yet")
	}
	pos := make(cursor.Composite, len(m.Shards))
	if m.Delivery == shardmap.DeliveryDurable {
		for i, sh := range m.Shards {
			if pos[i], err = ch.shardPosition(ctx, sh, true); err != nil {
				return nil, fmt.Errorf("no ready relay for shard %d of channel %s: %w", i, ch.ref, err)
			}
		}
	}
	streams := make([]*shardStream, len(m.Shards))
	for i := range streams {
		streams[i] = &shardStream{ch: ch, index: i, keyed: hub.New(ch.queueBytes()), interest: newInterest(), pos: pos[i]}
		streams[i].keyed.SetWriteInterval(ch.s.opt.WriteInterval)
	}
	ch.mergeMu.Lock()
	ch.pos = pos.Clone()
	ch.mergeMu.Unlock()
	ch.streams = streams
	for _, st := range streams {
		ch.running.Add(2)
		go func() { defer ch.running.Done(); st.run(runCtx) }()
		go func() { defer ch.running.Done(); st.adjust(runCtx) }()
	}
	return streams, nil
}

// deliver hands one event of shard i to the shard's keyed subscribers (the relay's bytes as
// they are) and, with the merged stream's cursor, to the whole-channel subscribers. Events of
// one shard arrive in order from its one stream.
func (ch *channel) deliver(i int, e *event.Encoded) {
	e.Shard = i
	ch.mergeMu.Lock()
	defer ch.mergeMu.Unlock()
	ch.streams[i].keyed.Broadcast(e)
	ch.pos[i] = e.ID
	merged := e
	if len(ch.pos) > 1 {
		ch.idBuf = ch.pos.AppendTo(ch.idBuf[:0])
		if merged = event.WithID(e, ch.idBuf); merged == nil {
			return
		}
	}
	ch.all.Broadcast(merged)
}

// advance moves shard i's part of the merged cursor to at, if it is later: an interest change
// took effect there, so nothing up to at is still to come on that shard.
func (ch *channel) advance(i int, at cursor.ID) {
	ch.mergeMu.Lock()
	defer ch.mergeMu.Unlock()
	if ch.pos[i].Less(at) {
		ch.pos[i] = at
	}
}

// subscribeAll registers a subscriber of the merged stream, of every key or (keys not nil) of
// those keys and prefixes, and returns the merged stream's cursor at that moment: the
// subscriber's position if it does not resume from a cursor of its own. It fits a subscriber of
// some keys too, since the merged stream routes exactly: up to each shard's position in it,
// every event of its keys has reached it.
func (ch *channel) subscribeAll(keys []string) (*hub.Subscriber, cursor.Composite) {
	ch.mergeMu.Lock()
	defer ch.mergeMu.Unlock()
	if keys != nil {
		return ch.all.SubscribeInterest(hub.Interest{Keys: keys}), ch.pos.Clone()
	}
	return ch.all.Subscribe(""), ch.pos.Clone()
}

// subscribeKey registers a keyed subscriber of one shard and returns the shard's position.
func (ch *channel) subscribeKey(st *shardStream, key string) (*hub.Subscriber, cursor.ID) {
	ch.mergeMu.Lock()
	defer ch.mergeMu.Unlock()
	return st.keyed.Subscribe(key), ch.pos[st.index]
}

// rotate returns bases starting at a random one, so sidecars spread over replicas.
func rotate(bases []string) []string {
	if len(bases) < 2 {
		return bases
	}
	k := int(time.Now().UnixNano() % int64(len(bases)))
	return append(append([]string(nil), bases[k:]...), bases[:k]...)
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
