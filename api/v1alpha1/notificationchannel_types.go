package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultIdempotencyWindow is spec.idempotencyWindow when a Durable channel does not set it.
const DefaultIdempotencyWindow = 5 * time.Minute

// DeliveryMode says what a subscriber may count on.
// +kubebuilder:validation:Enum=Live;Durable
type DeliveryMode string

const (
	// DeliveryLive is pub/sub only: lowest latency, at-most-once, nothing to replay after a
	// disconnect.
	DeliveryLive DeliveryMode = "Live"
	// DeliveryDurable stores every message in a per-shard stream before announcing it, so a
	// subscriber that reconnects with its last event ID gets everything still retained.
	DeliveryDurable DeliveryMode = "Durable"
)

// DeletionPolicy says what happens to Redis data when the channel is deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type DeletionPolicy string

const (
	// DeletionRetain keeps the streams in Redis and disables the channel's ACL user (off, no
	// password) on every node; only Kubernetes objects go.
	DeletionRetain DeletionPolicy = "Retain"
	// DeletionDelete removes the channel's streams, idempotency keys and ACL users from every
	// Redis node.
	DeletionDelete DeletionPolicy = "Delete"
)

// NotificationChannelSpec is what a team asks of a channel. The operator decides how.
// +kubebuilder:validation:XValidation:rule="!has(self.delivery) || self.delivery != 'Live' || !has(self.retention)",message="spec.retention is not allowed when spec.delivery is Live: pub/sub keeps nothing to retain"
// +kubebuilder:validation:XValidation:rule="!has(self.delivery) || self.delivery != 'Durable' || has(self.retention)",message="spec.retention is required when spec.delivery is Durable: set retention.maxLength, retention.maxAge or both"
// +kubebuilder:validation:XValidation:rule="!has(self.idempotencyWindow) || !has(self.delivery) || self.delivery != 'Live'",message="spec.idempotencyWindow is not allowed when spec.delivery is Live: a Live channel stores no idempotency keys"
// +kubebuilder:validation:XValidation:rule="!has(self.idempotencyWindow) || !has(self.retention) || !has(self.retention.maxAge) || duration(self.idempotencyWindow) <= duration(self.retention.maxAge)",message="spec.idempotencyWindow must not be longer than spec.retention.maxAge: a retry cannot find an entry the stream no longer holds"
type NotificationChannelSpec struct {
	// shards is the number of partitions of the channel, 1 to 64. A message's key picks its
	// shard with a stable hash; each shard has its own stream, live channel and relay
	// Deployment, placed on a distinct Redis master where the cluster has enough of them.
	// Immutable: changing it would move keys to other shards and break per-key order.
	// Defaults to 1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.shards is immutable: create a new channel to change the number of shards"
	// +optional
	Shards int32 `json:"shards,omitempty"`

	// delivery is Live (pub/sub only: lowest latency, at-most-once) or Durable (a stream per
	// shard plus pub/sub: a subscriber resumes with Last-Event-ID and loses nothing still
	// retained). Defaults to Durable.
	// +kubebuilder:default=Durable
	// +optional
	Delivery DeliveryMode `json:"delivery,omitempty"`

	// retention bounds each shard's stream. Required when delivery is Durable (no stream is
	// unbounded) and forbidden when delivery is Live (nothing is stored).
	// +optional
	Retention *Retention `json:"retention,omitempty"`

	// maxMessageBytes is the largest message body a relay accepts; larger publishes get
	// 413 Payload Too Large. Defaults to 65536 (64 KiB); at most 16777216 (16 MiB).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16777216
	// +kubebuilder:default=65536
	// +optional
	MaxMessageBytes int32 `json:"maxMessageBytes,omitempty"`

	// idempotencyWindow is how long a relay remembers an Idempotency-Key (Durable only), as a Go
	// duration between 1s and 24h: a retry within it returns the first message's ID instead of
	// storing it again. Keys the sidecar makes up for apps that send none live at most 1 minute
	// (its own retries). Every key costs Redis memory for the whole window. Defaults to 5m.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.idempotencyWindow must be between 1s and 24h"
	// +optional
	IdempotencyWindow *metav1.Duration `json:"idempotencyWindow,omitempty"`

	// relay shapes the per-shard relay Deployments.
	// +kubebuilder:default={}
	// +optional
	Relay RelaySpec `json:"relay,omitempty"`

	// redis overrides the operator's default Redis for this channel. Omit it to use the Redis
	// the operator was installed with.
	// +optional
	Redis *RedisSpec `json:"redis,omitempty"`

	// access lists who may publish and subscribe. The channel's own namespace is always allowed.
	// +optional
	Access AccessSpec `json:"access,omitempty"`

	// edge runs the channel's edge: relays that browsers and phones connect to with a token the
	// app's backend signs per user (docs/edge.md), each following exactly the keys its users
	// follow. Omit it for a channel that only pods use.
	// +optional
	Edge *EdgeSpec `json:"edge,omitempty"`

	// deletionPolicy is Retain (keep the streams in Redis when the channel is deleted and disable
	// its ACL user, so its old password opens nothing; a channel applied again with the same
	// namespace and name takes its streams up and enables the user with a new password) or
	// Delete (remove streams and user from every node). Defaults to Retain.
	// +kubebuilder:default=Retain
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// Retention bounds a shard stream by length, by age, or both (whichever trims more).
// +kubebuilder:validation:XValidation:rule="has(self.maxLength) || has(self.maxAge)",message="spec.retention needs maxLength, maxAge or both"
type Retention struct {
	// maxLength is the number of entries each shard stream keeps, at least. Trimming is
	// approximate (XADD MAXLEN ~), so a stream may briefly hold a little more.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxLength *int64 `json:"maxLength,omitempty"`

	// maxAge is how long an entry is kept, as a Go duration such as "30m" or "24h" (at least 1s).
	// Entries older than this are trimmed when new ones are written.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="spec.retention.maxAge must be at least 1s"
	// +optional
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`

	// historyPerKey is how many of each key's newest events Redis indexes, so that a stream can
	// start with the last N events of each key it follows (?history=N: a page's first screen
	// without a second API). 0, the default, keeps no index. Each key with events costs about
	// 200 bytes of Redis memory plus 18 per indexed event, for maxAge (else 7 days) after its
	// newest event, and each publish three more commands in the publish function
	// (docs/capacity.md).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	HistoryPerKey int32 `json:"historyPerKey,omitempty"`
}

// RelaySpec shapes the relay Deployments, one per shard.
type RelaySpec struct {
	// replicas is the number of relay pods per shard, 1 to 100. Each replica holds one Redis
	// subscription for its shard; more replicas spread subscribers and survive a pod loss.
	// A PodDisruptionBudget keeps one available when replicas > 1. Defaults to 2.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=2
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// resources of the relay container. Defaults to the operator's relay defaults.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// image overrides the relay image the operator was installed with.
	// +kubebuilder:validation:MinLength=1
	// +optional
	Image string `json:"image,omitempty"`

	// imagePullPolicy of the relay container. Defaults to the operator's (chart value
	// relay.image.pullPolicy), else Kubernetes' default.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// imagePullSecrets name Secrets in the channel's namespace to pull the relay image with.
	// Defaults to the operator's (chart value relay.imagePullSecrets), which must then exist in
	// every channel's namespace.
	// +optional
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// nodeSelector for the relay pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations for the relay pods.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity for the relay pods. Without it, replicas are spread across nodes by a
	// topology spread constraint.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// priorityClassName of the relay pods, e.g. one that keeps them running ahead of batch work.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// podLabels are added to the relay pods (for policies and cost reports). The labels the
	// operator selects its pods by cannot be overridden and win.
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// podAnnotations are added to the relay pods, e.g. a service mesh's injection switch. The
	// operator's own (notifications.herald.dev/...) win.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// logLevel of the relays: debug, info, warn or error. Defaults to the operator's
	// (chart value relay.logLevel).
	// +kubebuilder:validation:Enum=debug;info;warn;error
	// +optional
	LogLevel string `json:"logLevel,omitempty"`

	// limits cap what callers may hold at each relay of the channel, so that one caller cannot
	// exhaust a relay or Redis for the others. Beyond them a subscribe call is answered 429 Too
	// Many Requests with Retry-After. Unset fields keep the relay's defaults.
	// +optional
	Limits *RelayLimits `json:"limits,omitempty"`
}

// RelayLimits cap the streams and replays at one relay. A caller is a service account; the
// replicas of a Deployment share theirs, so size the per-caller caps for all of them.
type RelayLimits struct {
	// maxSubscribers is the most streams (SSE and WebSocket) one relay serves at once, all
	// callers together. Defaults to 10000.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxSubscribers *int32 `json:"maxSubscribers,omitempty"`

	// maxSubscribersPerCaller is the most streams one caller holds at one relay. A sidecar holds
	// one per shard for its live streams, plus one per local subscriber that is resuming.
	// Defaults to 2000.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxSubscribersPerCaller *int32 `json:"maxSubscribersPerCaller,omitempty"`

	// maxReplaysPerCaller is the most streams of one caller that replay stored events at once
	// (subscribe calls with a cursor, until they are live). Defaults to 32.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MaxReplaysPerCaller *int32 `json:"maxReplaysPerCaller,omitempty"`

	// replaysPerSecondPerCaller is how many replays one caller may start per second, in bursts
	// of twice as many: replays read Redis, which every channel shares. Defaults to 20.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	ReplaysPerSecondPerCaller *int32 `json:"replaysPerSecondPerCaller,omitempty"`
}

// EdgeSpec shapes the channel's edge: a Deployment of `herald relay --role=edge` with a
// Service (<name>-edge), a PodDisruptionBudget when it has more than one replica, and optionally
// an Ingress or a Gateway API HTTPRoute in front of it.
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || !has(self.httpRoute)",message="spec.edge.ingress and spec.edge.httpRoute are alternatives: give one"
type EdgeSpec struct {
	// replicas is the number of edge pods, 1 to 100. Leave it unset to scale the Deployment
	// <name>-edge with a HorizontalPodAutoscaler (for example on the connection count,
	// herald_relay_sidecar_subscribers); the operator then keeps the replicas the HPA sets.
	// Defaults to 2 when the Deployment is created.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// auth says where the keys of end users' tokens are. At least one source is required.
	Auth EdgeAuth `json:"auth"`

	// corsAllowedOrigins are the origins of the pages that connect (CORS), e.g.
	// "https://shop.example.com" or "https://*.example.com"; their hosts may open WebSockets too.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +listType=atomic
	// +optional
	CORSAllowedOrigins []string `json:"corsAllowedOrigins,omitempty"`

	// limits cap what one user and one client address hold at each edge pod.
	// +optional
	Limits *EdgeLimits `json:"limits,omitempty"`

	// resources of the edge container. Defaults to the operator's relay defaults.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// ingress routes https://<host>/v1/channels/<name>/ to the edge through an Ingress.
	// +optional
	Ingress *EdgeIngress `json:"ingress,omitempty"`

	// httpRoute routes https://<hostname>/v1/channels/<name>/ to the edge through a Gateway API
	// HTTPRoute (gateway.networking.k8s.io/v1). Where the Gateway API is not installed the
	// EdgeAvailable condition says so and the rest of the edge runs.
	// +optional
	HTTPRoute *EdgeHTTPRoute `json:"httpRoute,omitempty"`
}

// EdgeAuth names the keys end users' tokens are signed with, and their audience.
// +kubebuilder:validation:XValidation:rule="has(self.hmacSecretRef) || has(self.jwksSecretRef) || has(self.jwksURL)",message="spec.edge.auth needs hmacSecretRef, jwksSecretRef or jwksURL: the keys of end users' tokens"
type EdgeAuth struct {
	// hmacSecretRef names a Secret key holding the HS256 key (at least 32 bytes) the app's
	// backend signs tokens with.
	// +optional
	HMACSecretRef *KeyRef `json:"hmacSecretRef,omitempty"`

	// jwksSecretRef names a Secret key holding a JWKS of the public keys (RS256, ES256, EdDSA)
	// the app's backend signs tokens with. A rotation puts the old and the new key in it.
	// +optional
	JWKSSecretRef *KeyRef `json:"jwksSecretRef,omitempty"`

	// jwksURL is an https URL serving such a JWKS (the app's own), fetched every 5 minutes and
	// when a token names an unknown kid.
	// +kubebuilder:validation:Pattern=`^https://`
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	JWKSURL string `json:"jwksURL,omitempty"`

	// audience is the aud a token must name. Defaults to "<namespace>/<name>" of the channel.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Audience string `json:"audience,omitempty"`
}

// KeyRef names a key of a Secret in the channel's namespace.
type KeyRef struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key in the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// EdgeLimits cap what end users hold at one edge pod; beyond them a subscribe is answered 429
// (400 for too many keys).
type EdgeLimits struct {
	// streamsPerUser is the most streams one user (a token's sub) holds. Defaults to 32.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	StreamsPerUser *int32 `json:"streamsPerUser,omitempty"`

	// streamsPerAddress is the most streams one client address holds. Defaults to 1000 (many
	// users share an office's NAT).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	StreamsPerAddress *int32 `json:"streamsPerAddress,omitempty"`

	// keysPerStream is the most keys and key prefixes one stream follows. Defaults to 100.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	KeysPerStream *int32 `json:"keysPerStream,omitempty"`
}

// EdgeIngress is an Ingress in front of the edge.
type EdgeIngress struct {
	// className is the IngressClass. Omit it for the cluster's default class.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ClassName *string `json:"className,omitempty"`

	// hosts the edge answers on.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +listType=atomic
	Hosts []string `json:"hosts"`

	// tlsSecretName names a kubernetes.io/tls Secret with the hosts' certificate. Omit it for
	// plain HTTP (a browser page served over https cannot use it).
	// +kubebuilder:validation:MaxLength=253
	// +optional
	TLSSecretName string `json:"tlsSecretName,omitempty"`

	// annotations for the Ingress, e.g. the controller's settings for long-lived streams
	// (ingress-nginx: nginx.ingress.kubernetes.io/proxy-buffering "off" and
	// proxy-read-timeout "3600").
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// EdgeHTTPRoute is a Gateway API HTTPRoute in front of the edge.
type EdgeHTTPRoute struct {
	// parentRefs are the Gateways (and listeners) the route attaches to.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	ParentRefs []GatewayRef `json:"parentRefs"`

	// hostnames the route matches. Omit them to match the listeners' own.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=atomic
	// +optional
	Hostnames []string `json:"hostnames,omitempty"`
}

// GatewayRef names a Gateway, as an HTTPRoute's parentRef does.
type GatewayRef struct {
	// name of the Gateway.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// namespace of the Gateway. Defaults to the channel's.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// sectionName is the Gateway listener to attach to. Omit it for all of them.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SectionName string `json:"sectionName,omitempty"`
}

// RedisSpec points a channel at a Redis of its own instead of the operator's default.
type RedisSpec struct {
	// addresses are host:port seed nodes of a Redis Cluster, or the one address of a standalone
	// Redis. The operator discovers the rest of a cluster from them.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Pattern=`^[^\s:]+:[0-9]{1,5}$`
	// +listType=atomic
	Addresses []string `json:"addresses"`

	// credentialsSecretRef names a Secret in the channel's namespace with the username and
	// password of an administrative Redis user (it must be allowed to run ACL SETUSER and
	// XGROUP on every node).
	// +optional
	CredentialsSecretRef *CredentialsSecretRef `json:"credentialsSecretRef,omitempty"`

	// tls enables TLS to Redis. Omit it for plain TCP.
	// +optional
	TLS *RedisTLS `json:"tls,omitempty"`
}

// CredentialsSecretRef names a Secret and the keys that hold a Redis username and password.
type CredentialsSecretRef struct {
	// name of the Secret in the channel's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// usernameKey is the Secret key holding the username. Defaults to "username"; a missing key
	// means the "default" user.
	// +kubebuilder:default=username
	// +optional
	UsernameKey string `json:"usernameKey,omitempty"`

	// passwordKey is the Secret key holding the password. Defaults to "password".
	// +kubebuilder:default=password
	// +optional
	PasswordKey string `json:"passwordKey,omitempty"`
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	// caSecretRef names a Secret in the channel's namespace whose key (default "ca.crt") holds
	// the PEM CA bundle that signed the Redis server certificates. Omit it to use the system roots.
	// +optional
	CASecretRef *SecretKeyRef `json:"caSecretRef,omitempty"`

	// serverName overrides the name checked in the server certificate.
	// +optional
	ServerName string `json:"serverName,omitempty"`

	// insecureSkipVerify turns off certificate verification. For testing only.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`

	// clientCertSecretRef names a Secret in the channel's namespace with keys tls.crt and
	// tls.key (type kubernetes.io/tls, as cert-manager writes it): the client certificate the
	// operator and the relays present to Redis servers that ask for one (tls-auth-clients). A
	// renewed certificate is used from the next connection on.
	// +optional
	ClientCertSecretRef *SecretRef `json:"clientCertSecretRef,omitempty"`
}

// SecretRef names a Secret in the channel's namespace.
type SecretRef struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// SecretKeyRef names one key of a Secret in the channel's namespace.
type SecretKeyRef struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key in the Secret. Defaults to "ca.crt".
	// +kubebuilder:default=ca.crt
	// +optional
	Key string `json:"key,omitempty"`
}

// AccessSpec lists the namespaces whose pods may use the channel through their sidecar.
type AccessSpec struct {
	// namespaces, besides the channel's own, whose pods may publish and subscribe.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
}

// NotificationChannelStatus is rebuilt from the world on every reconcile.
type NotificationChannelStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, RedisConfigured, RelaysAvailable and Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// shards says where each shard lives. A shard's hashTag is chosen once and never changes.
	// +listType=map
	// +listMapKey=index
	// +optional
	Shards []ShardStatus `json:"shards,omitempty"`

	// endpoint is the in-cluster URL of the channel-wide relay Service.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// edge is what runs of spec.edge.
	// +optional
	Edge *EdgeStatus `json:"edge,omitempty"`
}

// EdgeStatus is where the channel's edge answers.
type EdgeStatus struct {
	// endpoint is the in-cluster URL of the edge Service.
	Endpoint string `json:"endpoint"`
	// urls are where end users connect through the Ingress or HTTPRoute.
	// +listType=atomic
	// +optional
	URLs []string `json:"urls,omitempty"`
	// readyReplicas is the number of ready edge pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
}

// ShardStatus is where one shard lives in Redis and in the cluster.
type ShardStatus struct {
	// index of the shard, 0 to shards-1.
	Index int32 `json:"index"`
	// hashTag puts the shard's stream and live channel in one Redis Cluster slot.
	HashTag string `json:"hashTag"`
	// slot is the Redis Cluster slot of the hash tag (0 for a standalone Redis).
	Slot int32 `json:"slot"`
	// node is the address of the master that owned the slot at the last reconcile.
	// +optional
	Node string `json:"node,omitempty"`
	// stream is the key of the shard's stream (Durable channels).
	// +optional
	Stream string `json:"stream,omitempty"`
	// liveChannel is the sharded pub/sub channel of the shard.
	LiveChannel string `json:"liveChannel"`
	// workload is the name of the shard's relay Deployment.
	// +optional
	Workload string `json:"workload,omitempty"`
	// readyReplicas is the number of ready relay pods of the shard.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
}

// NotificationChannel is a real-time channel: publish with an HTTP POST, subscribe with SSE or
// WebSocket, resume with Last-Event-ID.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=nch,categories=herald
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 54 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 54 characters that starts with a letter: it names the channel's Services (<name>-shard-<i>, <name>-relay)"
// +kubebuilder:printcolumn:name="Shards",type=integer,JSONPath=`.spec.shards`
// +kubebuilder:printcolumn:name="Delivery",type=string,JSONPath=`.spec.delivery`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type NotificationChannel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the team wants of the channel.
	// +kubebuilder:default={}
	// +optional
	Spec NotificationChannelSpec `json:"spec,omitempty"`

	// status is what the operator observed and did.
	// +optional
	Status NotificationChannelStatus `json:"status,omitempty"`
}

// NotificationChannelList is a list of NotificationChannels.
// +kubebuilder:object:root=true
type NotificationChannelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NotificationChannel `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NotificationChannel{}, &NotificationChannelList{})
}

// ShardCount is spec.shards, or its default (1) when unset.
func (s NotificationChannelSpec) ShardCount() int {
	if s.Shards < 1 {
		return 1
	}
	return int(s.Shards)
}
