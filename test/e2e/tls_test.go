//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/hack/localstack"
	"github.com/heraldhq/herald/relay/shardmap"
)

// TestDefaultRedisOverTLS runs a stack of its own whose Redis Cluster speaks only TLS, with the
// manager given the cluster's CA (--redis-tls --redis-tls-ca-file), as the chart's
// redis.tls.enabled and redis.tls.caSecret do. A channel without spec.redis must become Ready:
// the operator reaches the masters on their TLS ports, and the relays, which cannot read the
// operator's files, trust the CA the operator ships in the channel's shard map ConfigMap. A
// message published to a shard relay then reaches a subscriber of it.
func TestDefaultRedisOverTLS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opt := stackOptions
	opt.RedisBasePort += 10
	opt.RedisTLS = true
	opt.Dir = filepath.Join(opt.Dir, "tls")
	st, err := localstack.StartStack(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { must(t, st.Stop()) }()
	k8s := st.Client

	const ns, name = "tls", "alerts"
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	one, maxLen := int32(1), int64(1000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: heraldv1.NotificationChannelSpec{Shards: 2, Relay: heraldv1.RelaySpec{Replicas: &one}, DeletionPolicy: heraldv1.DeletionDelete,
			Retention: &heraldv1.Retention{MaxLength: &maxLen}},
	}
	must(t, k8s.Create(ctx, ch))
	ch, err = localstack.WaitChannelReady(ctx, k8s, client.ObjectKeyFromObject(ch), readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ch.Status.Shards {
		if !slices.Contains(st.RedisAddrs, s.Node) {
			t.Fatalf("shard %d is placed on %q, not on one of the cluster's TLS ports %v", s.Index, s.Node, st.RedisAddrs)
		}
	}
	var cm corev1.ConfigMap
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.ConfigMapName(name)}, &cm))
	ca, err := os.ReadFile(st.RedisCAFile())
	must(t, err)
	if cm.Data[workloads.RedisCAKey] != string(ca) {
		t.Fatalf("the shard map ConfigMap does not carry the default Redis's CA under %s", workloads.RedisCAKey)
	}
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	must(t, err)

	// Subscribe to the shard of key "k" from the start of its stream, then publish to it.
	shard := m.ShardFor("k")
	addrs := st.Runner.ReadyAddrs(ns, shardmap.ShardDeploymentName(name, shard))
	if len(addrs) == 0 {
		t.Fatal("the channel is Ready but its shard relay is not")
	}
	base := "http://" + addrs[0] + "/v1/channels/" + name
	token, err := st.ServiceAccountToken(ctx, ns, "app", localstack.TokenAudience, time.Hour, true)
	must(t, err)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events?key=k&since=0-0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: %s", resp.Status)
	}
	if code := postStatus(t, base+"/messages?key=k", token); code != http.StatusAccepted {
		t.Fatalf("publish over TLS: %d, want 202", code)
	}
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				got <- data
				return
			}
		}
		close(got)
	}()
	select {
	case data, ok := <-got:
		if !ok || !strings.Contains(data, `"probe":true`) {
			t.Fatalf("the subscriber got %q, want the published message", data)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the published message did not reach the subscriber within 20s")
	}
}
