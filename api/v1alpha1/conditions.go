package v1alpha1

// Condition types. Each says what True means.
const (
	// ConditionReady is True when Redis is configured for the channel and every shard has at
	// least one available relay: publishing and subscribing work. Replicas that lag
	// (NodesLagging) do not make it False: the masters serve the channel.
	ConditionReady = "Ready"
	// ConditionRedisConfigured is True when every shard is placed and its stream, retention and
	// ACL user exist on the Redis nodes that need them: every node of the cluster, replicas
	// included, for the user (a failover may promote any replica).
	ConditionRedisConfigured = "RedisConfigured"
	// ConditionRelaysAvailable is True when every shard's relay Deployment has an available replica.
	ConditionRelaysAvailable = "RelaysAvailable"
	// ConditionDegraded is True when the channel works but with less than it asked for: fewer
	// masters than shards, Redis nodes that lag, or fewer ready relay replicas than requested.
	ConditionDegraded = "Degraded"
	// ConditionEdgeAvailable is True when the edge Deployment (spec.edge) has an available pod
	// and its route, if one is asked for, exists. Absent for a channel without spec.edge.
	ConditionEdgeAvailable = "EdgeAvailable"
	// ConditionPaused is True while the channel carries PausedAnnotation: the operator leaves its
	// Redis configuration and relays as they are (deletion still proceeds).
	ConditionPaused = "Paused"
)

// Condition reasons: CamelCase, one meaning each. Messages carry the details for people.
const (
	// ReasonReconciled: everything the spec asks for exists and is healthy.
	ReasonReconciled = "Reconciled"
	// ReasonProvisioning: the operator accepted the channel and is still creating what it needs.
	ReasonProvisioning = "Provisioning"
	// ReasonRetainedByAnotherNamespace: Redis holds streams a deleted channel of this name
	// retained, written by a namespace of this name that was deleted since (another UID). The
	// operator neither takes them up nor gives the channel's user access to them until the
	// platform team deletes them or lets channels adopt them (--adopt-retained-streams).
	ReasonRetainedByAnotherNamespace = "RetainedByAnotherNamespace"
	// ReasonRedisUnreachable: the operator could not connect to or authenticate with Redis.
	ReasonRedisUnreachable = "RedisUnreachable"
	// ReasonRedisCommandFailed: Redis answered but refused a command the operator needs (for
	// example, the operator's user may not run ACL SETUSER).
	ReasonRedisCommandFailed = "RedisCommandFailed"
	// ReasonPlacementFailed: no hash tag could be placed for a shard (cluster slots not covered).
	ReasonPlacementFailed = "PlacementFailed"
	// ReasonAclApplied: streams and per-channel ACL users are in place on every node.
	ReasonAclApplied = "AclApplied"
	// ReasonNodesLagging: some Redis nodes do not hold the channel's ACL user or the publish
	// function yet (a replica still syncing or not answering, a node the cluster marked failed);
	// the message names them. The operator retries them within seconds, and at once when a node
	// answers again or restarts. Until then a failover to such a node would stop the shard.
	ReasonNodesLagging = "NodesLagging"
	// ReasonRelaysUnavailable: at least one shard has no available relay replica.
	ReasonRelaysUnavailable = "RelaysUnavailable"
	// ReasonWorkloadsFailed: the operator could not create or update one of the channel's
	// Kubernetes objects (the message says which and why, e.g. Service IPs exhausted).
	ReasonWorkloadsFailed = "WorkloadsFailed"
	// ReasonEdgeAvailable: the edge has an available pod, and its route exists.
	ReasonEdgeAvailable = "EdgeAvailable"
	// ReasonEdgeUnavailable: no edge pod is available (the message says what the Deployment reports).
	ReasonEdgeUnavailable = "EdgeUnavailable"
	// ReasonGatewayAPIMissing: spec.edge.httpRoute asks for an HTTPRoute, and the cluster does not
	// serve gateway.networking.k8s.io/v1 HTTPRoutes. The edge runs behind its Service.
	ReasonGatewayAPIMissing = "GatewayAPIMissing"
	// ReasonRelaysAvailable: every shard has an available relay replica.
	ReasonRelaysAvailable = "RelaysAvailable"
	// ReasonInvalidSpec: the spec passed the API server's checks but cannot be honoured (for
	// example a credentials Secret that does not exist). Fix the spec; the operator does not retry.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonNotAllowed: the spec asks for something the operator's policy does not allow (a
	// spec.redis address, relay image or priority class outside the platform team's allow-lists,
	// flags --allowed-*). The message names the field and the flag. Nothing is changed in Redis
	// or Kubernetes until the spec or the policy changes.
	ReasonNotAllowed = "NotAllowed"
	// ReasonPausedByAnnotation: the channel carries PausedAnnotation="true".
	ReasonPausedByAnnotation = "PausedByAnnotation"
	// ReasonNotPaused: the operator reconciles the channel.
	ReasonNotPaused = "NotPaused"
	// ReasonAsExpected: nothing is degraded.
	ReasonAsExpected = "AsExpected"
	// ReasonFewerMastersThanShards: shards share masters because the cluster has too few.
	ReasonFewerMastersThanShards = "FewerMastersThanShards"
	// ReasonMemoryBelowMessageSize: spec.relay.resources sets a memory limit below what relays
	// need for messages of spec.maxMessageBytes (the message says how much). The operator's
	// default limit grows by itself; a limit the channel sets is kept.
	ReasonMemoryBelowMessageSize = "MemoryBelowMessageSize"
	// ReasonReplicasUnavailable: some shard runs with fewer ready relays than requested.
	ReasonReplicasUnavailable = "ReplicasUnavailable"
	// ReasonDeleting: the channel is being deleted and its deletionPolicy is being carried out.
	ReasonDeleting = "Deleting"
	// ReasonCleanupFailed: deleting Redis data failed repeatedly; see the message and the
	// SkipCleanupAnnotation to release the channel without cleanup.
	ReasonCleanupFailed = "CleanupFailed"
)

const (
	// Finalizer holds a channel until its deletionPolicy has been carried out in Redis.
	Finalizer = "notifications.herald.dev/cleanup"

	// SkipCleanupAnnotation, set to "true" on a channel being deleted, keeps its Redis data
	// whatever its deletionPolicy and, once cleanup has failed for the operator's cleanup
	// timeout, releases the finalizer without it: the escape hatch when Redis is gone for good.
	// It never spares the channel's Redis user: wherever Redis answers, the user is disabled.
	SkipCleanupAnnotation = "notifications.herald.dev/skip-cleanup"

	// PausedAnnotation, set to "true" on a channel, stops the operator from changing anything for
	// it (Redis, relays) until it is removed, e.g. while investigating by hand. Deletion still
	// proceeds. The Paused condition shows it.
	PausedAnnotation = "notifications.herald.dev/paused"

	// SidecarLogLevelAnnotation sets the injected sidecar's log level (debug, info, warn, error).
	SidecarLogLevelAnnotation = "notifications.herald.dev/sidecar-log-level"

	// SidecarWSOriginPatternsAnnotation lists, comma-separated, the Origin hosts the injected
	// sidecar accepts WebSockets from besides its own Host (--ws-origin-patterns): needed when a
	// reverse proxy in the pod forwards pages' WebSockets to it under another Host.
	SidecarWSOriginPatternsAnnotation = "notifications.herald.dev/sidecar-ws-origin-patterns"

	// InjectLabel opts a pod in to sidecar injection.
	InjectLabel = "notifications.herald.dev/inject"

	// ChannelsAnnotation lists, comma-separated, the channels an injected pod may use.
	ChannelsAnnotation = "notifications.herald.dev/channels"
)
