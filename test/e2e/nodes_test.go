//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/injection"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/hack/localcluster"
	"github.com/heraldhq/herald/relay/shardmap"
)

// relayNodeLabel marks the nodes the node tests' relays may run on: all but the first.
const relayNodeLabel = "e2e.herald.dev/relays"

// nodesChannel creates a 2-shard Durable channel with 2 relays per shard kept off the first
// node (which carries the control plane's address and is never taken down), checks that the
// operator spread each shard's relays over the other two nodes, and returns it Ready with its
// shard map.
func nodesChannel(t *testing.T, ctx context.Context, ns, name string) (*heraldv1.NotificationChannel, *shardmap.Map) {
	t.Helper()
	if len(node.Nodes) < 3 {
		t.Skipf("the cluster has %d nodes; this test takes one down and needs 3 (HERALD_E2E_NODES)", len(node.Nodes))
	}
	ensureNamespace(t, ctx, ns)
	for _, n := range node.Nodes[1:] {
		var k8sNode corev1.Node
		must(t, node.Client.Get(ctx, client.ObjectKey{Name: n.Name}, &k8sNode))
		patch := client.MergeFrom(k8sNode.DeepCopy())
		k8sNode.Labels[relayNodeLabel] = "true"
		must(t, node.Client.Patch(ctx, &k8sNode, patch))
	}
	replicas, maxLen := int32(2), int64(1_000_000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: heraldv1.NotificationChannelSpec{
			Shards: 2, Delivery: heraldv1.DeliveryDurable, DeletionPolicy: heraldv1.DeletionDelete,
			Retention: &heraldv1.Retention{MaxLength: &maxLen},
			// A node selector, not an affinity: the operator spreads relays unless given one.
			Relay: heraldv1.RelaySpec{Replicas: &replicas, NodeSelector: map[string]string{relayNodeLabel: "true"}},
		},
	}
	must(t, node.Client.Create(ctx, ch))
	t.Cleanup(func() { _ = node.Client.Delete(context.Background(), ch) })
	ch, err := localcluster.WaitChannelReady(ctx, node.Client, client.ObjectKeyFromObject(ch), readyTimeout)
	must(t, err)
	awaitCond(t, readyTimeout, "every relay ready", func() bool { return len(relaysByNode(t, ctx, ch, nil)) == 2*int(replicas) })
	// The operator spread each shard's relays over nodes (and zones).
	for shard := range 2 {
		pods := relayPods(t, ctx, ns, name, shard)
		if pods[0].Spec.NodeName == pods[1].Spec.NodeName {
			t.Fatalf("both relays of shard %d run on %s: want them on different nodes", shard, pods[0].Spec.NodeName)
		}
	}
	var cm corev1.ConfigMap
	must(t, node.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.ConfigMapName(name)}, &cm))
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	must(t, err)
	return ch, m
}

// relaysByNode maps the names of the channel's ready relay pods to their nodes, skipping those
// on a node in skip.
func relaysByNode(t *testing.T, ctx context.Context, ch *heraldv1.NotificationChannel, skip map[string]bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	for shard := range int(ch.Spec.Shards) {
		for _, p := range relayPods(t, ctx, ch.Namespace, ch.Name, shard) {
			if !skip[p.Spec.NodeName] {
				out[p.Name] = p.Spec.NodeName
			}
		}
	}
	return out
}

// servingNode is the node of the relay of shard that serves the sidecar's upstream stream.
func servingNode(t *testing.T, ctx context.Context, ch *heraldv1.NotificationChannel, shard int) string {
	t.Helper()
	var at string
	awaitCond(t, 30*time.Second, fmt.Sprintf("a relay of shard %d serving the sidecar", shard), func() bool {
		for _, p := range relayPods(t, ctx, ch.Namespace, ch.Name, shard) {
			if subscribersOf(relayAddr(p)) > 0 {
				at = p.Spec.NodeName
				return true
			}
		}
		return false
	})
	return at
}

// TestANodeLostUnderLoad publishes and subscribes through the sidecar of an app pod on the
// first node while the node holding the relay that serves the sidecar's stream of shard 0 (and
// a relay of every shard) is cut from Redis for 30 s (iptables), and then the one serving it
// after that dies: its kubelet, containerd and containers SIGKILLed and its bridge down, so
// packets to its pods are dropped, not refused. Sidecars must leave the silent relays, the cluster must replace them on
// the surviving node, and the node must rejoin cleanly (its old pods removed, nothing running
// twice). Every subscriber gets every acknowledged message once, in order.
func TestANodeLostUnderLoad(t *testing.T) {
	const ns, name = "e2e-node-loss", "dispatch"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, m := nodesChannel(t, ctx, ns, name)
	_, base := startAppOn(t, ctx, ns, "app", name, localcluster.NodeName)
	l := startLoad(t, ctx, m, base, 100)
	victim := node.Node(servingNode(t, ctx, ch, 0))

	// 1. The node loses Redis, and only Redis, for 30 s: its relays turn unready, the sidecar's
	// streams move to the other node's, and they come back by themselves.
	heal := partitionFromRedis(t, victim.PodCIDR)
	defer heal()
	cut := time.Now()
	others := map[string]bool{victim.Name: true}
	awaitCond(t, 30*time.Second, "every relay on "+victim.Name+" not ready", func() bool {
		return len(relaysByNode(t, ctx, ch, nil)) == len(relaysByNode(t, ctx, ch, others))
	})
	t.Logf("node %s cut from Redis: its relays not ready after %.1fs", victim.Name, time.Since(cut).Seconds())
	awaitCond(t, time.Until(cut.Add(30*time.Second)), "a message of every shard sent during the partition delivered before it ends", func() bool {
		return !l.deliveredAfter(0, cut.Add(time.Second)).IsZero() && !l.deliveredAfter(1, cut.Add(time.Second)).IsZero()
	})
	for shard := range 2 {
		t.Logf("shard %d: first message sent during the partition delivered %.1fs after the cut", shard, l.deliveredAfter(shard, cut.Add(time.Second)).Sub(cut).Seconds())
	}
	time.Sleep(time.Until(cut.Add(30 * time.Second))) // the partition lasts 30 s, whatever happens meanwhile
	heal()
	awaitCond(t, readyTimeout, "the relays on "+victim.Name+" ready again by themselves", func() bool {
		return len(relaysByNode(t, ctx, ch, nil)) == 4
	})
	t.Logf("node %s healed; %d acknowledged so far", victim.Name, l.pl.count())

	// 2. The node serving the sidecar's stream of shard 0 now (the other one, after the
	// partition) dies: the sidecar must notice the silence (its idle timeout) and resume on the
	// other relay; publishes must fail over.
	victim = node.Node(servingNode(t, ctx, ch, 0))
	others = map[string]bool{victim.Name: true}
	var lost []corev1.Pod
	for shard := range 2 {
		for _, p := range relayPods(t, ctx, ns, name, shard) {
			if p.Spec.NodeName == victim.Name {
				lost = append(lost, p)
			}
		}
	}
	killed := time.Now()
	must(t, victim.Kill())
	restarted := false
	t.Cleanup(func() { // the tests after this one need every node
		if !restarted {
			_ = victim.Restart(context.Background())
		}
	})
	t.Logf("node %s, serving the sidecar's stream of shard 0, killed; it held %d relays", victim.Name, len(lost))
	// Within the sidecar's idle timeout (45 s, three heartbeats) and some slack.
	awaitCond(t, 60*time.Second, "a message of every shard sent after the node died delivered within a minute", func() bool {
		return !l.deliveredAfter(0, killed).IsZero() && !l.deliveredAfter(1, killed).IsZero()
	})
	for shard := range 2 {
		t.Logf("shard %d: first message sent after the node died delivered %.1fs after", shard, l.deliveredAfter(shard, killed).Sub(killed).Seconds())
	}
	var notReady time.Time
	awaitCond(t, 3*time.Minute, "the lost relays replaced on the surviving nodes", func() bool {
		var n corev1.Node
		if notReady.IsZero() && node.Client.Get(ctx, client.ObjectKey{Name: victim.Name}, &n) == nil && !localcluster.NodeReady(&n) {
			notReady = time.Now()
		}
		return len(relaysByNode(t, ctx, ch, others)) == 4
	})
	t.Logf("node %s NotReady %.1fs after it died; its relays replaced and ready %.1fs after", victim.Name, notReady.Sub(killed).Seconds(), time.Since(killed).Seconds())

	// 3. The node comes back: its kubelet finds pods the cluster already replaced, and must
	// remove them, not run them again.
	rejoin := time.Now()
	must(t, victim.Restart(ctx))
	restarted = true
	awaitCond(t, 2*time.Minute, "the lost relay pods gone from the API", func() bool {
		for _, p := range lost {
			var got corev1.Pod
			if node.Client.Get(ctx, client.ObjectKeyFromObject(&p), &got) == nil {
				return false
			}
		}
		return true
	})
	t.Logf("node %s Ready again and its old pods removed %.1fs after it restarted", victim.Name, time.Since(rejoin).Seconds())
	for shard := range 2 {
		if pods := relayPodsAll(t, ctx, ch, shard); len(pods) != 2 {
			t.Errorf("shard %d has %d relay pods after the node rejoined, want 2: %s", shard, len(pods), strings.Join(pods, ", "))
		}
	}
	checkRunsOnlyItsPods(t, ctx, victim)
	// Publishes never waited for the dead relays: the sidecar left them after a connect timeout.
	var slowest time.Duration
	for _, a := range l.pl.snapshot() {
		if a.sent.After(killed) {
			slowest = max(slowest, a.at.Sub(a.sent))
		}
	}
	t.Logf("the slowest publish sent after the node died was acknowledged %.1fs after its first attempt", slowest.Seconds())
	if slowest > 10*time.Second {
		t.Errorf("a publish sent after the node died took %s to be acknowledged: the sidecar waited for a dead relay", slowest)
	}
	l.finish()
}

// relayPodsAll names every pod of a shard's relays, ready or not, terminating or not.
func relayPodsAll(t *testing.T, ctx context.Context, ch *heraldv1.NotificationChannel, shard int) []string {
	t.Helper()
	var pods corev1.PodList
	must(t, node.Client.List(ctx, &pods, client.InNamespace(ch.Namespace), client.MatchingLabels{workloads.LabelChannel: ch.Name, workloads.LabelComponent: "relay", workloads.LabelShard: fmt.Sprint(shard)}))
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name+" on "+p.Spec.NodeName)
	}
	return names
}

// checkRunsOnlyItsPods asserts that a node's containerd runs no more containers than the pods
// the API server assigns to it have (a sandbox and each container per pod): a pod the cluster
// replaced while the node was away must not run there too.
func checkRunsOnlyItsPods(t *testing.T, ctx context.Context, n *localcluster.Node) {
	t.Helper()
	var pods corev1.PodList
	must(t, node.Client.List(ctx, &pods, client.MatchingFields{"spec.nodeName": n.Name}))
	allowed := 0
	for _, p := range pods.Items {
		allowed += 1 + len(p.Spec.InitContainers) + len(p.Spec.Containers)
	}
	var running int
	awaitCond(t, time.Minute, "node "+n.Name+" running only the containers of its pods", func() bool {
		tasks, err := n.RunningTasks(ctx)
		running = tasks
		return err == nil && running <= allowed
	})
	t.Logf("node %s runs %d containers (sandboxes included) for the %d pods it is assigned", n.Name, running, len(pods.Items))
}

// TestADrainUnderLoad drains, with `kubectl drain`, a node holding a relay of every shard and
// one of two managers, while an app on the first node publishes and subscribes through its
// sidecar and opted-in pods are created: the PodDisruptionBudgets let the drain through one
// pod at a time, the webhook keeps injecting, and a second drain that would leave a shard with
// no relay is refused. Nothing is lost or repeated.
func TestADrainUnderLoad(t *testing.T) {
	const ns, name = "e2e-drain", "courier"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, m := nodesChannel(t, ctx, ns, name)
	must(t, node.InstallHerald(ctx, helmBin, heraldChart, "manager.replicas=2"))
	defer func() {
		if err := node.InstallHerald(context.Background(), helmBin, heraldChart); err != nil {
			t.Errorf("back to one manager: %v", err)
		}
	}()
	managers, err := node.WaitPodsReady(ctx, localcluster.HeraldNamespace, "app.kubernetes.io/component=manager", 2, readyTimeout)
	must(t, err)
	var victim string
	for _, p := range managers {
		if p.Spec.NodeName != localcluster.NodeName {
			victim = p.Spec.NodeName
		}
	}
	if victim == "" || managers[0].Spec.NodeName == managers[1].Spec.NodeName {
		t.Fatalf("the managers run on %s and %s: want them on different nodes, one not the first", managers[0].Spec.NodeName, managers[1].Spec.NodeName)
	}
	other := ""
	for _, n := range relaysByNode(t, ctx, ch, map[string]bool{victim: true}) {
		other = n
	}
	_, base := startAppOn(t, ctx, ns, "app", name, localcluster.NodeName)
	l := startLoad(t, ctx, m, base, 100)
	defer uncordon(t, victim, other)

	// 1. Drain the node, creating an opted-in pod every half second meanwhile.
	drained := make(chan error, 1)
	began := time.Now()
	go func() { drained <- drain(ctx, victim, 4*time.Minute) }()
	created, refused := 0, []string{}
	for done := false; !done; {
		select {
		case err := <-drained:
			if err != nil {
				t.Fatalf("kubectl drain %s: %v", victim, err)
			}
			done = true
		case <-time.After(500 * time.Millisecond):
			pod := labelledPod(ns, fmt.Sprintf("during-drain-%d", created+len(refused)), name)
			if err := node.Client.Create(ctx, pod); err != nil {
				refused = append(refused, err.Error())
			} else {
				t.Cleanup(func() { _ = node.Client.Delete(context.Background(), pod) })
				if !injected(pod) {
					refused = append(refused, pod.Name+" created without the sidecar")
				} else {
					created++
				}
			}
		}
	}
	t.Logf("drained %s in %.1fs; %d opted-in pods created with the sidecar meanwhile, %d refused", victim, time.Since(began).Seconds(), created, len(refused))
	if len(refused) > 0 || created == 0 {
		t.Errorf("the webhook failed during the drain: %d created, refused: %s", created, strings.Join(refused, "; "))
	}
	awaitCond(t, readyTimeout, "every relay ready on the node left", func() bool { return len(relaysByNode(t, ctx, ch, map[string]bool{victim: true})) == 4 })

	// 2. Draining the other node now would leave shards with no relay (nowhere else to run):
	// the PodDisruptionBudgets refuse it, and each shard keeps a ready relay.
	err = drain(ctx, other, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "disruption budget") {
		t.Errorf("draining %s too: %v; want it refused by the PodDisruptionBudgets", other, err)
	} else {
		t.Logf("draining %s too was refused by the PodDisruptionBudgets (kubectl drain gave up after 30s)", other)
	}
	for shard := range 2 {
		if n := len(relayPods(t, ctx, ns, name, shard)); n < 1 {
			t.Errorf("shard %d has %d ready relays after the refused drain", shard, n)
		}
	}
	uncordon(t, victim, other)
	awaitCond(t, readyTimeout, "every relay ready again", func() bool { return len(relaysByNode(t, ctx, ch, nil)) == 4 })
	l.finish()
}

// drain runs `kubectl drain` on a node, as a platform team does before an upgrade.
func drain(ctx context.Context, nodeName string, timeout time.Duration) error {
	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", node.Kubeconfig, "drain", nodeName,
		"--ignore-daemonsets", "--delete-emptydir-data", "--timeout", timeout.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func uncordon(t *testing.T, nodes ...string) {
	for _, n := range nodes {
		if out, err := exec.Command("kubectl", "--kubeconfig", node.Kubeconfig, "uncordon", n).CombinedOutput(); err != nil {
			t.Errorf("kubectl uncordon %s: %v: %s", n, err, out)
		}
	}
}

// labelledPod is an opted-in pod that never runs (it asks for a node that does not exist):
// only its admission matters.
func labelledPod(ns, name, channel string) *corev1.Pod {
	d := appDeployment(ns, "app", channel, true)
	spec := d.Spec.Template.Spec
	spec.NodeSelector = map[string]string{corev1.LabelHostname: "no-such-node"}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{heraldv1.InjectLabel: "true"},
		Annotations: d.Spec.Template.Annotations}, Spec: spec}
}

// injected reports whether the webhook added the sidecar.
func injected(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == injection.ContainerName {
			return true
		}
	}
	return false
}
