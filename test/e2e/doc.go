// Package e2e tests the whole system on the local cluster of real nodes (hack/localcluster,
// the cluster of `make dev`; three nodes, or $HERALD_E2E_NODES): its own Redis Cluster on the
// first node's address (ports 7901-7906, or $HERALD_E2E_REDIS_BASE_PORT), Herald released by hack/release.sh into the node's registry and
// installed from it (helm install oci://..., the image pulled by its digest), and apps in pods
// with the injected sidecar. An app pod's container
// (test/e2e/forwarder) forwards <pod IP>:8080 to its sidecar, so the test publishes and
// subscribes through the real sidecar, from outside the pod, as the app would.
//
// The tests carry the build tag e2e and run, as root, with `make test-e2e` (CI runs it after
// `make test`); it builds the images and the node's components first.
//
// TestDurableChannel applies a 3-shard Durable channel (Ready, shards on distinct masters),
// starts two app Deployments and checks what injection promises (exactly one native sidecar,
// ready before the app starts), that shard relays refuse a request without a token (401), that
// a pod of a namespace spec.access lists publishes (202) and one of a namespace it does not is
// refused (403). Then it publishes 10,000 keyed messages through one sidecar while 50
// subscribers (whole-channel and per-key, SSE and WebSocket) listen through both. During the
// load it kills the Redis master of shard 0 (SIGKILL), deletes the relay pod of shard 1 that
// serves the most streams (its ReplicaSet replaces it) and cuts 10 subscribers' connections
// (they resume with Last-Event-ID). Every subscriber must get every acknowledged message
// exactly once and in per-shard order; entries Redis itself lost must be reported as rollback
// gaps, and are counted. Then it deletes the channel (deletionPolicy Delete) and checks that
// its keys and ACL users are gone from every node and the garbage collector removed its relays.
//
// TestRelayFaults keeps a 2-shard channel under load while a drain evicts relay pods (the
// PodDisruptionBudget refuses the second eviction of a shard), iptables cuts one relay pod from
// Redis for 30 s (it turns unready and comes back by itself) and the channel's Redis password
// changes (the relays roll without a shard losing its last ready relay), and counts every
// message. TestInjectionNeedsTheManager scales the manager to 0: an opted-in pod is refused
// with the webhook's error, a pod without the label is created.
//
// TestHeraldRunsTheReleaseItPulled checks that release: its image index holds linux/amd64 and
// linux/arm64, the manager, a channel's relays and an injected sidecar run the image by the
// digest the chart pins, the node pulled it (its image store holds that reference and no image
// imported by hand), and the channel delivers a message.
//
// TestUpgradeAndRollbackUnderLoad builds the previous release from its commit (a git worktree;
// its image pushed to the node's registry), installs it over the suite's release, and runs a
// 2-shard Durable channel with two apps behind Services under load (one publisher, eight
// subscribers resuming with Last-Event-ID). It upgrades to the suite's release (both versions'
// publish functions must then be on every Redis node), re-creates one app's pod (a new sidecar
// beside an old one), rolls back with helm rollback and re-creates the other: every publish is
// acknowledged (retried with its Idempotency-Key while pods roll), every subscriber gets every
// message once, in order, with no gap event.
//
// TestTheForwardSurvivesCutsAndANewPod serves a local port with an app pod's sidecar the way
// make dev serves 127.0.0.1:7070 (localcluster.Forward, from inside the pod's network
// namespace): five clients hang up in the middle of a stream, each followed by a publish that
// must succeed, then the pod is replaced and the forward must reach the new one.
//
// TestRedisOverMutualTLS starts a second Redis Cluster on the node's address that speaks only
// TLS and wants client certificates, and upgrades the release to it (the chart's redis.tls
// values). A channel on the default Redis and one with spec.redis.tls Secrets of its own must
// each become Ready and deliver a message through a shard relay pod; the release is upgraded
// back afterwards.
//
// TestEdgeServesTheSampleTracker runs a 3-shard channel with an edge of two pods and the sample
// app serving its order tracker (signing users' tokens with the edge's key from a Secret).
// Forged, expired and foreign-audience tokens are refused at the edge's Service with 401, a key
// the token does not grant with 403. Headless Chromium loads the page from the app's Service; it
// follows three keys through the edge's Service, opening with the last two events of each; the
// shard relays send the edges only those keys' events; the edge pod holding the page's stream is
// deleted, and the page resumes through the other one with every event of its keys once and in
// order.
//
// TestANodeLostUnderLoad and TestADrainUnderLoad run a 2-shard Durable channel whose relays
// are kept off the first node (it carries the control plane's address), so each shard has a
// relay on each other node, checked spread, with an app on the first node publishing and
// subscribing through its sidecar. The first cuts the node serving the sidecar's stream from
// Redis for 30 s (iptables: its relays turn unready, every shard keeps delivering, they come
// back), then kills the node serving it after that (kubelet, containerd, shims and containers
// SIGKILLed, its bridge down: packets to it dropped): the sidecar must leave the silent relays
// and deliver again, the node turns NotReady and its relays are replaced on the other node;
// then the node restarts on its state, its old pods are removed and it runs no container of
// theirs. The second scales the manager to two replicas (spread over nodes) and runs `kubectl
// drain` on the node of one manager and a relay of every shard while opted-in pods are created
// every half second (each must be created with the sidecar: the webhook stays available), then
// a drain of the other node, which would leave shards with no relay, must be refused by the
// PodDisruptionBudgets. Both count every message: none lost, none twice, none out of order.
//
// On failure the test keeps its directory (the node's logs, pod logs under
// node/kubelet/pod-logs, Redis logs) and prints its path.
package e2e
