//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/hack/localcluster"
	"github.com/heraldhq/herald/relay/shardmap"
)

// TestRelayFaults keeps a 2-shard Durable channel under load through an app pod's sidecar while
// the node does to its relays what a cluster does: a drain's evictions (the PodDisruptionBudget
// keeps one relay per shard), a partition between one relay pod and Redis (iptables drops its
// packets for 30 s: it turns unready, its sidecar streams move to the other replica, and it
// comes back by itself), and a new Redis password (the Secret edited: the relays roll one at a
// time). Every subscriber must get every acknowledged message exactly once, in order.
func TestRelayFaults(t *testing.T) {
	const (
		ns, name = "e2e-faults", "alerts"
		shards   = 2
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k8s := node.Client
	ensureNamespace(t, ctx, ns)
	replicas, maxLen := int32(2), int64(1_000_000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: heraldv1.NotificationChannelSpec{
			Shards: shards, Delivery: heraldv1.DeliveryDurable,
			Retention: &heraldv1.Retention{MaxLength: &maxLen}, Relay: heraldv1.RelaySpec{Replicas: &replicas},
			DeletionPolicy: heraldv1.DeletionDelete,
		},
	}
	must(t, k8s.Create(ctx, ch))
	defer func() { _ = k8s.Delete(context.Background(), ch) }()
	_, err := localcluster.WaitChannelReady(ctx, k8s, client.ObjectKeyFromObject(ch), readyTimeout)
	must(t, err)
	allReady := func() bool {
		for i := range shards {
			if len(relayPods(t, ctx, ns, name, i)) != int(replicas) {
				return false
			}
		}
		return true
	}
	awaitCond(t, readyTimeout, "every relay ready", allReady)
	var cm corev1.ConfigMap
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.ConfigMapName(name)}, &cm))
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	must(t, err)
	_, base := startApp(t, ctx, ns, "app", name)

	l := startLoad(t, ctx, m, base, 150)
	pl := l.pl

	// 1. A drain evicts relay pods: the first of a shard goes, the second is refused while the
	// first's replacement is not ready (PodDisruptionBudget minAvailable 1).
	pods := relayPods(t, ctx, ns, name, 0)
	if err := evict(ctx, pods[0]); err != nil {
		t.Fatalf("evicting relay pod %s: %v", pods[0].Name, err)
	}
	if err := evict(ctx, pods[1]); !apierrors.IsTooManyRequests(err) {
		t.Errorf("evicting the second relay pod of shard 0 at once: %v, want 429 Too Many Requests (the PodDisruptionBudget)", err)
	}
	awaitCond(t, readyTimeout, "shard 0's evicted relay replaced", func() bool {
		ready := relayPods(t, ctx, ns, name, 0)
		return len(ready) == int(replicas) && ready[0].Name != pods[0].Name && ready[1].Name != pods[0].Name
	})
	t.Logf("evicted %s; the second eviction was refused; %d acknowledged so far", pods[0].Name, pl.count())

	// 2. A partition: the relay pod of shard 1 that serves the sidecar's streams loses Redis for
	// 30 s.
	var victim corev1.Pod
	most := -1.0
	for _, p := range relayPods(t, ctx, ns, name, 1) {
		if n := subscribersOf(relayAddr(p)); n > most {
			victim, most = p, n
		}
	}
	if most < 1 {
		t.Fatalf("no relay pod of shard 1 serves a stream: the partition would cut none")
	}
	heal := partitionFromRedis(t, victim.Status.PodIP)
	defer heal()
	cut := time.Now()
	awaitCond(t, 30*time.Second, "the partitioned relay "+victim.Name+" not ready", func() bool {
		return !podReady(ctx, victim)
	})
	t.Logf("relay pod %s (it served %.0f streams) cut from Redis: not ready after %.1fs", victim.Name, most, time.Since(cut).Seconds())
	// Shard 1 keeps delivering while the partition lasts: the sidecar moved its stream to the
	// other relay.
	awaitCond(t, time.Until(cut.Add(30*time.Second)), "a shard-1 message sent during the partition delivered before it ends", func() bool {
		return !l.deliveredAfter(1, cut.Add(time.Second)).IsZero()
	})
	t.Logf("shard 1 delivered through the other relay %.1fs after the cut", time.Since(cut).Seconds())
	time.Sleep(time.Until(cut.Add(30 * time.Second))) // the partition lasts 30 s, whatever happens meanwhile
	heal()
	healedAt := time.Now()
	awaitCond(t, 60*time.Second, "the partitioned relay ready again by itself", func() bool { return podReady(ctx, victim) })
	t.Logf("relay pod %s ready again %.1fs after the partition ended; %d acknowledged so far", victim.Name, time.Since(healedAt).Seconds(), pl.count())

	// 3. A new password in the channel's credentials Secret rolls every relay, one at a time.
	before := map[string]bool{}
	for i := range shards {
		for _, p := range relayPods(t, ctx, ns, name, i) {
			before[p.Name] = true
		}
	}
	var secret corev1.Secret
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.CredentialsSecretName(name)}, &secret))
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	secret.Data[workloads.SecretPasswordKey] = []byte(hex.EncodeToString(pw))
	must(t, k8s.Update(ctx, &secret))
	rolled := time.Now()
	minReady := map[int]int{0: int(replicas), 1: int(replicas)}
	awaitCond(t, 3*time.Minute, "every relay replaced after the password change", func() bool {
		done := true
		for i := range shards {
			ready := relayPods(t, ctx, ns, name, i)
			minReady[i] = min(minReady[i], len(ready))
			if len(ready) != int(replicas) {
				done = false
			}
			for _, p := range ready {
				done = done && !before[p.Name]
			}
		}
		return done
	})
	t.Logf("relays rolled %.1fs after the password change; fewest ready relays per shard meanwhile: %v", time.Since(rolled).Seconds(), minReady)
	for i, n := range minReady {
		if n < 1 {
			t.Errorf("shard %d had no ready relay during the roll", i)
		}
	}

	l.finish()
}

// TestInjectionNeedsTheManager: with the manager scaled to 0 nothing serves the injection
// webhook, and its failurePolicy Fail refuses an opted-in pod with a message that says why;
// a pod without the label never reaches the webhook and is created.
func TestInjectionNeedsTheManager(t *testing.T) {
	ctx := context.Background()
	k8s := node.Client
	const ns = "e2e-webhook"
	ensureNamespace(t, ctx, ns)
	scale := func(n int32) {
		var d appsv1.Deployment
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: localcluster.HeraldNamespace, Name: "herald-manager"}, &d))
		d.Spec.Replicas = &n
		must(t, k8s.Update(ctx, &d))
	}
	scale(0)
	defer func() {
		scale(1)
		if _, err := node.WaitPodsReady(ctx, localcluster.HeraldNamespace, "app.kubernetes.io/name=herald", 1, readyTimeout); err != nil {
			t.Errorf("the manager did not come back: %v", err)
		}
	}()
	awaitCond(t, readyTimeout, "no manager pod left", func() bool {
		var pods corev1.PodList
		_ = k8s.List(ctx, &pods, client.InNamespace(localcluster.HeraldNamespace))
		return len(pods.Items) == 0
	})
	pod := func(name string, inject bool) *corev1.Pod {
		d := appDeployment(ns, name, "orders", inject)
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: d.Spec.Template.Labels, Annotations: d.Spec.Template.Annotations},
			Spec: d.Spec.Template.Spec}
	}
	defer func() { // a bare pod would stop a later kubectl drain of its node
		for _, name := range []string{"labelled", "plain"} {
			_ = k8s.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
		}
	}()
	must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "labelled"}}))
	must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"}}))
	err := k8s.Create(ctx, pod("labelled", true))
	if err == nil || !strings.Contains(err.Error(), "sidecar") && !strings.Contains(err.Error(), "herald") {
		t.Errorf("an opted-in pod with no manager running: %v; want a refusal that names the Herald webhook", err)
	} else {
		t.Logf("refused as it should be: %v", err)
	}
	if err := k8s.Create(ctx, pod("plain", false)); err != nil {
		t.Errorf("a pod without the opt-in label, with no manager running: %v; want it created", err)
	}
}

// partitionFromRedis drops every packet from source (an address or CIDR) to the Redis
// Cluster's ports until the returned heal is called (once or more).
func partitionFromRedis(t *testing.T, source string) (heal func()) {
	t.Helper()
	rule := []string{"INPUT", "-s", source, "-d", localcluster.NodeIP, "-p", "tcp", "--dport",
		fmt.Sprintf("%d:%d", node.Redis.Base, node.Redis.Base+5), "-j", "DROP", "-m", "comment", "--comment", "herald-e2e-partition"}
	if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if out, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil {
				t.Errorf("removing the partition: %v: %s", err, out)
			}
		})
	}
}

// evict asks for pod's eviction, as `kubectl drain` does.
func evict(ctx context.Context, pod corev1.Pod) error {
	return node.Client.SubResource("eviction").Create(ctx, &pod, &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name},
	})
}

// podReady reads the pod's Ready condition now (false when it is gone).
func podReady(ctx context.Context, pod corev1.Pod) bool {
	var p corev1.Pod
	if err := node.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &p); err != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
