package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/internal/testing/rediscluster"
	"github.com/heraldhq/herald/relay/shardmap"
)

// create makes a channel and returns its key.
func create(t *testing.T, ch *heraldv1.NotificationChannel) client.ObjectKey {
	t.Helper()
	if err := k8s.Create(context.Background(), ch); err != nil {
		t.Fatalf("creating channel: %v", err)
	}
	return client.ObjectKeyFromObject(ch)
}

// waitFor waits until the channel's condition has the status (and reason, if given).
func waitFor(t *testing.T, key client.ObjectKey, typ string, status metav1.ConditionStatus, reason string) *heraldv1.NotificationChannel {
	t.Helper()
	var ch heraldv1.NotificationChannel
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(context.Background(), key, &ch); err != nil {
			return err
		}
		c := meta.FindStatusCondition(ch.Status.Conditions, typ)
		if c == nil || c.Status != status || (reason != "" && c.Reason != reason) || c.ObservedGeneration != ch.Generation {
			return fmt.Errorf("%s is %+v, want %s/%s", typ, c, status, reason)
		}
		return nil
	})
	return &ch
}

// markRelaysAvailable plays the kubelet and the Deployment controller, which envtest lacks.
func markRelaysAvailable(t *testing.T, ch *heraldv1.NotificationChannel) {
	t.Helper()
	ctx := context.Background()
	for i := range ch.Spec.ShardCount() {
		eventually(t, 20*time.Second, func() error {
			var d appsv1.Deployment
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.ShardDeploymentName(ch.Name, i)}, &d); err != nil {
				return err
			}
			n := *d.Spec.Replicas
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
			return k8s.Status().Update(ctx, &d)
		})
	}
}

func clusterNodes(t *testing.T) (masters, all []*redis.Client) {
	t.Helper()
	ctx := context.Background()
	shards, err := redis.NewClient(&redis.Options{Addr: redisSeeds()[0]}).ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shards {
		for _, n := range s.Nodes {
			c := redis.NewClient(&redis.Options{Addr: n.IP + ":" + strconv.FormatInt(n.Port, 10)})
			t.Cleanup(func() { c.Close() })
			all = append(all, c)
			if n.Role == "master" {
				masters = append(masters, c)
			}
		}
	}
	return masters, all
}

func hasUser(ctx context.Context, c *redis.Client, name string) bool {
	return c.Do(ctx, "ACL", "GETUSER", name).Err() == nil
}

// relayPassword is the relay user's password from the channel's credentials Secret.
func relayPassword(t *testing.T, ch *heraldv1.NotificationChannel) string {
	t.Helper()
	var sec corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.CredentialsSecretName(ch.Name)}, &sec); err != nil {
		t.Fatal(err)
	}
	return string(sec.Data[workloads.SecretPasswordKey])
}

// canLogIn says whether user logs in to node n with password.
func canLogIn(n *redis.Client, user, password string) bool {
	c := redis.NewClient(&redis.Options{Addr: n.Options().Addr, Username: user, Password: password, MaxRetries: -1})
	defer c.Close()
	return c.Ping(context.Background()).Err() == nil
}

func channelKeys(t *testing.T, masters []*redis.Client, ch *heraldv1.NotificationChannel) []string {
	t.Helper()
	var keys []string
	for _, m := range masters {
		k, err := m.Keys(context.Background(), shardmap.KeyPattern(ch.Namespace, ch.Name)).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k...)
	}
	return keys
}

func TestShardsAreSpreadOverMastersAndOwnTheirWorkloads(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	key := create(t, channel(ns, withShards(3)))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, heraldv1.ReasonAclApplied)

	// Placement: three tags on three distinct masters, as Redis itself computes slots and owners.
	seed := redis.NewClient(&redis.Options{Addr: redisSeeds()[0]})
	defer seed.Close()
	nodes := map[string]bool{}
	for _, s := range ch.Status.Shards {
		slot, err := seed.ClusterKeySlot(ctx, s.Stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		if lslot, _ := seed.ClusterKeySlot(ctx, s.LiveChannel).Result(); slot != int64(s.Slot) || lslot != slot {
			t.Fatalf("shard %d: status slot %d, Redis says stream %d and live channel %d", s.Index, s.Slot, slot, lslot)
		}
		nodes[s.Node] = true
	}
	if len(ch.Status.Shards) != 3 || len(nodes) != 3 {
		t.Fatalf("3 shards must sit on 3 distinct masters: %+v", ch.Status.Shards)
	}

	// Workloads: every object exists, owned by the channel.
	owned := func(o client.Object) {
		t.Helper()
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].UID != ch.UID || refs[0].Controller == nil || !*refs[0].Controller {
			t.Fatalf("%T %s is not controlled by the channel: %+v", o, o.GetName(), refs)
		}
	}
	sel := client.MatchingLabels{workloads.LabelChannel: ch.Name}
	var deps appsv1.DeploymentList
	var svcs corev1.ServiceList
	var pdbs policyv1.PodDisruptionBudgetList
	var nps networkingv1.NetworkPolicyList
	for _, l := range []client.ObjectList{&deps, &svcs, &pdbs, &nps} {
		if err := k8s.List(ctx, l, client.InNamespace(ns), sel); err != nil {
			t.Fatal(err)
		}
	}
	if len(deps.Items) != 3 || len(svcs.Items) != 7 || len(pdbs.Items) != 3 || len(nps.Items) != 1 {
		t.Fatalf("want 3 Deployments, 7 Services (2 per shard, 1 for the channel), 3 PDBs, 1 NetworkPolicy; got %d, %d, %d, %d",
			len(deps.Items), len(svcs.Items), len(pdbs.Items), len(nps.Items))
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		owned(d)
		c := d.Spec.Template.Spec.Containers[0]
		sc := c.SecurityContext
		if *d.Spec.Replicas != 2 || c.Args[0] != "relay" || !strings.Contains(strings.Join(c.Args, " "), "--role=shard") ||
			c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
			*sc.ReadOnlyRootFilesystem != true || *sc.AllowPrivilegeEscalation || sc.Capabilities.Drop[0] != "ALL" ||
			!*d.Spec.Template.Spec.SecurityContext.RunAsNonRoot ||
			d.Spec.Template.Spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Fatalf("Deployment %s is not a restricted shard relay: %+v", d.Name, d.Spec.Template.Spec)
		}
	}
	for i := range svcs.Items {
		owned(&svcs.Items[i])
	}
	var cm corev1.ConfigMap
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.ConfigMapName(ch.Name)}, &cm); err != nil {
		t.Fatal(err)
	}
	owned(&cm)
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	if err != nil {
		t.Fatalf("the ConfigMap's shard map does not parse: %v", err)
	}
	if m.Shards[1].HashTag != ch.Status.Shards[1].HashTag || m.Retention.MaxLength != 1000 {
		t.Fatalf("shard map disagrees with status: %+v", m)
	}

	// Per shard a headless Service as well, named in the shard map: its DNS name answers with
	// the addresses of exactly that shard's ready relays, so sidecars pick the replica.
	for i, d := range deps.Items {
		shard, _ := strconv.Atoi(d.Labels[workloads.LabelShard])
		var hs corev1.Service
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.ShardReplicasServiceName(ch.Name, shard)}, &hs); err != nil {
			t.Fatalf("no headless Service for shard %d: %v", shard, err)
		}
		if hs.Spec.ClusterIP != corev1.ClusterIPNone || hs.Spec.PublishNotReadyAddresses ||
			len(hs.Spec.Ports) != 1 || hs.Spec.Ports[0].Port != shardmap.RelayPort {
			t.Fatalf("Service %s is not headless on port %d with ready relays only: %+v", hs.Name, shardmap.RelayPort, hs.Spec)
		}
		for j, other := range deps.Items {
			if selects := labels.SelectorFromSet(hs.Spec.Selector).Matches(labels.Set(other.Spec.Template.Labels)); selects != (i == j) {
				t.Fatalf("Service %s (selector %v) selects the pods of Deployment %s: %v", hs.Name, hs.Spec.Selector, other.Name, selects)
			}
		}
		if want := "http://" + hs.Name + "." + ns + ".svc:7070"; m.Shards[shard].Replicas != want {
			t.Fatalf("the shard map names %q for shard %d's replicas, want %q", m.Shards[shard].Replicas, shard, want)
		}
	}
	var np = nps.Items[0]
	if got := np.Spec.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values; len(got) != 1 || got[0] != ns {
		t.Fatalf("NetworkPolicy admits %v, want only %s", got, ns)
	}
	if from := np.Spec.Ingress[0].From; len(from) != 2 || from[1].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Fatalf("NetworkPolicy does not admit the metrics scrapers' namespaces: %+v", from)
	}

	// The relays run as their own ServiceAccount, bound to the TokenReview ClusterRole.
	var crb rbacv1.ClusterRoleBinding
	if err := k8s.Get(ctx, client.ObjectKey{Name: workloads.TokenReviewBindingName(ch)}, &crb); err != nil {
		t.Fatalf("no TokenReview binding for the relays: %v", err)
	}
	if crb.RoleRef.Name != "herald-relay" || len(crb.Subjects) != 1 || crb.Subjects[0].Name != deps.Items[0].Spec.Template.Spec.ServiceAccountName ||
		crb.Subjects[0].Namespace != ns {
		t.Fatalf("binding %+v does not bind the relays' ServiceAccount %s", crb, deps.Items[0].Spec.Template.Spec.ServiceAccountName)
	}
	var sa corev1.ServiceAccount
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: crb.Subjects[0].Name}, &sa); err != nil {
		t.Fatal(err)
	}
	owned(&sa)

	// Relays available -> Ready.
	markRelaysAvailable(t, ch)
	ch = waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionTrue, heraldv1.ReasonReconciled)
	if ch.Status.Shards[0].ReadyReplicas != 2 || ch.Status.Endpoint == "" {
		t.Fatalf("status lacks ready replicas or endpoint: %+v", ch.Status)
	}

	// The transitions were recorded as events on the channel.
	eventually(t, 10*time.Second, func() error {
		var evs eventsv1.EventList
		if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			if e.Regarding.UID == ch.UID {
				seen[e.Reason] = true
			}
		}
		if !seen[heraldv1.ReasonAclApplied] || !seen[heraldv1.ReasonReconciled] {
			return fmt.Errorf("events with reasons AclApplied and Reconciled expected, saw %v", seen)
		}
		return nil
	})
}

func TestSevenShardsOnThreeMastersAreBalanced(t *testing.T) {
	key := create(t, channel(newNamespace(t), withShards(7), withDelivery(heraldv1.DeliveryLive), withRetention(nil)))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	load := map[string]int{}
	for _, s := range ch.Status.Shards {
		load[s.Node]++
		if s.Stream != "" {
			t.Fatalf("a Live channel has no streams: %+v", s)
		}
	}
	var counts []int
	for _, n := range load {
		counts = append(counts, n)
	}
	if len(counts) != 3 || strings.Trim(fmt.Sprint(sortInts(counts)), "[]") != "2 2 3" {
		t.Fatalf("7 shards on 3 masters should be 3/2/2, got %v", load)
	}
	if c := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionDegraded); c.Status != metav1.ConditionTrue ||
		c.Reason != heraldv1.ReasonFewerMastersThanShards {
		t.Fatalf("7 shards on 3 masters must report Degraded/FewerMastersThanShards, got %+v", c)
	}
}

func sortInts(v []int) []int {
	for i := range v {
		for j := i + 1; j < len(v); j++ {
			if v[j] < v[i] {
				v[i], v[j] = v[j], v[i]
			}
		}
	}
	return v
}

func TestACLUserIsOnEveryNodeAndIsolated(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	mine := waitFor(t, create(t, channel(ns)), heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	other := waitFor(t, create(t, channel(ns)), heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")

	_, all := clusterNodes(t)
	if len(all) != 6 {
		t.Fatalf("want 6 nodes, got %d", len(all))
	}
	user := shardmap.ACLUser(ns, mine.Name)
	for _, n := range all {
		if !hasUser(ctx, n, user) {
			t.Fatalf("%s lacks ACL user %s", n.Options().Addr, user)
		}
	}

	var secret corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.CredentialsSecretName(mine.Name)}, &secret); err != nil {
		t.Fatal(err)
	}
	relay := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redisSeeds(), DisableIdentity: true,
		Username: string(secret.Data["username"]), Password: string(secret.Data["password"])})
	defer relay.Close()
	if err := relay.XAdd(ctx, &redis.XAddArgs{Stream: mine.Status.Shards[0].Stream, Values: []any{"m", "1"}}).Err(); err != nil {
		t.Fatalf("XADD to the channel's own stream with its credentials: %v", err)
	}
	err := relay.XAdd(ctx, &redis.XAddArgs{Stream: other.Status.Shards[0].Stream, Values: []any{"m", "1"}}).Err()
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("XADD to another channel's stream: want NOPERM, got %v", err)
	}
}

func TestResyncRestoresWhatWasLost(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	key := create(t, channel(ns))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	masters, all := clusterNodes(t)
	user := shardmap.ACLUser(ns, ch.Name)
	stream := ch.Status.Shards[0].Stream

	// The publish function is on every master.
	hasLibrary := func(m *redis.Client) bool {
		libs, err := m.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: shardmap.PublishLibraryName, WithCode: true}).Result()
		return err == nil && len(libs) == 1 && libs[0].Code == shardmap.PublishLibrary
	}
	for _, m := range masters {
		if !hasLibrary(m) {
			t.Fatalf("RedisConfigured, but master %s lacks the publish function library", m.Options().Addr)
		}
	}

	// Redis forgets: a node restarted without the user, a master without the function, and the
	// stream is gone.
	victim := all[len(all)-1]
	if err := victim.Do(ctx, "ACL", "DELUSER", user).Err(); err != nil {
		t.Fatal(err)
	}
	if err := masters[0].FunctionDelete(ctx, shardmap.PublishLibraryName).Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range masters {
		if n, _ := m.Del(ctx, stream).Result(); n == 1 {
			break
		}
	}
	eventually(t, 15*time.Second, func() error {
		if !hasUser(ctx, victim, user) {
			return fmt.Errorf("%s still lacks %s", victim.Options().Addr, user)
		}
		if !hasLibrary(masters[0]) {
			return fmt.Errorf("%s still lacks the publish function library", masters[0].Options().Addr)
		}
		for _, m := range masters {
			if n, _ := m.Exists(ctx, stream).Result(); n == 1 {
				return nil
			}
		}
		return fmt.Errorf("stream %s not re-created", stream)
	})

	// A hand-deleted Deployment comes back; a hand-edited one is restored.
	name := client.ObjectKey{Namespace: ns, Name: shardmap.ShardDeploymentName(ch.Name, 0)}
	var d appsv1.Deployment
	if err := k8s.Get(ctx, name, &d); err != nil {
		t.Fatal(err)
	}
	oldUID := d.UID
	if err := k8s.Delete(ctx, &d); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, name, &d); err != nil {
			return err
		}
		if d.UID == oldUID {
			return fmt.Errorf("still the old Deployment")
		}
		return nil
	})
	orig := d.DeepCopy()
	d.Spec.Replicas = ptr(int32(9))
	d.Spec.Template.Spec.Containers[0].Image = "evil:latest"
	if err := k8s.Patch(ctx, &d, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, name, &d); err != nil {
			return err
		}
		if *d.Spec.Replicas != 2 || d.Spec.Template.Spec.Containers[0].Image != "herald:test" {
			return fmt.Errorf("edit not reverted: replicas %d image %s", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image)
		}
		return nil
	})
}

// The spec's pod settings reach the relay pods, and what the spec stops asking for leaves them:
// a removed nodeSelector or annotation is unset in what the operator builds, which a comparison
// of the fields it sets cannot see.
func TestRelayPodSettingsComeAndGoWithTheSpec(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	key := create(t, channel(ns, func(c *heraldv1.NotificationChannel) {
		c.Spec.Relay.NodeSelector = map[string]string{"pool": "realtime"}
		c.Spec.Relay.Tolerations = []corev1.Toleration{{Key: "realtime", Operator: corev1.TolerationOpExists}}
		c.Spec.Relay.PodAnnotations = map[string]string{"sidecar.istio.io/inject": "false"}
		c.Spec.Relay.PodLabels = map[string]string{"team": "payments"}
		c.Spec.Relay.PriorityClassName = "realtime"
	}))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	name := client.ObjectKey{Namespace: ns, Name: shardmap.ShardDeploymentName(ch.Name, 0)}
	var d appsv1.Deployment
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, name, &d); err != nil {
			return err
		}
		tmpl := d.Spec.Template
		if tmpl.Spec.NodeSelector["pool"] != "realtime" || len(tmpl.Spec.Tolerations) != 1 || tmpl.Spec.PriorityClassName != "realtime" ||
			tmpl.Annotations["sidecar.istio.io/inject"] != "false" || tmpl.Labels["team"] != "payments" {
			return fmt.Errorf("relay pods do not carry the spec's settings: %+v", tmpl)
		}
		return nil
	})
	orig := ch.DeepCopy()
	ch.Spec.Relay = heraldv1.RelaySpec{Replicas: ch.Spec.Relay.Replicas}
	if err := k8s.Patch(ctx, ch, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, name, &d); err != nil {
			return err
		}
		tmpl := d.Spec.Template
		if len(tmpl.Spec.NodeSelector) != 0 || len(tmpl.Spec.Tolerations) != 0 || tmpl.Spec.PriorityClassName != "" ||
			tmpl.Annotations["sidecar.istio.io/inject"] != "" || tmpl.Labels["team"] != "" {
			return fmt.Errorf("removed from the spec, still on the Deployment: %+v", tmpl)
		}
		return nil
	})
}

func TestSteadyStateWritesNothing(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	key := create(t, channel(ns, withShards(2)))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	markRelaysAvailable(t, ch)
	waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionTrue, "")

	versions := func() map[string]string {
		v := map[string]string{}
		lists := []client.ObjectList{&heraldv1.NotificationChannelList{}, &appsv1.DeploymentList{}, &corev1.ServiceList{},
			&corev1.ConfigMapList{}, &corev1.SecretList{}, &policyv1.PodDisruptionBudgetList{}, &networkingv1.NetworkPolicyList{}, &rbacv1.RoleBindingList{}}
		for _, l := range lists {
			if err := k8s.List(ctx, l, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			items, _ := meta.ExtractList(l)
			for _, o := range items {
				m, _ := meta.Accessor(o)
				v[fmt.Sprintf("%T/%s", o, m.GetName())] = m.GetResourceVersion()
			}
		}
		return v
	}
	before := versions()
	writes := apiWrites.in(ns)
	start := reconciles.get(key)
	eventually(t, 5*resyncPeriod, func() error {
		if n := reconciles.get(key) - start; n < 3 {
			return fmt.Errorf("%d resyncs so far", n)
		}
		return nil
	})
	after := versions()
	if n := apiWrites.in(ns) - writes; n != 0 {
		t.Errorf("the manager sent %d write requests in steady state", n)
	}
	if len(before) < 10 {
		t.Fatalf("expected the channel and its children, saw %v", before)
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s was written during steady state: resourceVersion %s -> %s", k, v, after[k])
		}
	}
}

// The manager reaches the Secrets of a namespace through a RoleBinding of
// herald-manager-secrets to itself, made before it reads or writes one there; every channel of
// the namespace owns it, so the garbage collector removes it with the last of them.
func TestTheManagerBindsItselfToTheSecretsOfChannelNamespaces(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	var channels []*heraldv1.NotificationChannel
	for range 2 {
		ch := waitFor(t, create(t, channel(ns)), heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
		channels = append(channels, ch)
	}
	var rb rbacv1.RoleBinding
	eventually(t, 10*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: workloads.SecretsBindingName}, &rb); err != nil {
			return err
		}
		if len(rb.OwnerReferences) != 2 {
			return fmt.Errorf("owners %v, want both channels", rb.OwnerReferences)
		}
		return nil
	})
	for _, ch := range channels {
		if !slices.ContainsFunc(rb.OwnerReferences, func(o metav1.OwnerReference) bool {
			return o.UID == ch.UID && (o.Controller == nil || !*o.Controller)
		}) {
			t.Errorf("the binding's owners %v lack channel %s (as a non-controller owner)", rb.OwnerReferences, ch.Name)
		}
	}
	want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: managerServiceAccount.Namespace, Name: managerServiceAccount.Name}}
	if rb.RoleRef.Name != "herald-manager-secrets" || !slices.Equal(rb.Subjects, want) || rb.Labels[workloads.LabelManagedBy] != workloads.ManagedBy {
		t.Errorf("binding %s: roleRef %+v, subjects %+v, labels %v; want herald-manager-secrets to the manager, marked", rb.Name, rb.RoleRef, rb.Subjects, rb.Labels)
	}
}

func TestDeletionPolicies(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	del := waitFor(t, create(t, channel(ns, withShards(2), func(c *heraldv1.NotificationChannel) {
		c.Spec.DeletionPolicy = heraldv1.DeletionDelete
	})), heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	keep := waitFor(t, create(t, channel(ns)), heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	masters, all := clusterNodes(t)
	oldPassword := relayPassword(t, keep)
	for _, ch := range []*heraldv1.NotificationChannel{del, keep} {
		tag := ch.Status.Shards[0].HashTag
		for _, m := range masters { // an idempotency key too, wherever its slot lives
			if m.Set(ctx, shardmap.IdempotencyKey(tag, "k1"), "1-0", time.Hour).Err() == nil {
				break
			}
		}
		if got := len(channelKeys(t, masters, ch)); got < 2 {
			t.Fatalf("channel %s should have streams and an idempotency key, has %d keys", ch.Name, got)
		}
		if err := k8s.Delete(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []*heraldv1.NotificationChannel{del, keep} {
		eventually(t, 20*time.Second, func() error {
			err := k8s.Get(ctx, client.ObjectKeyFromObject(ch), &heraldv1.NotificationChannel{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("channel %s not released (err=%v)", ch.Name, err)
		})
	}
	for _, ch := range []*heraldv1.NotificationChannel{del, keep} {
		err := k8s.Get(ctx, client.ObjectKey{Name: workloads.TokenReviewBindingName(ch)}, &rbacv1.ClusterRoleBinding{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("the relays' ClusterRoleBinding of %s outlived the channel (err=%v)", ch.Name, err)
		}
	}
	if keys := channelKeys(t, masters, del); len(keys) != 0 {
		t.Fatalf("deletionPolicy Delete left keys behind: %v", keys)
	}
	for _, n := range all {
		if hasUser(ctx, n, shardmap.ACLUser(ns, del.Name)) {
			t.Fatalf("deletionPolicy Delete left the ACL user on %s", n.Options().Addr)
		}
		if !hasUser(ctx, n, shardmap.ACLUser(ns, keep.Name)) {
			t.Fatalf("deletionPolicy Retain removed the ACL user from %s", n.Options().Addr)
		}
		// Retain keeps the user, disabled: the password the namespace held opens nothing.
		if canLogIn(n, shardmap.ACLUser(ns, keep.Name), oldPassword) {
			t.Fatalf("deletionPolicy Retain left the ACL user enabled on %s: the deleted channel's password still logs in", n.Options().Addr)
		}
	}
	if keys := channelKeys(t, masters, keep); len(keys) < 2 {
		t.Fatalf("deletionPolicy Retain lost keys: %v", keys)
	}
	// Applied again, the retained channel takes up its streams where it left them.
	again := waitFor(t, create(t, channel(ns, func(c *heraldv1.NotificationChannel) { c.GenerateName, c.Name = "", keep.Name })),
		heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	if again.Status.Shards[0].HashTag != keep.Status.Shards[0].HashTag {
		t.Fatalf("the re-created channel placed shard 0 on %s, its retained stream is on %s", again.Status.Shards[0].HashTag, keep.Status.Shards[0].HashTag)
	}
	// ... with the user enabled again, under a password of its own.
	newPassword := relayPassword(t, again)
	if newPassword == oldPassword {
		t.Fatal("the re-created channel took up the deleted channel's password")
	}
	for _, n := range all {
		if !canLogIn(n, shardmap.ACLUser(ns, again.Name), newPassword) || canLogIn(n, shardmap.ACLUser(ns, again.Name), oldPassword) {
			t.Fatalf("%s: the re-created channel's user must log in with its new password only", n.Options().Addr)
		}
	}
	if err := k8s.Delete(ctx, again); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(again), &heraldv1.NotificationChannel{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("channel %s not released (err=%v)", again.Name, err)
		}
		return nil
	})
	// Tidy up what Retain kept.
	for _, m := range masters {
		for _, k := range channelKeys(t, []*redis.Client{m}, keep) {
			m.Del(ctx, k)
		}
	}
	for _, n := range all {
		n.Do(ctx, "ACL", "DELUSER", shardmap.ACLUser(ns, keep.Name))
	}
}

// A channel placed under another topology, deleted with deletionPolicy Retain and applied again
// finds its streams under tags placement would not choose today; it must take them up, or its
// history would sit in Redis unreachable while new, empty streams took its place.
func TestRecreatedChannelAdoptsRetainedStreams(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const name = "kept"
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redisSeeds()})
	defer admin.Close()
	old := shardmap.HashTag(ns, name, 1, 4242) // a salt placement never reaches: it takes the first that fits
	id, err := admin.XAdd(ctx, &redis.XAddArgs{Stream: shardmap.StreamKey(old), Values: map[string]any{"d": `{"kept":true}`}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Del(ctx, shardmap.StreamKey(old)) })

	ch := waitFor(t, create(t, channel(ns, withShards(3), func(c *heraldv1.NotificationChannel) {
		c.GenerateName, c.Name = "", name
		c.Spec.DeletionPolicy = heraldv1.DeletionDelete // the test's keys go with it
	})), heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	if got := ch.Status.Shards[1].HashTag; got != old {
		t.Fatalf("shard 1 placed on %s; its retained stream is on %s", got, old)
	}
	nodes := map[string]bool{}
	for _, sh := range ch.Status.Shards {
		nodes[sh.Node] = true
	}
	if len(nodes) != 3 {
		t.Fatalf("the other shards must go to the masters the adopted one leaves free: %+v", ch.Status.Shards)
	}
	xs, err := admin.XRange(ctx, shardmap.StreamKey(old), "-", "+").Result()
	if err != nil || len(xs) != 1 || xs[0].ID != id {
		t.Fatalf("the retained stream must keep its history: %v %v", xs, err)
	}
}

// standalone starts a throw-away standalone redis-server and returns its address and a stop func.
func standalone(t *testing.T, port int) (string, func()) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			stop()
		}
	})
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	eventually(t, 10*time.Second, func() error { return c.Ping(context.Background()).Err() })
	return addr, stop
}

func withRedis(addr string) func(*heraldv1.NotificationChannel) {
	return func(ch *heraldv1.NotificationChannel) { ch.Spec.Redis = &heraldv1.RedisSpec{Addresses: []string{addr}} }
}

func TestRedisUnreachableThenBack(t *testing.T) {
	const port = 7611
	addr, stop := standalone(t, port)
	key := create(t, channel(newNamespace(t), withShards(2), withRedis(addr)))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, heraldv1.ReasonAclApplied)
	if ch.Status.Shards[0].Slot != 0 || ch.Status.Shards[1].Node != addr {
		t.Fatalf("a standalone Redis has slot 0 and one node: %+v", ch.Status.Shards)
	}
	markRelaysAvailable(t, ch)
	waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionTrue, "")

	stop()
	ch = waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionFalse, heraldv1.ReasonRedisUnreachable)
	c := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionRedisConfigured)
	if !strings.Contains(c.Message, addr) {
		t.Fatalf("the message should name the address %s: %q", addr, c.Message)
	}
	waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionFalse, heraldv1.ReasonRedisUnreachable)

	// Back, empty (a restart without persistence): the user and streams are re-created.
	standalone(t, port)
	waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionTrue, heraldv1.ReasonReconciled)
	r := redis.NewClient(&redis.Options{Addr: addr})
	defer r.Close()
	if !hasUser(context.Background(), r, shardmap.ACLUser(ch.Namespace, ch.Name)) {
		t.Fatal("the ACL user was not re-created on the restarted Redis")
	}
	if n, _ := r.Exists(context.Background(), ch.Status.Shards[0].Stream, ch.Status.Shards[1].Stream).Result(); n != 2 {
		t.Fatalf("%d of 2 streams re-created", n)
	}
}

func TestCleanupGivesUpAndCanBeSkipped(t *testing.T) {
	ctx := context.Background()
	addr, stop := standalone(t, 7612)
	key := create(t, channel(newNamespace(t), withRedis(addr), func(c *heraldv1.NotificationChannel) {
		c.Spec.DeletionPolicy = heraldv1.DeletionDelete
	}))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	stop() // Redis is gone for good
	if err := k8s.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	ch = waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionFalse, heraldv1.ReasonCleanupFailed)
	msg := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionReady).Message
	if !strings.Contains(msg, heraldv1.SkipCleanupAnnotation) {
		t.Fatalf("the message should say how to release the channel: %q", msg)
	}
	orig := ch.DeepCopy()
	ch.Annotations = map[string]string{heraldv1.SkipCleanupAnnotation: "true"}
	if err := k8s.Patch(ctx, ch, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, key, &heraldv1.NotificationChannel{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("channel not released (err=%v)", err)
		}
		return nil
	})
}

// The skip-cleanup annotation is the channel owner's to set: it keeps the data, never the
// user. A channel deleted with it while Redis answers has its user disabled on every node
// before it is released.
func TestSkippingCleanupStillDisablesTheUser(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	ch := waitFor(t, create(t, channel(ns, func(c *heraldv1.NotificationChannel) {
		c.Spec.DeletionPolicy = heraldv1.DeletionDelete
		c.Annotations = map[string]string{heraldv1.SkipCleanupAnnotation: "true"}
	})), heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	masters, all := clusterNodes(t)
	password := relayPassword(t, ch)
	if err := k8s.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(ch), &heraldv1.NotificationChannel{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("channel not released (err=%v)", err)
		}
		return nil
	})
	for _, n := range all {
		if canLogIn(n, shardmap.ACLUser(ns, ch.Name), password) {
			t.Fatalf("a channel deleted with %s left its Redis user enabled on %s", heraldv1.SkipCleanupAnnotation, n.Options().Addr)
		}
	}
	if keys := channelKeys(t, masters, ch); len(keys) == 0 {
		t.Fatal("the annotation keeps the data, but the streams are gone")
	}
}

// Data a deleted channel retained belongs to the namespace that wrote it (its UID in the
// channel's owner record): a channel of the same name in a namespace of the same name created
// since, perhaps by another team, neither takes it up nor gets a user that could read it,
// until the platform team deletes it (or lets channels adopt it).
func TestRetainedDataOfAnotherNamespaceIsNotAdopted(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	masters, all := clusterNodes(t)
	owner := shardmap.OwnerKey(ns, "orders")
	written := false
	for _, m := range masters { // the old namespace's record, wherever its slot lives
		if m.Set(ctx, owner, "uid-of-a-namespace-deleted-since", 0).Err() == nil {
			written = true
			break
		}
	}
	if !written {
		t.Fatal("no master took the owner record")
	}
	key := create(t, channel(ns, func(c *heraldv1.NotificationChannel) { c.GenerateName, c.Name = "", "orders" }))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionFalse, heraldv1.ReasonRetainedByAnotherNamespace)
	if msg := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionRedisConfigured).Message; !strings.Contains(msg, "--adopt-retained-streams") {
		t.Fatalf("the condition should say what to do: %q", msg)
	}
	for _, n := range all {
		if hasUser(ctx, n, shardmap.ACLUser(ns, "orders")) {
			t.Fatalf("the channel got a Redis user on %s that could read the other namespace's data", n.Options().Addr)
		}
	}

	// The platform team deletes the retained data: the channel is provisioned, and owns it.
	for _, m := range masters {
		m.Del(ctx, owner)
	}
	waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	var nsObj corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, m := range masters {
		if v, err := m.Get(ctx, owner).Result(); err == nil {
			got = v
		}
	}
	if got != string(nsObj.UID) {
		t.Fatalf("the owner record holds %q, want the namespace's UID %s", got, nsObj.UID)
	}
}

func TestWorkloadFailuresAreReported(t *testing.T) {
	ns := newNamespace(t)
	// Requests above limits pass the CRD but not the Deployment's validation.
	key := create(t, channel(ns, func(c *heraldv1.NotificationChannel) {
		c.Spec.Relay.Resources = &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Mi")},
		}
	}))
	ch := waitFor(t, key, heraldv1.ConditionRelaysAvailable, metav1.ConditionFalse, heraldv1.ReasonWorkloadsFailed)
	c := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionRelaysAvailable)
	if !strings.Contains(c.Message, "Deployment") || !strings.Contains(c.Message, "less than or equal to memory limit") {
		t.Fatalf("the message should say which object failed: %q", c.Message)
	}
	waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionFalse, heraldv1.ReasonWorkloadsFailed)
}

// ownCluster starts a Redis Cluster on base..base+5 for one test that breaks nodes (the shared
// one serves other tests) and stops it after.
func ownCluster(t *testing.T, base int) *rediscluster.Cluster {
	t.Helper()
	cluster, err := rediscluster.Start(base, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Down() })
	return cluster
}

// TestFailoverMovesTheShardNode fails a master over on a cluster of the test's own (the shared one
// serves other tests) and waits for status.shards[].node to follow.
func TestFailoverMovesTheShardNode(t *testing.T) {
	ctx := context.Background()
	cluster := ownCluster(t, 7451)

	seed := cluster.Addr()
	key := create(t, channel(newNamespace(t), withRedis(seed)))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	old := ch.Status.Shards[0].Node

	admin := redis.NewClient(&redis.Options{Addr: seed})
	defer admin.Close()
	shards, err := admin.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var replica string
	for _, s := range shards {
		for _, n := range s.Nodes {
			if n.Role == "master" && fmt.Sprintf("%s:%d", n.IP, n.Port) == old {
				for _, r := range s.Nodes {
					if r.Role == "replica" {
						replica = fmt.Sprintf("%s:%d", r.IP, r.Port)
					}
				}
			}
		}
	}
	if replica == "" {
		t.Fatalf("no replica of %s in %+v", old, shards)
	}
	r := redis.NewClient(&redis.Options{Addr: replica})
	defer r.Close()
	if err := r.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		var got heraldv1.NotificationChannel
		if err := k8s.Get(ctx, key, &got); err != nil {
			return err
		}
		if n := got.Status.Shards[0].Node; n != replica {
			return fmt.Errorf("shard 0 is on %s, want the promoted %s", n, replica)
		}
		if got.Status.Shards[0].HashTag != ch.Status.Shards[0].HashTag {
			return fmt.Errorf("the hash tag changed: %s -> %s", ch.Status.Shards[0].HashTag, got.Status.Shards[0].HashTag)
		}
		return nil
	})
}

// TestLaggingNodesAreShownAndCaughtUp pauses a replica (SIGSTOP) while a channel is first
// configured: the channel must say RedisConfigured=False naming that node, instead of True with
// a replica that a failover would promote without the relays' user. Continued, the replica gets
// the user within seconds; restarted (Redis does not save ACL users), it gets it back.
func TestLaggingNodesAreShownAndCaughtUp(t *testing.T) {
	ctx := context.Background()
	cluster := ownCluster(t, 7461)
	admin := redis.NewClient(&redis.Options{Addr: cluster.Addr()})
	defer admin.Close()
	shards, err := admin.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var replica int64
	for _, s := range shards {
		for _, n := range s.Nodes {
			if n.Role == "replica" {
				replica = n.Port
			}
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", replica)
	if err := cluster.Signal(int(replica), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer cluster.Signal(int(replica), syscall.SIGCONT) //nolint:errcheck // the node may be gone already

	key := create(t, channel(newNamespace(t), withRedis(cluster.Addr())))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionFalse, heraldv1.ReasonNodesLagging)
	if c := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionRedisConfigured); !strings.Contains(c.Message, "replica "+addr) {
		t.Fatalf("RedisConfigured should name the paused replica %s: %q", addr, c.Message)
	}
	waitFor(t, key, heraldv1.ConditionDegraded, metav1.ConditionTrue, heraldv1.ReasonNodesLagging)

	user := shardmap.ACLUser(key.Namespace, key.Name)
	node := redis.NewClient(&redis.Options{Addr: addr})
	defer node.Close()
	hasUser := func() error {
		if err := node.Do(ctx, "ACL", "GETUSER", user).Err(); err != nil {
			return fmt.Errorf("ACL GETUSER %s on %s: %w", user, addr, err)
		}
		return nil
	}
	if err := cluster.Signal(int(replica), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, hasUser)
	waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, heraldv1.ReasonAclApplied)

	if err := cluster.Signal(int(replica), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if node.Ping(ctx).Err() == nil {
			return errors.New("the killed replica still answers")
		}
		return nil
	})
	if err := cluster.Restart(int(replica)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, hasUser)
}

// TestPolicyRefusesWhatIsNotAllowed: a channel may name its own Redis, relay image and priority
// class only within the operator's allow-lists. Outside them the channel says NotAllowed, naming
// the field, and the operator neither dials the address (with a Secret of the namespace as the
// password) nor creates relays with the image.
func TestPolicyRefusesWhatIsNotAllowed(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	// A "Redis" the operator could reach, at an address the policy does not allow (it allows
	// 127.0.0.1:*; the whole 127.0.0.0/8 is this machine's loopback).
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var dialled atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "loot"},
		StringData: map[string]string{"password": "not for an attacker"}}); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		edit  func(*heraldv1.NotificationChannel)
		field string
	}{
		"a Redis outside the list": {func(c *heraldv1.NotificationChannel) {
			c.Spec.Redis = &heraldv1.RedisSpec{Addresses: []string{"127.0.0.2:" + port},
				CredentialsSecretRef: &heraldv1.CredentialsSecretRef{Name: "loot", PasswordKey: "password"}}
		}, "spec.redis.addresses"},
		"an image outside the list": {func(c *heraldv1.NotificationChannel) { c.Spec.Relay.Image = "evil.example/miner:latest" }, "spec.relay.image"},
		"a priority class outside the list": {func(c *heraldv1.NotificationChannel) {
			c.Spec.Relay.PriorityClassName = "system-cluster-critical"
		}, "spec.relay.priorityClassName"},
		"a limit over its ceiling": {func(c *heraldv1.NotificationChannel) {
			c.Spec.Relay.Limits = &heraldv1.RelayLimits{MaxSubscribersPerCaller: ptr[int32](1_000_000)}
		}, "spec.relay.limits.maxSubscribersPerCaller"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			key := create(t, channel(ns, tc.edit))
			ch := waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionFalse, heraldv1.ReasonNotAllowed)
			if c := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionReady); !strings.Contains(c.Message, tc.field) {
				t.Errorf("the condition should name %s: %q", tc.field, c.Message)
			}
			var deployments appsv1.DeploymentList
			if err := k8s.List(ctx, &deployments, client.InNamespace(ns), client.MatchingLabels{workloads.LabelChannel: key.Name}); err != nil {
				t.Fatal(err)
			}
			if len(deployments.Items) != 0 {
				t.Errorf("a refused channel got %d relay Deployments", len(deployments.Items))
			}
		})
	}
	if n := dialled.Load(); n != 0 {
		t.Errorf("the operator dialled a Redis outside its allow-list %d times", n)
	}

	// Inside the lists: an allowed image reaches the relays.
	key := create(t, channel(ns, func(c *heraldv1.NotificationChannel) { c.Spec.Relay.Image = "registry.test/herald:v2" }))
	waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	eventually(t, 15*time.Second, func() error {
		var d appsv1.Deployment
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.ShardDeploymentName(key.Name, 0)}, &d); err != nil {
			return err
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "registry.test/herald:v2" {
			return fmt.Errorf("relay image %s", img)
		}
		return nil
	})
}

// A memory limit the channel sets below what its largest messages need is kept, and said.
func TestMemoryBelowMessageSizeIsDegraded(t *testing.T) {
	key := create(t, channel(newNamespace(t), func(c *heraldv1.NotificationChannel) {
		c.Spec.MaxMessageBytes = 16 << 20
		c.Spec.Relay.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}}
	}))
	ch := waitFor(t, key, heraldv1.ConditionDegraded, metav1.ConditionTrue, heraldv1.ReasonMemoryBelowMessageSize)
	if c := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionDegraded); !strings.Contains(c.Message, "128Mi is below the 449Mi") {
		t.Fatalf("the message should say how much is needed: %q", c.Message)
	}
}

// A paused channel is left as it is: an edit reaches nothing until the annotation goes, and the
// Paused condition says so meanwhile.
func TestPausedChannelsAreLeftAlone(t *testing.T) {
	ctx := context.Background()
	key := create(t, channel(newNamespace(t)))
	waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	deployment := client.ObjectKey{Namespace: key.Namespace, Name: shardmap.ShardDeploymentName(key.Name, 0)}
	replicas := func() int32 {
		var d appsv1.Deployment
		if err := k8s.Get(ctx, deployment, &d); err != nil {
			t.Fatal(err)
		}
		return *d.Spec.Replicas
	}
	eventually(t, 15*time.Second, func() error {
		if n := replicas(); n != 2 {
			return fmt.Errorf("%d relay replicas, want the default 2", n)
		}
		return nil
	})
	edit := func(f func(*heraldv1.NotificationChannel)) {
		var ch heraldv1.NotificationChannel
		if err := k8s.Get(ctx, key, &ch); err != nil {
			t.Fatal(err)
		}
		orig := ch.DeepCopy()
		f(&ch)
		if err := k8s.Patch(ctx, &ch, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	edit(func(c *heraldv1.NotificationChannel) {
		metav1.SetMetaDataAnnotation(&c.ObjectMeta, heraldv1.PausedAnnotation, "true")
		c.Spec.Relay.Replicas = ptr(int32(3))
	})
	waitFor(t, key, heraldv1.ConditionPaused, metav1.ConditionTrue, heraldv1.ReasonPausedByAnnotation)
	before := reconciles.get(key)
	eventually(t, 15*time.Second, func() error { // a resync passes over it, too
		if reconciles.get(key) < before+1 {
			return errors.New("no pass over the paused channel yet")
		}
		return nil
	})
	if n := replicas(); n != 2 {
		t.Fatalf("a paused channel's relays went to %d replicas", n)
	}
	edit(func(c *heraldv1.NotificationChannel) { delete(c.Annotations, heraldv1.PausedAnnotation) })
	eventually(t, 15*time.Second, func() error {
		var ch heraldv1.NotificationChannel
		if err := k8s.Get(ctx, key, &ch); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionPaused); c != nil {
			return fmt.Errorf("still %s", c.Reason)
		}
		if n := replicas(); n != 3 {
			return fmt.Errorf("%d relay replicas after the pause, want 3", n)
		}
		return nil
	})
}
