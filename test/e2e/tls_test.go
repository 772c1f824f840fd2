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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/hack/localstack"
	"github.com/heraldhq/herald/relay/shardmap"
)

// TestRedisOverMutualTLS runs a stack of its own whose Redis Cluster speaks only TLS and asks
// clients for a certificate. The manager gets the cluster's CA and a client certificate
// (--redis-tls-ca-file, --redis-tls-cert-file, --redis-tls-key-file), as the chart's
// redis.tls values give them. Two channels must become Ready and deliver a message through a
// shard relay:
//   - one on the default Redis: the operator reaches the masters on their TLS ports, and the
//     relays, which cannot read the operator's files, get the CA in the shard map ConfigMap and
//     the client certificate in a Secret of the channel's;
//   - one with spec.redis.tls naming a CA Secret and a kubernetes.io/tls Secret of its own
//     namespace.
func TestRedisOverMutualTLS(t *testing.T) {
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
	caFile, certFile, keyFile := st.RedisTLSFiles()
	ca, err := os.ReadFile(caFile)
	must(t, err)

	// The default Redis.
	ch := tlsChannel(t, ctx, st, "tls-default", "alerts", nil)
	var cm corev1.ConfigMap
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.ConfigMapName(ch.Name)}, &cm))
	if cm.Data[workloads.RedisCAKey] != string(ca) {
		t.Fatalf("the shard map ConfigMap does not carry the default Redis's CA under %s", workloads.RedisCAKey)
	}
	var copied corev1.Secret
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: workloads.RedisClientCertSecretName(ch)}, &copied))
	if cert, _ := os.ReadFile(certFile); string(copied.Data[corev1.TLSCertKey]) != string(cert) {
		t.Fatal("the channel's Secret does not carry the operator's client certificate")
	}
	roundTrip(t, ctx, st, ch)

	// A channel that brings its own CA and client certificate.
	const ns = "tls-own"
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	cert, err := os.ReadFile(certFile)
	must(t, err)
	key, err := os.ReadFile(keyFile)
	must(t, err)
	must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis-ca"}, Data: map[string][]byte{"ca.crt": ca}}))
	must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis-client"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}))
	ch = tlsChannel(t, ctx, st, ns, "audit", &heraldv1.RedisSpec{Addresses: st.RedisAddrs[:1], TLS: &heraldv1.RedisTLS{
		CASecretRef:         &heraldv1.SecretKeyRef{Name: "redis-ca", Key: "ca.crt"},
		ClientCertSecretRef: &heraldv1.SecretRef{Name: "redis-client"},
	}})
	roundTrip(t, ctx, st, ch)
}

// tlsChannel applies a 2-shard channel (one relay per shard) in a new namespace, waits until it
// is Ready and checks that its shards sit on the cluster's TLS ports.
func tlsChannel(t *testing.T, ctx context.Context, st *localstack.Stack, ns, name string, redis *heraldv1.RedisSpec) *heraldv1.NotificationChannel {
	t.Helper()
	k8s := st.Client
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	one, maxLen := int32(1), int64(1000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: heraldv1.NotificationChannelSpec{Shards: 2, Relay: heraldv1.RelaySpec{Replicas: &one}, DeletionPolicy: heraldv1.DeletionDelete,
			Retention: &heraldv1.Retention{MaxLength: &maxLen}, Redis: redis},
	}
	must(t, k8s.Create(ctx, ch))
	ch, err := localstack.WaitChannelReady(ctx, k8s, client.ObjectKeyFromObject(ch), readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ch.Status.Shards {
		if !slices.Contains(st.RedisAddrs, s.Node) {
			t.Fatalf("%s: shard %d is placed on %q, not on one of the cluster's TLS ports %v", name, s.Index, s.Node, st.RedisAddrs)
		}
	}
	return ch
}

// roundTrip subscribes to the shard relay of key "k" from the start of its stream, publishes
// to it and waits for the message.
func roundTrip(t *testing.T, ctx context.Context, st *localstack.Stack, ch *heraldv1.NotificationChannel) {
	t.Helper()
	var cm corev1.ConfigMap
	must(t, st.Client.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.ConfigMapName(ch.Name)}, &cm))
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	must(t, err)
	shard := m.ShardFor("k")
	addrs := st.Runner.ReadyAddrs(ch.Namespace, shardmap.ShardDeploymentName(ch.Name, shard))
	if len(addrs) == 0 {
		t.Fatalf("%s is Ready but its shard %d relay is not", ch.Name, shard)
	}
	base := "http://" + addrs[0] + "/v1/channels/" + ch.Name
	token, err := st.ServiceAccountToken(ctx, ch.Namespace, "app", localstack.TokenAudience, time.Hour, true)
	must(t, err)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events?key=k&since=0-0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: subscribe: %s", ch.Name, resp.Status)
	}
	if code := postStatus(t, base+"/messages?key=k", token); code != http.StatusAccepted {
		t.Fatalf("%s: publish over TLS: %d, want 202", ch.Name, code)
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
			t.Fatalf("%s: the subscriber got %q, want the published message", ch.Name, data)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: the published message did not reach the subscriber within 20s", ch.Name)
	}
}
