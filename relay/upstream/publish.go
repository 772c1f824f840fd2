package upstream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/shardmap"
)

// publishScript stores and announces one message atomically on the shard's slot.
//
// KEYS[1] the stream (Durable) or the live channel (Live: only there to route the script to the
// slot), KEYS[2] the idempotency key if the publisher sent one.
// ARGV: 1 live channel, 2 "1" if Durable, 3 MAXLEN ("0" = none), 4 MINID ("0" = none),
// 5 idempotency window in seconds, 6 key, 7 type, 8 content type, 9 data, 10 ID for Live.
//
// XADD first, SPUBLISH second: scripts do not roll back, and "stored but not announced" is
// repaired by catch-up while the reverse would announce what was never stored. The payload is
// "<id>\n<writer>\n<key>\n<type>\n<content type>\n<data>" (event.DecodeLive), where writer is
// the first 12 characters of the node ID that ran the script: a master that was paused, lost
// its slot and wakes up still runs queued scripts and its SPUBLISH reaches the new master over
// the cluster bus; the subscription drops messages not written by the node it subscribed on,
// because such entries are lost when the stale master rejoins (see Subscription). The idempotency key is
// written in the same script right after XADD, before anything that could still fail (a trim, the
// announcement), so a retry can never store the message twice.
var publishScript = redis.NewScript(`
local idem = KEYS[2]
if idem then
  local prev = redis.call('GET', idem)
  if prev then return {prev, 1} end
end
local id = ARGV[10]
local durable = ARGV[2] == '1'
if durable then
  local f = {'k', ARGV[6], 't', ARGV[7], 'c', ARGV[8], 'd', ARGV[9]}
  if ARGV[3] ~= '0' then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(f))
  elseif ARGV[4] ~= '0' then
    id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[4], '*', unpack(f))
  else
    id = redis.call('XADD', KEYS[1], '*', unpack(f))
  end
end
-- Remember the ID at once: if anything below fails, a retry finds it instead of storing again.
if idem then redis.call('SET', idem, id, 'EX', ARGV[5]) end
if durable and ARGV[3] ~= '0' and ARGV[4] ~= '0' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[4]) end
local writer = string.sub(redis.call('CLUSTER', 'MYID'), 1, 12)
redis.call('SPUBLISH', ARGV[1], id .. '\n' .. writer .. '\n' .. ARGV[6] .. '\n' .. ARGV[7] .. '\n' .. ARGV[8] .. '\n' .. ARGV[9])
return {id, 0}
`)

// PublishRequest is one message to publish on the relay's shard.
type PublishRequest struct {
	Key            string // message key (already checked to belong to this shard)
	Type           string // CloudEvents type
	ContentType    string // datacontenttype
	Data           []byte
	IdempotencyKey string        // optional: a retry with the same key returns the first ID
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
}

// NewPublisher returns the publisher of shard i of m. idempotencyWindow is how long an
// Idempotency-Key is remembered.
func NewPublisher(cluster *redis.ClusterClient, m *shardmap.Map, i int, idempotencyWindow time.Duration) *Publisher {
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

// Publish runs the publish script. With WaitReplicas it runs the script and WAIT on one
// connection of the slot's master: WAIT counts replica acknowledgements of that connection's
// writes only (REDIS-NOTES.md).
func (p *Publisher) Publish(ctx context.Context, req PublishRequest) (PublishResult, error) {
	durable := p.m.Delivery == shardmap.DeliveryDurable
	keys := []string{p.routeKey}
	if req.IdempotencyKey != "" {
		keys = append(keys, shardmap.IdempotencyKey(p.shard.HashTag, req.IdempotencyKey))
	}
	now := p.now()
	maxLen, minID := "0", "0"
	if durable && p.retention.MaxLength > 0 {
		maxLen = strconv.FormatInt(p.retention.MaxLength, 10)
	}
	if durable && p.retention.MaxAge.Duration > 0 {
		minID = strconv.FormatInt(now.Add(-p.retention.MaxAge.Duration).UnixMilli(), 10)
	}
	liveID := "0-0"
	if !durable {
		liveID = cursor.ID{Ms: uint64(now.UnixMilli()), Seq: p.liveSeq.Add(1)}.String()
	}
	ttl := int64(p.idemTTL / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	args := []any{p.shard.LiveChannel, boolArg(durable), maxLen, minID, ttl, req.Key, req.Type, req.ContentType, req.Data, liveID}

	var res PublishResult
	var reply any
	var err error
	if req.WaitReplicas > 0 {
		reply, res.Replicas, err = p.publishAndWait(ctx, keys, args, req.WaitReplicas, req.WaitTimeout)
		res.Replicated = err == nil && res.Replicas >= req.WaitReplicas
	} else {
		reply, err = publishScript.Run(ctx, p.cluster, keys, args...).Result()
	}
	if err != nil {
		return PublishResult{}, err
	}
	id, dup, err := parsePublishReply(reply)
	if err != nil {
		return PublishResult{}, err
	}
	res.ID, res.Duplicate = id, dup
	return res, nil
}

func (p *Publisher) publishAndWait(ctx context.Context, keys []string, args []any, replicas int, timeout time.Duration) (any, int, error) {
	master, err := p.cluster.MasterForKey(ctx, p.routeKey)
	if err != nil {
		return nil, 0, err
	}
	conn := master.Conn()
	defer conn.Close()
	reply, err := publishScript.Run(ctx, conn, keys, args...).Result()
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

func parsePublishReply(reply any) (cursor.ID, bool, error) {
	arr, ok := reply.([]any)
	if !ok || len(arr) != 2 {
		return cursor.ID{}, false, fmt.Errorf("publish script returned %T, want [id, duplicate]", reply)
	}
	s, _ := arr[0].(string)
	id, err := cursor.Parse(s)
	if err != nil {
		return cursor.ID{}, false, fmt.Errorf("publish script returned ID %q: %w", s, err)
	}
	dup, _ := arr[1].(int64)
	return id, dup == 1, nil
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
