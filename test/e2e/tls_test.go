//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/hack/localcluster"
	"github.com/heraldhq/herald/internal/testing/rediscluster"
	"github.com/heraldhq/herald/relay/shardmap"
)

// TestRedisOverMutualTLS starts a second Redis Cluster on the node's address that speaks only
// TLS and asks clients for a certificate, and upgrades the Herald release to it as the default
// Redis, with its CA and a client certificate from Secrets (the chart's redis.tls values). Two
// channels must become Ready and deliver a message through a shard relay pod:
//   - one on the default Redis: the operator reaches the masters on their TLS ports, and the
//     relays, which cannot read the operator's files, get the CA in the shard map ConfigMap and
//     the client certificate in a Secret of the channel's;
//   - one with spec.redis.tls naming a CA Secret and a kubernetes.io/tls Secret of its own
//     namespace.
//
// Afterwards the release is upgraded back to the plain Redis Cluster.
func TestRedisOverMutualTLS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k8s := node.Client
	tlsRedis := rediscluster.At(node.Redis.Base+10, filepath.Join(node.Dir, "redis-tls"))
	// The same password as the default Redis's: the release keeps its redis-admin Secret.
	tlsRedis.Host, tlsRedis.TLS, tlsRedis.Password = localcluster.NodeIP, true, node.Redis.Password
	must(t, tlsRedis.Up())
	defer func() { must(t, tlsRedis.Down()) }()
	ca, err := os.ReadFile(tlsRedis.CAFile())
	must(t, err)
	cert, err := os.ReadFile(tlsRedis.ClientCertFile())
	must(t, err)
	key, err := os.ReadFile(tlsRedis.ClientKeyFile())
	must(t, err)
	secrets := func(ns string) {
		ensureNamespace(t, ctx, ns)
		must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis-ca"}, Data: map[string][]byte{"ca.crt": ca}}))
		must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis-client"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}))
		must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis-admin-credentials"},
			Data: map[string][]byte{"password": []byte(tlsRedis.Password)}}))
	}

	// The default Redis: the release upgraded to the TLS cluster. The operator presents its own
	// client certificate and issues the relays theirs from the cluster's CA.
	secrets(localcluster.HeraldNamespace)
	// The relays' certificates come from a CA of their own, which Redis trusts besides the one of
	// the operator's certificate (the manager refuses that one for relays).
	relayCA, err := os.ReadFile(tlsRedis.RelayCAFile())
	must(t, err)
	relayCAKey, err := os.ReadFile(tlsRedis.RelayCAKeyFile())
	must(t, err)
	must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: localcluster.HeraldNamespace, Name: "redis-client-ca"},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: relayCA, corev1.TLSPrivateKeyKey: relayCAKey}}))
	must(t, node.InstallHerald(ctx, helmBin, heraldChart,
		"redis.addresses={"+strings.Join(tlsRedis.Addrs()[:3], ",")+"}", "redis.tls.enabled=true",
		"redis.tls.caSecret.name=redis-ca", "redis.tls.clientSecret.name=redis-client",
		"redis.tls.clientCASecret.name=redis-client-ca",
		"manager.allowed.redisAddresses={"+localcluster.NodeIP+":*}"))
	defer func() { must(t, node.InstallHerald(context.Background(), helmBin, heraldChart)) }()
	ch := tlsChannel(t, ctx, tlsRedis, "tls-default", "alerts", nil)
	var cm corev1.ConfigMap
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.ConfigMapName(ch.Name)}, &cm))
	if cm.Data[workloads.RedisCAKey] != string(ca) {
		t.Fatalf("the shard map ConfigMap does not carry the default Redis's CA under %s", workloads.RedisCAKey)
	}
	var issued corev1.Secret
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: workloads.RedisClientCertSecretName(ch)}, &issued))
	block, _ := pem.Decode(issued.Data[corev1.TLSCertKey])
	leaf, err := x509.ParseCertificate(block.Bytes)
	must(t, err)
	if want := shardmap.ACLUser(ch.Namespace, ch.Name); leaf.Subject.CommonName != want {
		t.Fatalf("the relays' client certificate is for %q, want their own %q", leaf.Subject.CommonName, want)
	}
	roundTrip(t, ctx, ch) // Redis (tls-auth-clients yes) accepts the relays' own certificate
	// What the channel's namespace can read, the relays' certificate, opens a TLS connection
	// and nothing more: without the channel user's password Redis answers NOAUTH.
	pair, err := tls.X509KeyPair(issued.Data[corev1.TLSCertKey], issued.Data[corev1.TLSPrivateKeyKey])
	must(t, err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	byCert := redis.NewClient(&redis.Options{Addr: tlsRedis.Addrs()[0], MaxRetries: -1,
		TLSConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}})
	if err := byCert.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("the relays' client certificate alone at Redis: %v; want NOAUTH", err)
	}
	byCert.Close()
	// No namespace but the operator's holds the operator's key.
	var all corev1.SecretList
	must(t, k8s.List(ctx, &all))
	for _, s := range all.Items {
		for k, v := range s.Data {
			if bytes.Contains(v, bytes.TrimSpace(key)) && s.Namespace != localcluster.HeraldNamespace {
				t.Errorf("Secret %s/%s (key %s) holds the operator's client key", s.Namespace, s.Name, k)
			}
		}
	}

	// A channel that brings its own CA and client certificate.
	const ns = "tls-own"
	secrets(ns)
	ch = tlsChannel(t, ctx, tlsRedis, ns, "audit", &heraldv1.RedisSpec{Addresses: tlsRedis.Addrs()[:1],
		CredentialsSecretRef: &heraldv1.CredentialsSecretRef{Name: "redis-admin-credentials"}, TLS: &heraldv1.RedisTLS{
			CASecretRef:         &heraldv1.SecretKeyRef{Name: "redis-ca", Key: "ca.crt"},
			ClientCertSecretRef: &heraldv1.SecretRef{Name: "redis-client"},
		}})
	roundTrip(t, ctx, ch)
	for _, c := range []*heraldv1.NotificationChannel{ch, {ObjectMeta: metav1.ObjectMeta{Namespace: "tls-default", Name: "alerts"}}} {
		must(t, k8s.Delete(ctx, c))
		awaitCond(t, readyTimeout, "channel "+c.Name+" deleted", func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(c), &heraldv1.NotificationChannel{}))
		})
	}
}

// tlsChannel applies a 2-shard channel (one relay per shard) in a new namespace, waits until it
// is Ready and checks that its shards sit on the cluster's TLS ports.
func tlsChannel(t *testing.T, ctx context.Context, tlsRedis *rediscluster.Cluster, ns, name string, redis *heraldv1.RedisSpec) *heraldv1.NotificationChannel {
	t.Helper()
	k8s := node.Client
	ensureNamespace(t, ctx, ns)
	one, maxLen := int32(1), int64(1000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: heraldv1.NotificationChannelSpec{Shards: 2, Relay: heraldv1.RelaySpec{Replicas: &one}, DeletionPolicy: heraldv1.DeletionDelete,
			Retention: &heraldv1.Retention{MaxLength: &maxLen}, Redis: redis},
	}
	must(t, k8s.Create(ctx, ch))
	ch, err := localcluster.WaitChannelReady(ctx, k8s, client.ObjectKeyFromObject(ch), readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ch.Status.Shards {
		if !slices.Contains(tlsRedis.Addrs(), s.Node) {
			t.Fatalf("%s: shard %d is placed on %q, not on one of the cluster's TLS ports %v", name, s.Index, s.Node, tlsRedis.Addrs())
		}
	}
	return ch
}

// roundTrip subscribes to a relay pod of the shard of key "k" from the start of its stream,
// publishes to it and waits for the message, with a token of a service account of the
// channel's namespace (the audience injected sidecars use).
func roundTrip(t *testing.T, ctx context.Context, ch *heraldv1.NotificationChannel) {
	t.Helper()
	var cm corev1.ConfigMap
	must(t, node.Client.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.ConfigMapName(ch.Name)}, &cm))
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	must(t, err)
	shard := m.ShardFor("k")
	var pods []corev1.Pod
	awaitCond(t, readyTimeout, ch.Name+"'s relay of shard "+strconv.Itoa(shard)+" ready", func() bool {
		pods = relayPods(t, ctx, ch.Namespace, ch.Name, shard)
		return len(pods) > 0
	})
	base := "http://" + relayAddr(pods[0]) + "/v1/channels/" + ch.Name
	token := serviceAccountToken(t, ctx, ch.Namespace, "app", ch)
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
