//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/api/meta"
	v1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/hack/localcluster"
	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay/shardmap"
)

// TestEdgeServesTheSampleTracker runs a channel with an edge (spec.edge, two pods) and the
// sample app (config/samples/orders-app) serving its order tracker page and signing its users'
// tokens with the edge's key from a Secret. Tokens the app did not grant are refused at the
// edge's Service: a forged signature, an expired token, another channel's audience (401) and a
// key the token does not grant (403), each with a problem+json body. Then headless Chromium
// loads the page from the app's Service; the page gets its token from the app and follows three
// of its user's keys through the edge's Service: it shows the last two events of each first,
// then every live one, and while it follows, the shard relays send the edges only those keys'
// events (their herald_relay_delivered_total). The edge pod holding the page's stream is deleted:
// the page reconnects through the Service and resumes, and gets every event of its keys once, in
// order, and no other key's.
func TestEdgeServesTheSampleTracker(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k8s := node.Client
	const ns, name, app = "shop", "tracker", "tracker-app"
	ensureNamespace(t, ctx, ns)

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: v1.ObjectMeta{Namespace: ns, Name: "tracker-edge"}, Data: map[string][]byte{"hmac": key}}))
	// The app's Service first: its address is the page's origin, which the edge lets in (CORS).
	appSvc := &corev1.Service{ObjectMeta: v1.ObjectMeta{Namespace: ns, Name: app}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": app},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}},
	}}
	must(t, k8s.Create(ctx, appSvc))
	appURL := "http://" + appSvc.Spec.ClusterIP + ":8080"

	one, two, maxLen := int32(1), int32(2), int64(10000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: v1.ObjectMeta{Namespace: ns, Name: name},
		Spec: heraldv1.NotificationChannelSpec{
			Shards: 3, Delivery: heraldv1.DeliveryDurable, DeletionPolicy: heraldv1.DeletionDelete,
			Retention: &heraldv1.Retention{MaxLength: &maxLen, HistoryPerKey: 5},
			Relay:     heraldv1.RelaySpec{Replicas: &one},
			Edge: &heraldv1.EdgeSpec{
				Replicas:           &two,
				Auth:               heraldv1.EdgeAuth{HMACSecretRef: &heraldv1.KeyRef{Name: "tracker-edge", Key: "hmac"}},
				CORSAllowedOrigins: []string{appURL},
			},
		},
	}
	must(t, k8s.Create(ctx, ch))
	if _, err := localcluster.WaitChannelReady(ctx, k8s, client.ObjectKeyFromObject(ch), readyTimeout); err != nil {
		t.Fatal(err)
	}
	awaitCond(t, readyTimeout, "the edge's 2 pods ready and the channel's EdgeAvailable condition True", func() bool {
		var d appsv1.Deployment
		if k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: workloads.EdgeName(ch)}, &d) != nil || d.Status.ReadyReplicas != 2 {
			return false
		}
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(ch), ch)
		return metav1.IsStatusConditionTrue(ch.Status.Conditions, heraldv1.ConditionEdgeAvailable) && len(edgePods(t, ctx, ch)) == 2
	})
	var edgeSvc corev1.Service
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: workloads.EdgeName(ch)}, &edgeSvc))
	edgeURL := "http://" + edgeSvc.Spec.ClusterIP + ":" + strconv.Itoa(shardmap.RelayPort)

	// The sample app: no sidecar (it neither publishes nor follows here), the page and sessions.
	must(t, k8s.Create(ctx, trackerApp(ns, app, name, edgeURL)))
	if _, err := node.WaitPodsReady(ctx, ns, "app="+app, 1, readyTimeout); err != nil {
		t.Fatal(err)
	}
	var session struct{ Token string }
	awaitCond(t, 30*time.Second, "the sample app to answer a session", func() bool {
		resp, err := http.Get(appURL + "/session?user=42")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&session) == nil && session.Token != ""
	})

	// Refusals, each with a problem+json body: a token signed with another key, an expired one,
	// one for another channel, and the app's own for a key it does not grant.
	events := edgeURL + "/v1/channels/" + name + "/events"
	audience := ns + "/" + name
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	in := time.Now().Add(10 * time.Minute).Unix()
	grant := map[string]any{"follow": []string{"user-42"}}
	for _, c := range []struct {
		what, token, key string
		want             int
	}{
		{"a forged signature", mintToken(t, other, map[string]any{"aud": audience, "sub": "u", "exp": in, "herald": grant}), "user-42", 401},
		{"an expired token", mintToken(t, key, map[string]any{"aud": audience, "sub": "u", "exp": time.Now().Add(-time.Minute).Unix(), "herald": grant}), "user-42", 401},
		{"another channel's audience", mintToken(t, key, map[string]any{"aud": ns + "/other", "sub": "u", "exp": in, "herald": grant}), "user-42", 401},
		{"a key the token does not grant", session.Token, "user-43", 403},
		{"the app's token for its user's key", session.Token, "user-42", 200},
	} {
		resp, err := http.Get(events + "?" + url.Values{"key": {c.key}, "token": {c.token}}.Encode())
		must(t, err)
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		var body []byte
		if resp.StatusCode != http.StatusOK {
			body, _ = io.ReadAll(resp.Body)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.want != 200 && ct != "application/problem+json") {
			t.Errorf("edge, %s: %d %s %s; want %d (a problem+json refusal)", c.what, resp.StatusCode, ct, body, c.want)
		}
	}

	// Publishing: straight to the shard relays, as a pod of the channel's namespace.
	var cm corev1.ConfigMap
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: shardmap.ConfigMapName(name)}, &cm))
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	must(t, err)
	relays := make([]string, len(m.Shards))
	for i := range relays {
		pods := relayPods(t, ctx, ns, name, i)
		if len(pods) != 1 {
			t.Fatalf("shard %d has %d ready relay pods, want 1", i, len(pods))
		}
		relays[i] = relayAddr(pods[0])
	}
	publisher := serviceAccountToken(t, ctx, ns, "publisher", ch)
	followed := []string{"user-42", "user-42/order-1", "user-42/order-2"}
	// Keys on the shards of the followed ones that the page does not follow, published before
	// them: another user's, and one of the user's own the page did not ask for.
	var others []string
	for _, k := range followed {
		for i := 0; ; i++ {
			if o := fmt.Sprintf("user-43/order-%d", i); m.ShardFor(o) == m.ShardFor(k) && !slices.Contains(others, o) {
				others = append(others, o)
				break
			}
		}
	}
	others = append(others, "user-42/order-3")
	post := func(k string, n int) {
		t.Helper()
		u := "http://" + relays[m.ShardFor(k)] + "/v1/channels/" + name + "/messages?key=" + url.QueryEscape(k)
		if code := postBody(t, u, publisher, fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
			t.Fatalf("publish %s n=%d: %d", k, n, code)
		}
	}
	publish := func(from, to int) {
		t.Helper()
		for n := from; n < to; n++ {
			for _, k := range append(slices.Clone(others), followed...) {
				post(k, n)
			}
		}
	}

	publish(0, 4) // the page's first screen: the last 2 of each key, n = 2, 3
	tab := relaytest.OpenTab(t, appURL+"/?"+url.Values{"user": {"42"}, "keys": {strings.Join(followed, ",")}, "history": {"2"}}.Encode())
	var page relaytest.TrackerState
	awaitPage := func(what string, cond func() bool) {
		t.Helper()
		if err := await(time.Minute, func() bool { return tab.Eval(`window.tracker`, &page) == nil && cond() }); err != nil {
			t.Fatalf("the page, %s: not within a minute; it has %+v", what, page)
		}
	}
	awaitPage("its first screen", func() bool { return len(page.Events) >= 2*len(followed) })

	before := deliveredBy(t, relays)
	publish(4, 7)
	awaitPage("the live events", func() bool { return len(page.Events) >= 5*len(followed) })
	// Each shard's last event is one of the page's, so its relay has handled every earlier one.
	if sent, want := deliveredBy(t, relays)-before, float64(3*len(followed)); sent != want {
		t.Errorf("while the page followed %d keys, the shard relays sent %v events of %d published, want %v: its keys' only",
			len(followed), sent, 3*(len(followed)+len(others)), want)
	}

	// The cut: the edge pod that holds the page's stream is deleted at once (no drain), events
	// are published meanwhile, and the page reconnects through the Service to the other pod and
	// resumes after its cursor.
	var victim corev1.Pod
	for _, p := range edgePods(t, ctx, ch) {
		if metric(p.Status.PodIP+":"+strconv.Itoa(workloads.EdgeMetricsPort), "herald_relay_sidecar_subscribers") > 0 {
			victim = p
		}
	}
	if victim.Name == "" {
		t.Fatal("no edge pod reports a subscriber: the page's stream is not at the edge")
	}
	must(t, k8s.Delete(ctx, &victim, client.GracePeriodSeconds(0))) // no drain: the stream breaks
	publish(7, 10)
	awaitPage("its reconnect through the Service", func() bool { return page.Opens >= 2 })
	for _, k := range followed {
		post(k, 1000)
	}
	awaitPage("every key's last event after the cut", func() bool { return page.Has(followed, 1000) })
	page.Check(t, followed, []int{2, 3, 4, 5, 6, 7, 8, 9, 1000})
	t.Logf("the page: %d events, %d opens of its stream, %d sessions", len(page.Events), page.Opens, page.Sessions)
	must(t, k8s.Delete(ctx, ch))
}

// trackerApp runs the sample app (image orders-app) as the tracker's backend of channel: it
// serves the page and signs sessions with the edge's key from the Secret tracker-edge.
func trackerApp(namespace, name, channel, edgeURL string) *appsv1.Deployment {
	one, no, nonRoot := int32(1), false, true
	uid := int64(65532)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: v1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &v1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: v1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: &no,
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Volumes: []corev1.Volume{{Name: "edge-key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tracker-edge"}}}},
					Containers: []corev1.Container{{
						Name: "app", Image: "ghcr.io/heraldhq/orders-app:" + imageTag, ImagePullPolicy: corev1.PullIfNotPresent,
						Env: []corev1.EnvVar{
							{Name: "CHANNEL", Value: channel}, {Name: "PUBLISH_INTERVAL", Value: "0"}, {Name: "FOLLOW", Value: "false"},
							{Name: "EDGE_KEY_FILE", Value: "/etc/edge-key/hmac"}, {Name: "EDGE_URL", Value: edgeURL},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
						},
						Ports:        []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						VolumeMounts: []corev1.VolumeMount{{Name: "edge-key", MountPath: "/etc/edge-key", ReadOnly: true}},
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no,
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
				},
			},
		},
	}
}

// edgePods are the ready pods of the channel's edge.
func edgePods(t *testing.T, ctx context.Context, ch *heraldv1.NotificationChannel) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	must(t, node.Client.List(ctx, &pods, client.InNamespace(ch.Namespace),
		client.MatchingLabels{workloads.LabelChannel: ch.Name, workloads.LabelComponent: "edge"}))
	var ready []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		}) {
			ready = append(ready, p)
		}
	}
	return ready
}

// mintToken signs an end user's token with an HS256 key, as an app's backend does.
func mintToken(t *testing.T, key []byte, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, nil)
	must(t, err)
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	must(t, err)
	return raw
}

// deliveredBy sums herald_relay_delivered_total of the relays at addrs: the events they handed
// to their subscribers' streams.
func deliveredBy(t *testing.T, addrs []string) float64 {
	t.Helper()
	var sum float64
	for _, a := range addrs {
		v := metric(a, "herald_relay_delivered_total")
		if v < 0 {
			t.Fatalf("no herald_relay_delivered_total at %s", a)
		}
		sum += v
	}
	return sum
}
