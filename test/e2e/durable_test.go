//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/hack/localcluster"
	"github.com/heraldhq/herald/relay/shardmap"
)

// The load. The issue asks for 10,000 messages and 50 subscribers; this machine (2 cores,
// shared) runs them in about 20 s of publishing.
const (
	messages       = 10000
	keys           = 100 // k-0 .. k-99
	workers        = 10
	rate           = 500.0 // messages per second, in total
	wholeSSE       = 10    // whole-channel subscribers over SSE
	wholeWS        = 10    // ... over WebSocket
	perKeySSE      = 15    // per-key subscribers over SSE
	perKeyWS       = 15    // ... over WebSocket
	killMasterAt   = 2500  // acknowledged messages before the Redis master is killed
	killRelayAt    = 6000  // ... before a relay replica is killed
	dropAt         = 4000  // ... before every 5th subscriber's connection is cut (it resumes with Last-Event-ID)
	namespace      = "e2e"
	channel        = "events"
	friend         = "e2e-friend" // a namespace spec.access lists
	intruder       = "e2e-intruder"
	readyTimeout   = 2 * time.Minute
	deliverTimeout = 90 * time.Second
)

func keyOf(seq int) string { return "k-" + strconv.Itoa(seq%keys) }

func TestDurableChannel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k8s := node.Client

	// 1. A 3-shard Durable channel becomes Ready with its shards on distinct masters.
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	replicas, maxLen := int32(2), int64(1_000_000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: channel},
		Spec: heraldv1.NotificationChannelSpec{
			Shards: 3, Delivery: heraldv1.DeliveryDurable,
			// Both bounds: the publish script then also trims by age (XTRIM MINID).
			Retention:      &heraldv1.Retention{MaxLength: &maxLen, MaxAge: &metav1.Duration{Duration: time.Hour}},
			Relay:          heraldv1.RelaySpec{Replicas: &replicas},
			Access:         heraldv1.AccessSpec{Namespaces: []string{friend}},
			DeletionPolicy: heraldv1.DeletionDelete,
		},
	}
	applied := time.Now()
	if err := k8s.Create(ctx, ch); err != nil {
		t.Fatal(err)
	}
	ch, err := localcluster.WaitChannelReady(ctx, k8s, client.ObjectKeyFromObject(ch), readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("channel Ready %.1fs after it was applied", time.Since(applied).Seconds())
	nodes := map[string]int{}
	for _, s := range ch.Status.Shards {
		nodes[s.Node] = int(s.Index)
	}
	if len(ch.Status.Shards) != 3 || len(nodes) != 3 {
		t.Fatalf("want 3 shards on 3 distinct masters, got %+v", ch.Status.Shards)
	}
	var cm corev1.ConfigMap
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: shardmap.ConfigMapName(channel)}, &cm); err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	if err != nil {
		t.Fatal(err)
	}
	// Ready needs one relay per shard; the test wants every replica of every shard ready.
	awaitCond(t, readyTimeout, "every relay ready", func() bool {
		for i := range m.Shards {
			var d appsv1.Deployment
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: shardmap.ShardDeploymentName(channel, i)}, &d); err != nil ||
				d.Status.ReadyReplicas != replicas || d.Status.ObservedGeneration != d.Generation || len(relayPods(t, ctx, namespace, channel, i)) != int(replicas) {
				return false
			}
		}
		return true
	})

	// Shard relays let only callers with a token in: a request without one is refused.
	relayURL := "http://" + relayAddr(relayPods(t, ctx, namespace, channel, 0)[0]) + "/v1/channels/" + channel + "/messages?key=" + keyOf(0)
	if code := postStatus(t, relayURL, ""); code != http.StatusUnauthorized {
		t.Errorf("publish to a shard relay without a token: %d, want 401", code)
	}

	// 2. Two app pods with injected sidecars (one publishes), 50 subscribers split between
	// them: whole channel and per key, SSE and WebSocket.
	var sidecars []string
	for _, name := range []string{"app-a", "app-b"} {
		pod, base := startApp(t, ctx, namespace, name, channel)
		checkInjected(t, pod)
		sidecars = append(sidecars, base)
	}
	// A pod of a namespace spec.access lists publishes; one of a namespace it does not list is
	// refused by the relays, whose TokenReview says where the pod's token comes from.
	_, friendURL := startApp(t, ctx, friend, "app", namespace+"/"+channel)
	friendPost := friendURL + "/v1/channels/" + channel + "/messages?key=" + keyOf(1)
	if code := postStatus(t, friendPost, ""); code != http.StatusAccepted {
		t.Errorf("publish from namespace %s, which spec.access lists: %d, want 202", friend, code)
	}
	intruderURL := startRefusedApp(t, ctx, intruder, "app", namespace+"/"+channel)
	intruderPost := intruderURL + "/v1/channels/" + channel + "/messages?key=" + keyOf(1)
	if code := postStatus(t, intruderPost, ""); code != http.StatusForbidden {
		t.Errorf("publish from namespace %s, which spec.access does not list: %d, want 403", intruder, code)
	}
	subCtx, stopSubs := context.WithCancel(ctx)
	var subsDone sync.WaitGroup
	var subs []*subscriber
	add := func(n int, kind string, ws bool, key func(i int) string) {
		for i := range n {
			s := newSubscriber(m, sidecars[len(subs)%2], fmt.Sprintf("%s-%d", kind, i), key(i), ws)
			s.start(subCtx, &subsDone)
			subs = append(subs, s)
		}
	}
	whole := func(int) string { return "" }
	add(wholeSSE, "whole-sse", false, whole)
	add(wholeWS, "whole-ws", true, whole)
	add(perKeySSE, "key-sse", false, func(i int) string { return keyOf(i * 7) })
	add(perKeyWS, "key-ws", true, func(i int) string { return keyOf(i*7 + 3) })
	defer func() { stopSubs(); subsDone.Wait() }()
	awaitConnected(t, subs)

	// 3. Publish; kill the master of shard 0 and a relay replica of shard 1 on the way.
	masterAddr := ch.Status.Shards[0].Node
	masterPort, _ := strconv.Atoi(masterAddr[strings.LastIndex(masterAddr, ":")+1:])
	var killedMasterAt, killedRelayAt time.Time
	var killedRelay corev1.Pod
	var subs0 float64
	dropped := false
	pl := &publishLog{acked: map[int]ack{}}
	pubDone := make(chan struct{})
	began := time.Now()
	go func() {
		defer close(pubDone)
		publishAll(ctx, pl, sidecars[0], m, messages, workers, rate, keyOf, 60*time.Second)
	}()
	for done := false; !done; {
		select {
		case <-pubDone:
			done = true
		case <-time.After(50 * time.Millisecond):
		}
		n := pl.count()
		if killedMasterAt.IsZero() && n >= killMasterAt {
			killRedis(t, masterPort)
			killedMasterAt = time.Now()
			t.Logf("killed Redis master %s (shard 0) with SIGKILL after %d acknowledged messages", masterAddr, n)
		}
		if !dropped && n >= dropAt {
			for i := 0; i < len(subs); i += 5 {
				subs[i].drop()
			}
			dropped = true
			t.Logf("cut the connections of %d subscribers after %d acknowledged messages", len(subs)/5, n)
		}
		if killedRelayAt.IsZero() && n >= killRelayAt {
			killedRelay, subs0 = deleteRelayPod(t, ctx, 1)
			killedRelayAt = time.Now()
			t.Logf("deleted relay pod %s (it served %.0f subscriber streams) after %d acknowledged messages", killedRelay.Name, subs0, n)
		}
	}
	published := time.Since(began)
	t.Logf("published: %d acknowledged, %d given up, in %.1fs; %d attempts, %d retries; last error: %v",
		len(pl.acked), len(pl.failed), published.Seconds(), pl.attempts.Load(), pl.retries.Load(), pl.lastErr.Load())
	if killedMasterAt.IsZero() || killedRelayAt.IsZero() || !dropped {
		t.Fatalf("the disruptions did not happen during the load (master %v, relay %v, subscribers cut %v)", killedMasterAt, killedRelayAt, dropped)
	}
	if len(pl.failed) > 0 {
		t.Errorf("%d messages were never acknowledged (first: %d)", len(pl.failed), pl.failed[0])
	}

	// The ReplicaSet replaced the deleted relay pod and the Deployment is whole again.
	awaitCond(t, readyTimeout, "the deleted relay pod replaced and the shard's relays ready", func() bool {
		pods := relayPods(t, ctx, namespace, channel, 1)
		for _, p := range pods {
			if p.Name == killedRelay.Name {
				return false
			}
		}
		return len(pods) == int(replicas)
	})
	t.Logf("relay pod %s replaced: shard 1 has %d ready relays %.1fs after the delete", killedRelay.Name, replicas, time.Since(killedRelayAt).Seconds())

	// 4. What Redis lost is what is acknowledged but no longer in the shard's stream.
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: node.Redis.Addrs(), Password: node.Redis.Password})
	defer cluster.Close()
	lost := lostByRedis(t, ctx, cluster, m, pl)

	awaitDelivered(t, subs, pl, lost)
	stopSubs()
	subsDone.Wait()

	// 5. Exactly once, in per-shard order; losses reported as rollback gaps.
	var deliveries, dups, disorder, reconnects, rollbackGaps, lostMissing int
	for i, s := range subs {
		v := check(s.snapshot(), pl.expectedBy(s), lost)
		deliveries += v.delivered
		dups += v.duplicates
		disorder += v.outOfOrder
		reconnects += int(s.reconnects.Load())
		if i%5 == 0 && s.reconnects.Load() < 1 {
			t.Errorf("%s was cut but did not reconnect", s.name)
		}
		rollbackGaps += v.rollbackGaps
		lostMissing += v.missingLost
		if v.duplicates > 0 && dups == v.duplicates {
			dumpEvents(t, s)
		}
		switch {
		case v.duplicates > 0:
			t.Errorf("%s: %d duplicate deliveries (e.g. %s)", s.name, v.duplicates, v.example)
		case v.outOfOrder > 0:
			t.Errorf("%s: %d deliveries out of shard order (e.g. %s)", s.name, v.outOfOrder, v.example)
		case len(v.missingUnreported) > 0:
			t.Errorf("%s: %d acknowledged messages neither delivered nor reported lost (e.g. seq %d); last error %v",
				s.name, len(v.missingUnreported), v.missingUnreported[0], s.lastErr.Load())
		case v.otherGaps > 0:
			t.Errorf("%s: %d gap events other than rollback (e.g. %s)", s.name, v.otherGaps, v.example)
		}
	}
	t.Logf("delivered %d events to %d subscribers: %d duplicates, %d out of order, %d reconnects; "+
		"Redis lost %d acknowledged entries (%d deliveries missing because of it, %d rollback gaps reported)",
		deliveries, len(subs), dups, disorder, reconnects, len(lost), lostMissing, rollbackGaps)
	if len(lost) > 0 && rollbackGaps == 0 {
		t.Errorf("Redis lost %d acknowledged entries and no subscriber got a rollback gap", len(lost))
	}
	reportRecovery(t, subs[0], 0, killedMasterAt, pl)

	// 6. Delete: relays stop, keys and ACL users are gone from every node.
	restartRedis(t, ctx, masterPort)
	if err := k8s.Delete(ctx, ch); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	awaitCond(t, 90*time.Second, "the channel deleted (finalizer done)", func() bool {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(ch), &heraldv1.NotificationChannel{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("channel deleted %.1fs after the delete", time.Since(deleted).Seconds())
	for _, addr := range node.Redis.Addrs() {
		rc := redis.NewClient(&redis.Options{Addr: addr, Password: node.Redis.Password})
		keys, err := scanAll(ctx, rc, shardmap.KeyPattern(namespace, channel))
		if err != nil {
			t.Errorf("%s: SCAN: %v", addr, err)
		} else if len(keys) > 0 {
			t.Errorf("%s still holds %d keys of the channel, e.g. %s", addr, len(keys), keys[0])
		}
		if _, err := rc.Do(ctx, "ACL", "GETUSER", shardmap.ACLUser(namespace, channel)).Result(); !errors.Is(err, redis.Nil) {
			t.Errorf("%s: ACL user %s is still there (or: %v)", addr, shardmap.ACLUser(namespace, channel), err)
		}
		rc.Close()
	}
	// The garbage collector deletes what the channel owned; its relay pods go with it.
	awaitCond(t, readyTimeout, "the channel's relay Deployments and pods gone", func() bool {
		var deps appsv1.DeploymentList
		var pods corev1.PodList
		_ = k8s.List(ctx, &deps, client.InNamespace(namespace))
		_ = k8s.List(ctx, &pods, client.InNamespace(namespace), client.HasLabels{"app.kubernetes.io/managed-by"})
		return len(deps.Items) == 2 && len(pods.Items) == 0 // app-a and app-b stay
	})
}

// awaitConnected waits until every subscriber has its stream.
func awaitConnected(t *testing.T, subs []*subscriber) {
	t.Helper()
	awaitCond(t, 30*time.Second, "every subscriber connected", func() bool {
		for _, s := range subs {
			if !s.isConnected() {
				return false
			}
		}
		return true
	})
}

// awaitDelivered waits until every subscriber got every acknowledged message but those Redis
// lost (reported as gaps instead), and says which did not within deliverTimeout.
func awaitDelivered(t *testing.T, subs []*subscriber, pl *publishLog, lost map[string]bool) {
	t.Helper()
	var last []string
	if err := await(deliverTimeout, func() bool {
		last = last[:0]
		for _, s := range subs {
			if v := check(s.snapshot(), pl.expectedBy(s), lost); len(v.missingUnreported) > 0 {
				last = append(last, fmt.Sprintf("%s: %d missing", s.name, len(v.missingUnreported)))
			}
		}
		return len(last) == 0
	}); err != nil {
		t.Errorf("not every subscriber got every acknowledged message within %s: %s", deliverTimeout, strings.Join(last, "; "))
	}
}

// verdict is what one subscriber got, against what it should have.
type verdict struct {
	delivered, duplicates, outOfOrder, rollbackGaps, otherGaps, missingLost int
	missingUnreported                                                       []int // seqs
	example                                                                 string
}

// dumpEvents writes a subscriber's events, in arrival order per shard, next to the logs.
func dumpEvents(t *testing.T, s *subscriber) {
	var b strings.Builder
	for shard, evs := range s.snapshot() {
		for _, e := range evs {
			fmt.Fprintf(&b, "%d %s %s seq=%d key=%s gap=%s cursor=%s\n", shard, e.at.Format("15:04:05.000000"), e.raw, e.seq, e.key, e.gap, e.event)
		}
	}
	path := filepath.Join(os.TempDir(), "herald-e2e-events-"+s.name+".txt")
	_ = os.WriteFile(path, []byte(b.String()), 0o644)
	t.Logf("%s's events: %s", s.name, path)
}

// note keeps the first example of a problem.
func (v *verdict) note(s string) {
	if v.example == "" {
		v.example = s
	}
}

// check compares a subscriber's events with the acknowledged messages it should have got.
// lost holds the "shard/id"s Redis lost: such a message may be missing, if the subscriber got a
// rollback gap on its shard.
func check(got map[int][]received, want []ack, lost map[string]bool) verdict {
	var v verdict
	seen := map[string]int{}  // id -> deliveries
	seqID := map[int]string{} // seq -> id
	rolledBack := map[int]bool{}
	for shard, evs := range got {
		var prev streamID
		for _, e := range evs {
			if e.isGap {
				if e.gap == "rollback" {
					v.rollbackGaps++
					rolledBack[shard] = true
					prev = streamID{} // delivery continues after the newest surviving entry
				} else {
					v.otherGaps++
					v.note(fmt.Sprintf("shard %d gap %q at %s", shard, e.gap, e.raw))
				}
				continue
			}
			v.delivered++
			sid := strconv.Itoa(shard) + "/" + e.raw
			seen[sid]++
			if seen[sid] > 1 {
				v.duplicates++
				v.note(fmt.Sprintf("shard %d id %s (seq %d) delivered again at %s", shard, e.raw, e.seq, e.at.Format("15:04:05.000")))
			}
			if id, ok := seqID[e.seq]; ok && id != sid {
				v.duplicates++
				v.note(fmt.Sprintf("seq %d stored twice: %s and %s", e.seq, id, sid))
			}
			seqID[e.seq] = sid
			if !prev.less(e.id) && seen[sid] == 1 {
				v.outOfOrder++
				v.note(fmt.Sprintf("shard %d: %s after %d-%d", shard, e.raw, prev.ms, prev.seq))
			}
			prev = e.id
		}
	}
	for _, a := range want {
		if seen[a.sid()] > 0 {
			continue
		}
		if lost[a.sid()] && rolledBack[a.shard] {
			v.missingLost++
			continue
		}
		v.missingUnreported = append(v.missingUnreported, a.seq)
	}
	sort.Ints(v.missingUnreported)
	return v
}

// lostByRedis returns the acknowledged "shard/id"s that are not in their shard's stream any more.
func lostByRedis(t *testing.T, ctx context.Context, c *redis.ClusterClient, m *shardmap.Map, pl *publishLog) map[string]bool {
	t.Helper()
	present := map[string]bool{} // "shard/id"
	for i, s := range m.Shards {
		var entries []redis.XMessage
		err := retry(30*time.Second, func() (err error) {
			entries, err = c.XRange(ctx, s.Stream, "-", "+").Result()
			return err
		})
		if err != nil {
			t.Fatalf("XRANGE %s: %v", s.Stream, err)
		}
		for _, e := range entries {
			present[strconv.Itoa(i)+"/"+e.ID] = true
		}
	}
	lost := map[string]bool{}
	for _, a := range pl.acked {
		if !present[a.sid()] {
			lost[a.sid()] = true
		}
	}
	return lost
}

// reportRecovery logs how long shard stood still after the master kill: from the kill to the
// first acknowledgement, and to the first delivery, of a message first sent after it (messages
// already in flight at the kill do not count).
func reportRecovery(t *testing.T, s *subscriber, shard int, killed time.Time, pl *publishLog) {
	sentAfter := map[int]bool{} // by seq
	var firstAck time.Time
	for _, a := range pl.acked {
		if a.shard != shard || !a.sent.After(killed) {
			continue
		}
		sentAfter[a.seq] = true
		if firstAck.IsZero() || a.at.Before(firstAck) {
			firstAck = a.at
		}
	}
	var firstDelivery time.Time
	for _, e := range s.snapshot()[shard] {
		if !e.isGap && sentAfter[e.seq] && (firstDelivery.IsZero() || e.at.Before(firstDelivery)) {
			firstDelivery = e.at
		}
	}
	t.Logf("master kill on shard %d: first message sent after it acknowledged %.1fs and delivered %.1fs after the kill",
		shard, firstAck.Sub(killed).Seconds(), firstDelivery.Sub(killed).Seconds())
}

// killRedis kills the node on port with SIGKILL, by the PID in the script's pid file.
func killRedis(t *testing.T, port int) {
	t.Helper()
	pid, err := node.Redis.PID(port)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err != nil || !strings.Contains(string(b), "redis-server") {
		t.Fatalf("pid %d of port %d is not a redis-server (%v)", pid, port, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// restartRedis starts a killed node again; it rejoins as a replica. Waits for a healthy cluster.
func restartRedis(t *testing.T, ctx context.Context, port int) {
	t.Helper()
	if err := node.Redis.Restart(port); err != nil {
		t.Fatal(err)
	}
	// Healthy, and the node has replaced what its AOF held with its new master's data.
	awaitCond(t, 60*time.Second, "the restarted node back in a healthy cluster, in sync", func() bool {
		for _, addr := range node.Redis.Addrs() {
			rc := redis.NewClient(&redis.Options{Addr: addr, Password: node.Redis.Password})
			info, err := rc.ClusterInfo(ctx).Result()
			repl, err2 := rc.Info(ctx, "replication").Result()
			rc.Close()
			if err != nil || err2 != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			if strings.HasSuffix(addr, ":"+strconv.Itoa(port)) &&
				!(strings.Contains(repl, "role:slave") && strings.Contains(repl, "master_link_status:up") && strings.Contains(repl, "master_sync_in_progress:0")) {
				return false
			}
		}
		return true
	})
}

// deleteRelayPod deletes, as `kubectl delete pod` does (with its grace period), the ready relay
// pod of shard that serves the most subscribers (the sidecars' upstream streams), so that the
// delete cuts live streams.
func deleteRelayPod(t *testing.T, ctx context.Context, shard int) (corev1.Pod, float64) {
	t.Helper()
	var victim corev1.Pod
	most := -1.0
	for _, p := range relayPods(t, ctx, namespace, channel, shard) {
		if n := subscribersOf(relayAddr(p)); n > most {
			victim, most = p, n
		}
	}
	if victim.Name == "" {
		t.Fatalf("no ready relay pod of shard %d to delete", shard)
	}
	if most < 1 {
		t.Fatalf("no relay pod of shard %d serves a subscriber: the delete would cut no stream", shard)
	}
	must(t, node.Client.Delete(ctx, &victim))
	return victim, most
}

// metricsClient gives up on a relay that does not answer (one on a node that is down).
var metricsClient = &http.Client{Timeout: 3 * time.Second}

// subscribersOf reads herald_relay_subscribers from a relay's /metrics (-1 when unreadable).
func subscribersOf(addr string) float64 { return metric(addr, "herald_relay_subscribers") }

// metric sums the series of a metric at addr's /metrics (-1 when unreadable or absent).
func metric(addr, name string) float64 {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := -1.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				total = max(total, 0) + v
			}
		}
	}
	return total
}

func scanAll(ctx context.Context, c *redis.Client, pattern string) ([]string, error) {
	var out []string
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// postStatus publishes one message with the bearer token (none if empty) and returns the status.
func postStatus(t *testing.T, url, token string) int {
	t.Helper()
	return postBody(t, url, token, `{"probe":true}`)
}

// postBody publishes body with the bearer token (none if empty) and returns the status.
func postBody(t *testing.T, url, token, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// await polls cond every 100 ms until it holds or within passes.
func await(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func awaitCond(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := await(within, cond); err != nil {
		t.Fatalf("%s: not within %s", what, within)
	}
}

func retry(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
