//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/injection"
	"github.com/heraldhq/herald/hack/localcluster"
	"github.com/heraldhq/herald/relay/shardmap"
)

// previousRelease is the Herald that TestUpgradeAndRollbackUnderLoad upgrades from: the commit
// of the release before this one, built from the repository's history. No release is tagged
// yet, so it is the last commit before each version's publish function became a library of its
// own (the change that lets relays of two versions publish side by side). When a release is
// tagged, this becomes its commit.
const previousRelease = "dd437a6f1037d18e5edacc42dcd963374d063ec1"

// The upgrade's load: a modest rate, so the machine's two cores also roll the pods.
const (
	upgradeNamespace = "e2e-upgrade"
	upgradeChannel   = "orders"
	upgradeRate      = 100.0 // messages per second
	upgradeWorkers   = 4
)

// A platform team upgrades Herald under load, re-creates half of its apps' pods (their
// sidecars then are the new version's, the others stay the previous one's), and rolls back, the
// same way: every acknowledged message reaches every subscriber once, in order, with no gap, and
// every publish that failed while pods rolled succeeded when retried with its Idempotency-Key.
func TestUpgradeAndRollbackUnderLoad(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k8s := node.Client

	// 1. The previous release, built from its commit, runs the channel and two apps.
	previous := buildPrevious(t, ctx)
	t.Logf("installing the previous release (%.7s) over this one", previousRelease)
	must(t, node.InstallHerald(ctx, helmBin, previous))
	defer func() { must(t, node.InstallHerald(context.Background(), helmBin, heraldChart)) }()
	previousImage, currentImage := "ghcr.io/heraldhq/herald:previous", releasedImage(t)
	ensureNamespace(t, ctx, upgradeNamespace)
	replicas, maxLen := int32(2), int64(1_000_000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: upgradeNamespace, Name: upgradeChannel},
		Spec: heraldv1.NotificationChannelSpec{Shards: 2, Delivery: heraldv1.DeliveryDurable,
			Retention: &heraldv1.Retention{MaxLength: &maxLen}, Relay: heraldv1.RelaySpec{Replicas: &replicas},
			DeletionPolicy: heraldv1.DeletionDelete},
	}
	must(t, k8s.Create(ctx, ch))
	ch, err := localcluster.WaitChannelReady(ctx, k8s, client.ObjectKeyFromObject(ch), readyTimeout)
	must(t, err)
	awaitRelays(t, ctx, ch, previousImage)
	var cm corev1.ConfigMap
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: upgradeNamespace, Name: shardmap.ConfigMapName(upgradeChannel)}, &cm))
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	must(t, err)
	apps := []string{"app-a", "app-b"}
	bases := map[string]string{}
	for _, name := range apps {
		bases[name] = startAppBehindService(t, ctx, name)
		checkSidecar(t, ctx, name, previousImage)
	}

	// 2. Load: one publisher through app-a's Service; subscribers (whole channel and per key,
	// SSE and WebSocket) through both apps' Services, resuming with Last-Event-ID.
	subCtx, stopSubs := context.WithCancel(ctx)
	var subsDone sync.WaitGroup
	var subs []*subscriber
	for i := range 8 {
		key := ""
		if i >= 4 {
			key = keyOf(i * 11)
		}
		s := newSubscriber(m, bases[apps[i%2]], fmt.Sprintf("sub-%d", i), key, i%4 >= 2)
		s.start(subCtx, &subsDone)
		subs = append(subs, s)
	}
	defer func() { stopSubs(); subsDone.Wait() }()
	awaitConnected(t, subs)
	pl := &publishLog{acked: map[int]ack{}}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		publishAll(ctx, pl, bases["app-a"], m, 1_000_000, upgradeWorkers, upgradeRate, keyOf, 90*time.Second)
	}()
	awaitCond(t, 30*time.Second, "the first 200 messages acknowledged", func() bool { return pl.count() >= 200 })

	// 3. Upgrade, then re-create app-a's pod: its sidecar is now this release's. The new
	// manager removes the previous version's function library once every relay runs this
	// version (after a minute here; 10 minutes by default).
	// Watch when the previous library leaves the last node: never before every relay rolled and
	// a whole minute passed.
	legacyGone := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			if held, err := librariesHeld(ctx); err == nil && held[shardmap.LegacyLibraryName] == 0 {
				legacyGone <- time.Now()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	began := time.Now()
	must(t, node.InstallHerald(ctx, helmBin, heraldChart, "manager.extraArgs={--prune-function-libraries-after=1m}"))
	managerAt := time.Since(began)
	// Both versions' publish functions are on every node meanwhile: the previous one's library
	// (named herald) stays while this one's (herald_<digest>) is loaded beside it.
	awaitCond(t, 30*time.Second, "both versions' function libraries on every Redis node", func() bool {
		held, err := librariesHeld(ctx)
		return err == nil && held[shardmap.LegacyLibraryName] == len(node.Redis.Addrs()) && held[shardmap.PublishLibraryName] == len(node.Redis.Addrs())
	})
	awaitRelays(t, ctx, ch, currentImage)
	rolled := time.Since(began)
	t.Logf("upgrade: manager available %.1fs after helm upgrade began, every relay rolled at %.1fs; %d acknowledged so far",
		managerAt.Seconds(), rolled.Seconds(), pl.count())
	var gone time.Time
	select {
	case gone = <-legacyGone:
	case <-time.After(4 * time.Minute):
		t.Fatal("the previous version's function library is still on a node 4 minutes after every relay rolled")
	}
	if after := gone.Sub(began) - rolled; after < 59*time.Second {
		t.Errorf("the previous version's function library was removed %.1fs after every relay rolled; want no sooner than the minute asked for", after.Seconds())
	} else {
		t.Logf("the previous version's function library was removed %.1fs after every relay rolled", after.Seconds())
	}
	if held, err := librariesHeld(ctx); err != nil || held[shardmap.PublishLibraryName] != len(node.Redis.Addrs()) {
		t.Errorf("this version's library is on %d of %d nodes (%v)", held[shardmap.PublishLibraryName], len(node.Redis.Addrs()), err)
	}
	recreateAppPod(t, ctx, "app-a")
	checkSidecar(t, ctx, "app-a", currentImage)
	checkSidecar(t, ctx, "app-b", previousImage)
	upgraded := pl.count()

	// 4. Roll back, then re-create app-b's pod: the previous release's injector gives it the
	// previous sidecar, while app-a's sidecar, this release's, talks to relays of the previous.
	began = time.Now()
	rollback(t, ctx)
	managerAt = time.Since(began)
	awaitRelays(t, ctx, ch, previousImage)
	t.Logf("rollback: manager available %.1fs after helm rollback began, every relay rolled at %.1fs; %d acknowledged so far",
		managerAt.Seconds(), time.Since(began).Seconds(), pl.count())
	recreateAppPod(t, ctx, "app-b")
	checkSidecar(t, ctx, "app-b", previousImage)
	checkSidecar(t, ctx, "app-a", currentImage)
	awaitCond(t, 30*time.Second, "200 more messages acknowledged across the skew", func() bool { return pl.count() >= upgraded+200 })

	// 5. Stop publishing; every subscriber gets every acknowledged message once, in order.
	pl.stop.Store(true)
	<-pubDone
	t.Logf("published: %d acknowledged, %d given up; %d attempts, %d retries; last error: %v",
		len(pl.acked), len(pl.failed), pl.attempts.Load(), pl.retries.Load(), pl.lastErr.Load())
	if len(pl.failed) > 0 {
		t.Errorf("%d messages were never acknowledged (first: %d)", len(pl.failed), pl.failed[0])
	}

	awaitDelivered(t, subs, pl, nil)
	stopSubs()
	subsDone.Wait()
	var deliveries, reconnects int
	for _, s := range subs {
		v := check(s.snapshot(), pl.expectedBy(s), nil)
		deliveries += v.delivered
		reconnects += int(s.reconnects.Load())
		switch {
		case v.duplicates > 0:
			t.Errorf("%s: %d duplicate deliveries (e.g. %s)", s.name, v.duplicates, v.example)
		case v.outOfOrder > 0:
			t.Errorf("%s: %d deliveries out of shard order (e.g. %s)", s.name, v.outOfOrder, v.example)
		case len(v.missingUnreported) > 0:
			t.Errorf("%s: %d acknowledged messages not delivered (e.g. seq %d); last error %v",
				s.name, len(v.missingUnreported), v.missingUnreported[0], s.lastErr.Load())
		case v.otherGaps+v.rollbackGaps > 0:
			t.Errorf("%s: %d gap events (e.g. %s)", s.name, v.otherGaps+v.rollbackGaps, v.example)
		}
	}
	t.Logf("delivered %d events to %d subscribers: every one once, in order, no gap; %d reconnects", deliveries, len(subs), reconnects)
	must(t, k8s.Delete(ctx, ch))
}

// buildPrevious checks out previousRelease into a worktree, builds its binary and image (its own
// hack/images), pushes the image to the node's registry as ghcr.io/heraldhq/herald:previous, and
// returns its chart.
func buildPrevious(t *testing.T, ctx context.Context) localcluster.Chart {
	t.Helper()
	if out, err := exec.Command("git", "-C", repoRoot, "cat-file", "-e", previousRelease+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("the previous release's commit %s is not in this clone (the test builds it from the history: a full clone): %v %s", previousRelease, err, out)
	}
	dir := filepath.Join(t.TempDir(), "previous")
	run := func(dir string, env []string, name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run(repoRoot, nil, "git", "worktree", "add", "--detach", dir, previousRelease)
	t.Cleanup(func() { _ = exec.Command("git", "-C", repoRoot, "worktree", "remove", "--force", dir).Run() })
	began := time.Now()
	run(dir, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", "bin/herald", ".")
	run(dir, nil, "go", "run", "./hack/images", "-out", "bin/images", "-tag", "previous", "-only", "herald", "-herald", "bin/herald")
	if _, err := node.PushArchive(filepath.Join(dir, "bin", "images", "herald.tar")); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the previous release (%.7s) in %.1fs", previousRelease, time.Since(began).Seconds())
	return localcluster.Chart{Ref: filepath.Join(dir, "charts", "herald"), ImageTag: "previous"}
}

// rollback runs `helm rollback herald` (to the revision before the current one) and waits for
// the manager.
func rollback(t *testing.T, ctx context.Context) {
	t.Helper()
	out, err := exec.CommandContext(ctx, helmBin, "rollback", "herald", "--kubeconfig", node.Kubeconfig,
		"--namespace", localcluster.HeraldNamespace, "--wait", "--timeout", "4m").CombinedOutput()
	if err != nil {
		t.Fatalf("helm rollback: %v\n%s", err, out)
	}
}

// awaitRelays waits until every shard's relay Deployment runs image on all its replicas, rolled
// out and ready, and nothing else.
func awaitRelays(t *testing.T, ctx context.Context, ch *heraldv1.NotificationChannel, image string) {
	t.Helper()
	awaitCond(t, 3*time.Minute, "every relay of "+ch.Name+" on "+image, func() bool {
		for i := range int(ch.Spec.Shards) {
			var d appsv1.Deployment
			if err := node.Client.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.ShardDeploymentName(ch.Name, i)}, &d); err != nil {
				return false
			}
			want := *ch.Spec.Relay.Replicas
			if d.Spec.Template.Spec.Containers[0].Image != image || d.Status.ObservedGeneration != d.Generation ||
				d.Status.UpdatedReplicas != want || d.Status.ReadyReplicas != want || d.Status.Replicas != want {
				return false
			}
		}
		return true
	})
}

// startAppBehindService starts app name (an injected pod, as startApp) behind a Service of its
// own and returns the Service's URL of the pod's sidecar: it outlives the pod.
func startAppBehindService(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: upgradeNamespace, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "forward", Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	}
	must(t, node.Client.Create(ctx, svc))
	startApp(t, ctx, upgradeNamespace, name, upgradeChannel)
	return "http://" + svc.Spec.ClusterIP + ":8080"
}

// recreateAppPod deletes app name's pod, as a rollout would, and waits for its replacement.
func recreateAppPod(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	pods, err := node.WaitPodsReady(ctx, upgradeNamespace, "app="+name, 1, readyTimeout)
	must(t, err)
	began := time.Now()
	must(t, node.Client.Delete(ctx, &pods[0]))
	awaitCond(t, readyTimeout, name+"'s pod replaced", func() bool {
		now, err := node.WaitPodsReady(ctx, upgradeNamespace, "app="+name, 1, time.Second)
		return err == nil && now[0].UID != pods[0].UID
	})
	t.Logf("%s's pod re-created and ready in %.1fs", name, time.Since(began).Seconds())
}

// librariesHeld counts, for each function library, the Redis nodes (masters and replicas) that
// hold it (polled from a goroutine of its own too: it returns errors rather than failing).
func librariesHeld(ctx context.Context) (map[string]int, error) {
	held := map[string]int{}
	for _, addr := range node.Redis.Addrs() {
		rc := redis.NewClient(&redis.Options{Addr: addr, Password: node.Redis.Password})
		libs, err := rc.FunctionList(ctx, redis.FunctionListQuery{}).Result()
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: FUNCTION LIST: %w", addr, err)
		}
		for _, l := range libs {
			held[l.Name]++
		}
	}
	return held, nil
}

// checkSidecar fails unless app name's pod runs the sidecar image.
func checkSidecar(t *testing.T, ctx context.Context, name, image string) {
	t.Helper()
	pods, err := node.WaitPodsReady(ctx, upgradeNamespace, "app="+name, 1, readyTimeout)
	must(t, err)
	for _, c := range pods[0].Spec.InitContainers {
		if c.Name == injection.ContainerName {
			if c.Image != image {
				t.Errorf("%s's sidecar runs %s, want %s", name, c.Image, image)
			}
			return
		}
	}
	t.Errorf("%s's pod %s has no sidecar", name, pods[0].Name)
}
