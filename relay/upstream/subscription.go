package upstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/metrics"
	"github.com/heraldhq/herald/relay/shardmap"
)

// Options tune a Subscription. Zero values take the defaults.
type Options struct {
	ProbeInterval time.Duration // how often the relay publishes a heartbeat probe on its live channel. Defaults to 1s.
	ProbeTimeout  time.Duration // no own probe heard for this long = rebuild the subscription. Defaults to 3s.
	VerifyTimeout time.Duration // bound of each "is this node the slot's master?" check. Defaults to 1s.
	HandoffSize   int           // live messages buffered between the read loop and the processor. Defaults to 8192.
	CatchUpBatch  int64         // XRANGE COUNT per catch-up round trip. Defaults to 1000.
	RollbackLog   int           // rollbacks remembered for resuming subscribers. Defaults to 64.
	Logger        *slog.Logger  // defaults to slog.Default()
}

func (o *Options) defaults() {
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 3 * time.Second
	}
	if o.VerifyTimeout <= 0 {
		o.VerifyTimeout = time.Second
	}
	if o.HandoffSize <= 0 {
		o.HandoffSize = 8192
	}
	if o.CatchUpBatch <= 0 {
		o.CatchUpBatch = 1000
	}
	if o.RollbackLog <= 0 {
		o.RollbackLog = 64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// writerIDLen is how much of a node ID the publish script puts in the live payload.
const writerIDLen = 12

// ProbePrefix starts every heartbeat probe payload. A stream ID never starts with NUL, so
// subscribers of a live channel (relays and, later, sidecars) can tell probes from messages.
const ProbePrefix = "\x00probe "

// Rollback records one failover in which Redis lost entries the relay had already delivered.
type Rollback struct {
	At            time.Time
	LastDelivered cursor.ID // the newest ID delivered before the failover
	Survivor      cursor.ID // the newest delivered entry still in the stream; delivery resumed after it
	LastGenerated cursor.ID // the new master's last-generated-id when the loss was found
}

// Status is a snapshot for /readyz and logs.
type Status struct {
	Subscribed    bool       `json:"subscribed"`            // SSUBSCRIBE confirmed on the slot's master
	CaughtUp      bool       `json:"caughtUp"`              // catch-up from the stream finished for this subscription
	Node          string     `json:"node,omitempty"`        // address of the master subscribed to
	Sessions      uint64     `json:"sessions"`              // subscriptions made so far (1 + resubscribes)
	LastDelivered string     `json:"lastDelivered"`         // newest ID handed to subscribers; before the first, the stream's end when the relay started
	Rollbacks     []Rollback `json:"rollbacks,omitempty"`   // losses detected, newest last
	LastError     string     `json:"lastError,omitempty"`   // why the previous subscription ended
	ErrorAt       *time.Time `json:"lastErrorAt,omitempty"` // when
}

// Errors that end a subscription session.
var (
	ErrSunsubscribed = errors.New("redis sent an unrequested sunsubscribe (slot migrated or master demoted)")
	ErrProbeMissing  = errors.New("heartbeat probe did not come back on the shard subscription")
	ErrCatchUpFailed = errors.New("catch-up from the stream failed")
)

// Subscription is the shard's one upstream subscription and its processor.
type Subscription struct {
	cluster *redis.ClusterClient
	shard   shardmap.Shard
	durable bool
	history int // the channel's history depth per key (shardmap.Map.HistoryPerKey)
	hub     *hub.Hub
	enc     *event.Encoder
	met     *metrics.Metrics
	log     *slog.Logger
	opt     Options
	probeMe string // ProbePrefix + this process's instance ID + " "

	handoff  chan item
	overflow atomic.Bool
	kick     chan struct{} // processor -> supervisor: rebuild the session

	session    atomic.Uint64 // current session number
	subscribed atomic.Bool
	caughtUp   atomic.Uint64 // session the processor has caught up for
	started    atomic.Bool   // the first catch-up baseline is known

	mu        sync.Mutex // guards the status fields below
	node      string
	lastID    cursor.ID
	rollbacks []Rollback
	lastErr   error
	errAt     time.Time

	// Owned by the processor goroutine.
	last             cursor.ID // newest ID delivered (Durable)
	writer           string    // node ID prefix of the master of the current session
	lastWasDelivered bool      // last is an entry this process delivered (not just a baseline)
	ring             *deliveredRing
}

type item struct {
	payload  string    // a live message, or "" for a catch-up request
	recv     time.Time // when the read loop got it
	session  uint64
	catchUp  bool
	baseline cursor.ID // first session only: where delivery starts
	hasBase  bool
	writer   string // catch-up requests: CLUSTER MYID prefix of the master subscribed on
}

// NewSubscription prepares the subscription of shard i of m; Run starts it.
func NewSubscription(cluster *redis.ClusterClient, m *shardmap.Map, i int, h *hub.Hub, enc *event.Encoder, met *metrics.Metrics, opt Options) *Subscription {
	opt.defaults()
	var inst [6]byte
	_, _ = rand.Read(inst[:])
	s := &Subscription{
		cluster: cluster, shard: m.Shards[i], durable: m.Delivery == shardmap.DeliveryDurable, history: m.HistoryPerKey,
		hub: h, enc: enc, met: met, opt: opt,
		log:     opt.Logger.With("shard", i, "liveChannel", m.Shards[i].LiveChannel),
		probeMe: ProbePrefix + hex.EncodeToString(inst[:]) + " ",
		handoff: make(chan item, opt.HandoffSize),
		kick:    make(chan struct{}, 1),
		ring:    newDeliveredRing(16384),
	}
	return s
}

// Ready reports whether the subscription is confirmed on the slot's master and caught up.
func (s *Subscription) Ready() bool {
	return s.subscribed.Load() && s.caughtUp.Load() == s.session.Load()
}

// Status returns a snapshot of the subscription's health.
func (s *Subscription) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		Subscribed: s.subscribed.Load(), CaughtUp: s.caughtUp.Load() == s.session.Load(),
		Node: s.node, Sessions: s.session.Load(), LastDelivered: s.lastID.String(),
		Rollbacks: append([]Rollback(nil), s.rollbacks...),
	}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
		at := s.errAt
		st.ErrorAt = &at
	}
	return st
}

// Run keeps the subscription alive until ctx ends.
func (s *Subscription) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { defer close(done); s.process(ctx) }()
	defer func() { <-done }()
	retry := resubscribeBackoff()
	for {
		began := time.Now()
		err := s.runSession(ctx)
		s.subscribed.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		s.met.Resubscribes.Inc()
		s.mu.Lock()
		s.lastErr, s.errAt = err, time.Now()
		s.mu.Unlock()
		s.log.Warn("shard subscription lost; refreshing topology, resubscribing and catching up", "reason", err.Error())
		if time.Since(began) > 10*time.Second {
			retry = resubscribeBackoff() // it was healthy a while: start over quickly
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry.Step()):
		}
	}
}

func (s *Subscription) runSession(ctx context.Context) error {
	id := s.session.Add(1)
	master, err := s.findMaster(ctx, id > 1)
	if err != nil {
		return err
	}
	myID, err := master.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil || len(myID) < writerIDLen {
		return fmt.Errorf("CLUSTER MYID on %s: %q, %v", master.Options().Addr, myID, err)
	}
	it := item{catchUp: true, session: id, writer: myID[:writerIDLen]}
	if s.durable && !s.started.Load() {
		info, err := streamInfo(ctx, master, s.shard.Stream)
		if err != nil {
			return err
		}
		it.baseline, it.hasBase = info.LastGenerated, true
	}

	ps := master.SSubscribe(ctx, s.shard.LiveChannel)
	defer ps.Close()
	reply, err := ps.ReceiveTimeout(ctx, s.opt.ProbeTimeout)
	if err != nil {
		return fmt.Errorf("SSUBSCRIBE on %s: %w", master.Options().Addr, err)
	}
	if sub, ok := reply.(*redis.Subscription); !ok || sub.Kind != "ssubscribe" {
		return fmt.Errorf("SSUBSCRIBE on %s answered %v", master.Options().Addr, reply)
	}
	s.mu.Lock()
	s.node = master.Options().Addr
	s.mu.Unlock()
	s.subscribed.Store(true)
	s.started.Store(true)
	select {
	case <-s.kick: // a kick meant for the previous session
	default:
	}
	select {
	case s.handoff <- it:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.log.Info("subscribed to the shard's live channel", "node", master.Options().Addr, "session", id)

	var wg sync.WaitGroup
	defer wg.Wait()
	pctx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	wg.Add(1)
	go func() { defer wg.Done(); s.probe(pctx) }()

	lastProbe := time.Now()
	for {
		select {
		case <-s.kick:
			return ErrCatchUpFailed
		default:
		}
		reply, err := ps.ReceiveTimeout(ctx, s.opt.ProbeInterval)
		now := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !isTimeout(err) {
				return fmt.Errorf("receive on %s: %w", master.Options().Addr, err)
			}
			if err := ps.Ping(ctx); err != nil {
				return fmt.Errorf("PING on the subscription to %s: %w", master.Options().Addr, err)
			}
		} else {
			switch m := reply.(type) {
			case *redis.Subscription:
				if m.Kind == "sunsubscribe" || m.Kind == "unsubscribe" {
					return ErrSunsubscribed
				}
			case *redis.Message:
				if strings.HasPrefix(m.Payload, ProbePrefix) {
					if strings.HasPrefix(m.Payload, s.probeMe) {
						lastProbe = now
						select { // a tick lets the processor run a deferred catch-up while traffic is idle
						case s.handoff <- item{session: id}:
						default:
						}
					}
					continue
				}
				s.handOff(item{payload: m.Payload, recv: now, session: id})
			}
		}
		if now.Sub(lastProbe) > s.opt.ProbeTimeout {
			return ErrProbeMissing
		}
	}
}

// handOff gives a live message to the processor without ever blocking the read loop.
func (s *Subscription) handOff(it item) {
	select {
	case s.handoff <- it:
	default:
		s.overflow.Store(true)
		s.met.HandoffDropped.Inc()
	}
}

// findMaster waits until the cluster map names a node that serves the slot as master: a keyed
// command on it succeeds (a replica or a former owner answers MOVED, a dead or paused node
// fails or times out). After trouble the map is reloaded first.
func (s *Subscription) findMaster(ctx context.Context, reload bool) (*redis.Client, error) {
	for attempt := 0; ; attempt++ {
		if reload || attempt > 0 {
			s.cluster.ReloadState(ctx)
		}
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			// At most 200 ms apart: right after a promotion every moment waiting here is a
			// moment without delivery, and an attempt is two small commands.
			case <-time.After(min(time.Duration(attempt)*50*time.Millisecond, 200*time.Millisecond)):
			}
		}
		master, err := s.cluster.MasterForKey(ctx, s.shard.LiveChannel)
		if err != nil {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, s.opt.VerifyTimeout)
		err = master.Do(vctx, "EXISTS", s.shard.LiveChannel).Err()
		cancel()
		if err == nil {
			return master, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// probe publishes a heartbeat on the live channel every ProbeInterval, through the cluster
// client (so it reaches whichever node really owns the slot). A probe that cannot be published
// is not an error here: it simply does not come back, and the read loop notices.
func (s *Subscription) probe(ctx context.Context) {
	t := time.NewTicker(s.opt.ProbeInterval)
	defer t.Stop()
	for n := 0; ; n++ {
		pctx, cancel := context.WithTimeout(ctx, s.opt.ProbeInterval)
		_ = s.cluster.SPublish(pctx, s.shard.LiveChannel, s.probeMe+strconv.Itoa(n)).Err()
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// resubscribeBackoff spaces the attempts to rebuild a lost subscription: 50 ms doubling to 1 s,
// jittered so that the relays of a cluster do not retry in step after a failover.
func resubscribeBackoff() wait.Backoff {
	return wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.2, Cap: time.Second, Steps: math.MaxInt32}
}
