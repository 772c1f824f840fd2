package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/shardmap"
)

// PublishRequest is one message to publish on the relay's shard.
type PublishRequest struct {
	Key            string // message key (already checked to belong to this shard)
	Type           string // CloudEvents type
	ContentType    string // datacontenttype
	Attrs          string // the producer's other CloudEvents attributes (event.Attrs.String())
	Data           []byte
	IdempotencyKey string        // optional: a retry with the same key (from the same caller, with the same message) returns the first ID
	Caller         string        // who publishes ("<namespace>/<service account>"; "" unauthenticated): scopes IdempotencyKey
	RetryKey       bool          // IdempotencyKey was made up by the sidecar for its own retries: kept at most RetryKeyWindow
	WaitReplicas   int           // >0: WAIT for this many replicas after the write
	WaitTimeout    time.Duration // bound of the WAIT
}

// PublishResult is what Redis made of a publish.
type PublishResult struct {
	ID         cursor.ID
	Duplicate  bool // the Idempotency-Key was seen before; nothing was stored this time
	Replicas   int  // replicas that acknowledged the write (only with WaitReplicas > 0)
	Replicated bool // Replicas >= WaitReplicas
}

// Publisher writes messages of one shard.
type Publisher struct {
	cluster   *redis.ClusterClient
	m         *shardmap.Map
	shard     shardmap.Shard
	idemTTL   time.Duration
	now       func() time.Time
	liveSeq   atomic.Uint64
	routeKey  string
	retention shardmap.Retention
	pipe      *pipeline // nil: every publish is its own round trip (see AutoPipeline)
}

// RetryKeyWindow bounds how long a key the sidecar made up for its own retries is remembered:
// they happen within seconds, and a key kept longer only costs Redis memory.
const RetryKeyWindow = time.Minute

// NewPublisher returns the publisher of shard i of m. An Idempotency-Key is remembered for the
// map's IdempotencyWindow, or idempotencyWindow where the map sets none; a Live channel
// remembers none (it stores nothing a retry could find).
func NewPublisher(cluster *redis.ClusterClient, m *shardmap.Map, i int, idempotencyWindow time.Duration) *Publisher {
	if m.IdempotencyWindow.Duration > 0 {
		idempotencyWindow = m.IdempotencyWindow.Duration
	}
	p := &Publisher{cluster: cluster, m: m, shard: m.Shards[i], idemTTL: idempotencyWindow, now: time.Now, retention: m.Retention}
	p.routeKey = p.shard.LiveChannel
	if m.Delivery == shardmap.DeliveryDurable {
		p.routeKey = p.shard.Stream
	}
	// Live IDs are made here, not by Redis: a random high half keeps two relay replicas from
	// issuing the same ID in the same millisecond. They order nothing and resume nothing.
	p.liveSeq.Store(uint64(rand.Uint32()) << 32)
	return p
}

// Publish calls the publish function (shardmap.PublishFunction). With WaitReplicas it runs the script and WAIT on one
// connection of the slot's master: WAIT counts replica acknowledgements of that connection's
// writes only (REDIS-NOTES.md).
func (p *Publisher) Publish(ctx context.Context, req PublishRequest) (PublishResult, error) {
	keys, args := p.call(req)
	var res PublishResult
	var reply any
	var err error
	if req.WaitReplicas > 0 {
		reply, res.Replicas, err = p.publishAndWait(ctx, keys, args, req.WaitReplicas, req.WaitTimeout)
		res.Replicated = err == nil && res.Replicas >= req.WaitReplicas
	} else if p.pipe != nil {
		reply, err = p.pipe.call(ctx, keys, args)
	} else {
		reply, err = p.fcall(ctx, p.cluster, keys, args)
	}
	return result(res, reply, err)
}

// PublishBatch publishes reqs in their order and returns each one's result and error (nil:
// stored). Every request must have the same WaitReplicas and WaitTimeout. They go as one pipeline
// of their own, not through the auto-pipeline (which would cut a large batch into several
// rounds, and a round that failed could be followed by one that did not): a pipeline that
// breaks fails everything after the break, so a retry with the same ids or keys stores the rest
// after what was stored, in order. With WaitReplicas the pipeline runs on one connection of the slot's master, followed by
// one WAIT for all of them.
func (p *Publisher) PublishBatch(ctx context.Context, reqs []PublishRequest) ([]PublishResult, []error) {
	calls := make([]*pendingCall, len(reqs))
	for i, req := range reqs {
		keys, args := p.call(req)
		calls[i] = &pendingCall{keys: keys, args: args}
	}
	replicas, waitErr := 0, error(nil)
	if len(reqs) > 0 && reqs[0].WaitReplicas > 0 {
		replicas, waitErr = p.pipelineAndWait(ctx, calls, reqs[0].WaitReplicas, reqs[0].WaitTimeout)
	} else {
		ctx, cancel := context.WithTimeout(ctx, pipelineTimeout)
		p.pipelined(ctx, p.cluster, calls)
		cancel()
	}
	results, errs := make([]PublishResult, len(reqs)), make([]error, len(reqs))
	for i, c := range calls {
		res := PublishResult{}
		if reqs[i].WaitReplicas > 0 && waitErr == nil {
			res.Replicas, res.Replicated = replicas, replicas >= reqs[i].WaitReplicas
		}
		results[i], errs[i] = result(res, c.reply, c.err)
	}
	return results, errs
}

// call is the keys and arguments of the publish function for req.
func (p *Publisher) call(req PublishRequest) (keys []string, args []any) {
	durable := p.m.Delivery == shardmap.DeliveryDurable
	keys = []string{p.routeKey}
	if req.IdempotencyKey != "" && durable {
		keys = append(keys, shardmap.IdempotencyKey(p.shard.HashTag, idempotencyScope(req.Caller)+":"+req.IdempotencyKey))
	}
	now := p.now()
	maxLen, maxAge := "0", "0"
	if durable && p.retention.MaxLength > 0 {
		maxLen = strconv.FormatInt(p.retention.MaxLength, 10)
	}
	if durable && p.retention.MaxAge.Duration > 0 {
		maxAge = strconv.FormatInt(max(p.retention.MaxAge.Duration.Milliseconds(), 1), 10)
	}
	liveID := "0-0"
	if !durable {
		liveID = cursor.ID{Ms: uint64(now.UnixMilli()), Seq: p.liveSeq.Add(1)}.String()
	}
	window := p.idemTTL
	if req.RetryKey {
		window = min(window, RetryKeyWindow)
	}
	ttl := int64(window / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	depth, lifetime := 0, int64(0)
	if durable && p.m.HistoryPerKey > 0 {
		depth, lifetime = p.m.HistoryPerKey, max(int64(p.m.HistoryLifetime()/time.Second), 1)
		keys = append(keys, shardmap.HistoryKey(p.shard.HashTag, req.Key))
	}
	return keys, []any{p.shard.LiveChannel, boolArg(durable), maxLen, maxAge, ttl, req.Key, req.Type, req.ContentType, req.Data, liveID, messageHash(req), req.Attrs,
		depth, lifetime}
}

// result reads the publish function's reply into res.
func result(res PublishResult, reply any, err error) (PublishResult, error) {
	if err != nil {
		return PublishResult{}, err
	}
	id, dup, err := parsePublishReply(reply)
	if err != nil {
		return PublishResult{}, err
	}
	if dup == 2 {
		return PublishResult{ID: id}, ErrIdempotencyConflict
	}
	res.ID, res.Duplicate = id, dup == 1
	return res, nil
}

// pipelineAndWait pipelines calls on one connection of the slot's master, then WAITs once for
// replicas to acknowledge them all. A failed WAIT leaves the writes stored, unconfirmed.
func (p *Publisher) pipelineAndWait(ctx context.Context, calls []*pendingCall, replicas int, timeout time.Duration) (int, error) {
	master, err := p.cluster.MasterForKey(ctx, p.routeKey)
	if err != nil {
		for _, c := range calls {
			c.err = err
		}
		return 0, err
	}
	conn := master.Conn()
	defer conn.Close()
	p.pipelined(ctx, conn, calls)
	for _, c := range calls {
		if c.err != nil && isMoved(c.err) {
			p.cluster.ReloadState(ctx)
			break
		}
	}
	n, err := conn.Wait(ctx, replicas, timeout).Result()
	return int(n), err
}

func (p *Publisher) publishAndWait(ctx context.Context, keys []string, args []any, replicas int, timeout time.Duration) (any, int, error) {
	master, err := p.cluster.MasterForKey(ctx, p.routeKey)
	if err != nil {
		return nil, 0, err
	}
	conn := master.Conn()
	defer conn.Close()
	reply, err := p.fcall(ctx, conn, keys, args)
	if err != nil {
		if isMoved(err) {
			p.cluster.ReloadState(ctx)
		}
		return nil, 0, err
	}
	n, err := conn.Wait(ctx, replicas, timeout).Result()
	if err != nil {
		// The message is stored; only the acknowledgement is unknown.
		return reply, 0, nil
	}
	return reply, int(n), nil
}

// fcall runs the publish function on c, the cluster client or a connection to the slot's
// master. Where Redis does not have the function yet and this user may load it (a local run as
// an administrative user; a channel's user may not), it loads it on the slot's master and calls
// again; otherwise the error says the operator has not loaded it.
func (p *Publisher) fcall(ctx context.Context, c interface {
	FCall(context.Context, string, []string, ...any) *redis.Cmd
}, keys []string, args []any) (any, error) {
	reply, err := c.FCall(ctx, shardmap.PublishFunction, keys, args...).Result()
	if err == nil || !strings.Contains(err.Error(), "Function not found") {
		return reply, err
	}
	master, merr := p.cluster.MasterForKey(ctx, p.routeKey)
	if merr == nil {
		merr = master.FunctionLoadReplace(ctx, shardmap.PublishLibrary).Err()
	}
	if merr != nil {
		return nil, fmt.Errorf("%w (the operator loads Herald's function library on every master; loading it here: %v)", err, merr)
	}
	return c.FCall(ctx, shardmap.PublishFunction, keys, args...).Result()
}

// ErrIdempotencyConflict: the Idempotency-Key was used by the same caller for another message.
var ErrIdempotencyConflict = errors.New("the Idempotency-Key was used for another message")

// idempotencyScope names a caller inside idempotency keys: a digest, so any caller name fits.
func idempotencyScope(caller string) string {
	sum := sha256.Sum256([]byte(caller))
	return hex.EncodeToString(sum[:8])
}

// messageHash identifies a message's content (key, type, content type, attributes, data) for the
// idempotency check: a retry must send the same message.
func messageHash(req PublishRequest) string {
	h := sha256.New()
	parts := [][]byte{[]byte(req.Key), []byte(req.Type), []byte(req.ContentType), req.Data}
	if req.Attrs != "" { // absent, the hash is what it was before attributes were stored
		parts = append(parts, []byte(req.Attrs))
	}
	for _, part := range parts {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// parsePublishReply reads {id, flag}: flag 0 stored, 1 duplicate, 2 conflict.
func parsePublishReply(reply any) (cursor.ID, int64, error) {
	arr, ok := reply.([]any)
	if !ok || len(arr) != 2 {
		return cursor.ID{}, 0, fmt.Errorf("publish function returned %T, want [id, flag]", reply)
	}
	s, _ := arr[0].(string)
	id, err := cursor.Parse(s)
	if err != nil {
		return cursor.ID{}, 0, fmt.Errorf("publish function returned ID %q: %w", s, err)
	}
	flag, _ := arr[1].(int64)
	return id, flag, nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func isMoved(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return len(msg) >= 5 && (msg[:5] == "MOVED" || msg[:3] == "ASK")
}
