package shardmap

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"
)

// Delivery modes, as in the NotificationChannel API.
const (
	DeliveryLive    = "Live"
	DeliveryDurable = "Durable"
)

// ConfigMapKey is the key of the shard map inside the channel's ConfigMap.
const ConfigMapKey = "shardmap.json"

// MaxShards is the most shards a channel may have.
const MaxShards = 64

// RelayPort is the port every relay (shard and sidecar) serves HTTP API v1 on.
const RelayPort = 7070

// Map is everything a relay needs to know about one channel. The operator writes it as JSON into
// the channel's ConfigMap; relays read it from a file or from GET /v1/channels/{c}/shards.
type Map struct {
	Namespace       string    `json:"namespace"`       // namespace of the NotificationChannel
	Channel         string    `json:"channel"`         // name of the NotificationChannel
	Delivery        string    `json:"delivery"`        // DeliveryLive or DeliveryDurable
	Retention       Retention `json:"retention"`       // stream bounds (Durable only)
	MaxMessageBytes int64     `json:"maxMessageBytes"` // publish body limit
	// IdempotencyWindow is how long an Idempotency-Key is remembered (Durable only; 0: the
	// relay's --idempotency-window).
	IdempotencyWindow Duration `json:"idempotencyWindow,omitempty"`
	Access            []string `json:"access,omitempty"` // namespaces whose sidecars may call, besides Namespace
	// HistoryPerKey is how many of each key's newest events the publish function indexes
	// (HistoryKey), so a stream can start with the last N of its keys (?history=N); 0: none.
	HistoryPerKey int     `json:"historyPerKey,omitempty"`
	Shards        []Shard `json:"shards"` // one per shard, ordered by Index
}

// Allows reports whether pods of namespace may publish and subscribe.
func (m *Map) Allows(namespace string) bool {
	return namespace == m.Namespace || slices.Contains(m.Access, namespace)
}

// Endpoints stands in for cluster DNS where there is none (the local stack, tests): the host of a
// relay Service, as written in Shard.Endpoint ("orders-shard-0.default.svc") or Shard.Replicas,
// mapped to the host:port of each of its ready replicas. Sidecars read it from --endpoints-file;
// a file without the Replicas host is looked up by the Endpoint host.
type Endpoints map[string][]string

// Retention bounds a shard stream. Zero means "no bound of that kind".
type Retention struct {
	MaxLength int64    `json:"maxLength,omitempty"` // XADD MAXLEN ~ N
	MaxAge    Duration `json:"maxAge,omitempty"`    // XADD MINID ~ now-maxAge
}

// Shard is where one shard lives.
type Shard struct {
	Index       int    `json:"index"`              // 0..len(Shards)-1
	HashTag     string `json:"hashTag"`            // puts Stream and LiveChannel in one slot
	Stream      string `json:"stream"`             // stream key (Durable)
	LiveChannel string `json:"liveChannel"`        // sharded pub/sub channel
	Endpoint    string `json:"endpoint,omitempty"` // base URL of the shard's relay Service
	// Replicas is the base URL of the shard's headless Service, whose DNS name answers with every
	// ready relay's address: a sidecar picks the replica itself and can leave one that went
	// silent, where through Endpoint kube-proxy may pick it again. Maps from before it have
	// none; then Endpoint is used.
	Replicas string `json:"replicas,omitempty"`
}

// Duration is a time.Duration that reads and writes as a Go duration string ("24h").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string such as "1h30m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string such as "90s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"24h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// New returns the map of a channel whose shards carry the given hash tags, in shard order.
func New(namespace, channel, delivery string, tags []string) *Map {
	m := &Map{Namespace: namespace, Channel: channel, Delivery: delivery}
	for i, tag := range tags {
		m.Shards = append(m.Shards, Shard{
			Index:       i,
			HashTag:     tag,
			Stream:      StreamKey(tag),
			LiveChannel: LiveChannel(tag),
			Endpoint:    fmt.Sprintf("http://%s.%s.svc:%d", ShardServiceName(channel, i), namespace, RelayPort),
			Replicas:    fmt.Sprintf("http://%s.%s.svc:%d", ShardReplicasServiceName(channel, i), namespace, RelayPort),
		})
	}
	return m
}

// Parse reads a JSON shard map and validates it.
func Parse(b []byte) (*Map, error) {
	var m Map
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("shard map: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate reports the first thing that makes the map unusable.
func (m *Map) Validate() error {
	switch {
	case m.Namespace == "" || m.Channel == "":
		return errors.New("shard map: namespace and channel are required")
	case m.Delivery != DeliveryLive && m.Delivery != DeliveryDurable:
		return fmt.Errorf("shard map: delivery %q is neither %s nor %s", m.Delivery, DeliveryLive, DeliveryDurable)
	case len(m.Shards) == 0 || len(m.Shards) > MaxShards:
		return fmt.Errorf("shard map: %d shards, want 1 to %d", len(m.Shards), MaxShards)
	case m.Retention.MaxLength < 0 || m.Retention.MaxAge.Duration < 0:
		return errors.New("shard map: retention bounds must not be negative")
	case m.MaxMessageBytes < 0:
		return errors.New("shard map: maxMessageBytes must not be negative")
	}
	for i, s := range m.Shards {
		if s.Index != i {
			return fmt.Errorf("shard map: shard at position %d has index %d", i, s.Index)
		}
		if s.HashTag == "" || s.LiveChannel == "" || (m.Delivery == DeliveryDurable && s.Stream == "") {
			return fmt.Errorf("shard map: shard %d lacks a hash tag, stream or live channel", i)
		}
	}
	return nil
}

// ShardFor picks the shard of a message key. The hash (FNV-1a, 32 bit) is part of the contract:
// the operator never changes the number of shards, so a key stays on its shard for good.
func (m *Map) ShardFor(key string) int { return ShardFor(key, len(m.Shards)) }

// ShardFor picks one of n shards for key.
func ShardFor(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// HashTag is the tag of a shard's keys. The salt is varied by the operator until the tag's slot
// lands on the master it wants. Namespaces and channel names cannot contain '/' or braces, so a
// tag names one shard of one channel unambiguously.
func HashTag(namespace, channel string, shard, salt int) string {
	return namespace + "/" + channel + "/" + strconv.Itoa(shard) + "." + strconv.Itoa(salt)
}

// StreamKey is the stream of the shard with the given hash tag.
func StreamKey(tag string) string { return "herald:{" + tag + "}:stream" }

// LiveChannel is the sharded pub/sub channel of the shard with the given hash tag.
func LiveChannel(tag string) string { return "herald:{" + tag + "}:live" }

// IdempotencyKey remembers the stream ID of a publish made with an Idempotency-Key header.
func IdempotencyKey(tag, idempotencyKey string) string {
	return "herald:{" + tag + "}:idem:" + idempotencyKey
}

// HistoryKey is the history index of one message key on the shard with the given hash tag: the
// stream IDs of its newest events, newest first (see PublishFunction).
func HistoryKey(tag, key string) string { return "herald:{" + tag + "}:hist:" + key }

// DefaultHistoryLifetime is how long a key's history index lives after its last event when the
// channel has no maxAge: the index of a key nobody publishes to any more goes away.
const DefaultHistoryLifetime = 7 * 24 * time.Hour

// HistoryLifetime is how long a key's history index outlives its newest event: the channel's
// maxAge (its entries are trimmed then anyway), else DefaultHistoryLifetime.
func (m *Map) HistoryLifetime() time.Duration {
	if m.Retention.MaxAge.Duration > 0 {
		return m.Retention.MaxAge.Duration
	}
	return DefaultHistoryLifetime
}

// OwnerKey holds the UID of the namespace whose channel of this name wrote the channel's data:
// a channel applied again takes up retained streams only when its namespace is the same one
// (namespaces are not reserved: one deleted and created again may belong to another team).
func OwnerKey(namespace, channel string) string {
	return "herald:{" + namespace + "/" + channel + "/owner}"
}

// KeyPattern is the Redis ACL glob that covers every key and shard channel of a channel (and no
// other channel's: the pattern ends at the '/' that follows the channel name).
func KeyPattern(namespace, channel string) string {
	return "herald:{" + namespace + "/" + channel + "/*"
}

// ACLUser is the Redis ACL user the relays of a channel connect as.
func ACLUser(namespace, channel string) string { return "herald." + namespace + "." + channel }

// DefaultMaxMessageBytes applies when the shard map sets no maxMessageBytes.
const DefaultMaxMessageBytes = 1 << 20

// MaxEventBytes bounds one encoded event (an SSE frame or a WebSocket message) that carries a
// message of maxMessageBytes: JSON escaping of text data can make it 6 times as large (a control
// character becomes \u00XX), plus the CloudEvent's attributes.
func MaxEventBytes(maxMessageBytes int64) int64 {
	if maxMessageBytes <= 0 {
		maxMessageBytes = DefaultMaxMessageBytes
	}
	return 6*maxMessageBytes + 64<<10
}

// QueueBytes is the least per-subscriber queue a relay or sidecar serving a channel of
// maxMessageBytes needs: two of its largest events, so that an event arriving while the largest
// is being written does not close a healthy subscriber as slow.
func QueueBytes(maxMessageBytes int64) int64 { return 2 * MaxEventBytes(maxMessageBytes) }

// MessageMemory is the memory a relay or sidecar needs for messages of maxMessageBytes on top of
// its base: a body being read, its encoded event, and two more on their way to subscribers.
func MessageMemory(maxMessageBytes int64) int64 { return 4 * MaxEventBytes(maxMessageBytes) }

// TokenAudience is the audience of the service account tokens a channel's relays accept: a
// token a relay receives is good at that channel's relays only, not at every relay in the
// cluster.
func TokenAudience(namespace, channel string) string {
	return "herald.dev/" + namespace + "/" + channel
}

// TokenFileName is the file, in the injected sidecar's token directory, of the projected token
// for a channel (names and namespaces hold no dots, so the name is unambiguous).
func TokenFileName(namespace, channel string) string { return namespace + "." + channel }

// ConfigMapName is the ConfigMap that holds the channel's shard map.
func ConfigMapName(channel string) string { return channel + "-shardmap" }

// CredentialsSecretName is the Secret holding the channel's ACL user and password.
func CredentialsSecretName(channel string) string { return channel + "-redis-acl" }

// ShardDeploymentName is the relay Deployment of one shard; its Service has the same name.
func ShardDeploymentName(channel string, shard int) string {
	return channel + "-shard-" + strconv.Itoa(shard)
}

// ShardServiceName is the Service in front of one shard's relays.
func ShardServiceName(channel string, shard int) string { return ShardDeploymentName(channel, shard) }

// ShardReplicasServiceName is the headless Service of one shard's relays (Shard.Replicas). It is
// not ShardServiceName plus a suffix: a channel name may take 54 characters, and
// "<name>-shard-63" already fills a Service name's 63; "<name>-pods-63" takes 62.
func ShardReplicasServiceName(channel string, shard int) string {
	return channel + "-pods-" + strconv.Itoa(shard)
}

// ChannelServiceName is the channel-wide Service in front of all its relays.
func ChannelServiceName(channel string) string { return channel + "-relay" }

// RelayCommands are the only Redis commands a channel's ACL user is granted: what a relay needs
// to discover the cluster, publish (FCALL of PublishFunction, and the commands it calls, which
// Redis checks against the caller: XADD, XTRIM when both retention bounds are set, SPUBLISH,
// idempotency keys with SET/GET, history indexes with LPUSH/LTRIM/EXPIRE, CLUSTER MYID, TIME; no
// EVAL or SCRIPT, so no Lua of its own), catch up (XRANGE, XREVRANGE, XINFO STREAM), read a key's
// history (LRANGE), subscribe (SSUBSCRIBE) and wait for replication.
// A relay that needs another command must add it here, where the operator grants it.
var RelayCommands = []string{
	"hello", "auth", "ping", "echo", "command", "client|setname", "client|getname", "client|id", "readonly", "readwrite",
	"cluster|slots", "cluster|shards", "cluster|nodes", "cluster|info", "cluster|myid", "cluster|keyslot",
	"fcall", "time",
	"xadd", "xtrim", "xrange", "xrevrange", "xinfo|stream", "xlen", "exists", "get", "set",
	"lpush", "ltrim", "expire", "lrange",
	"spublish", "ssubscribe", "sunsubscribe", "wait",
}
