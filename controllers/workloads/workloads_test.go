package workloads

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/relay/shardmap"
)

func channel(mods ...func(*heraldv1.NotificationChannel)) *heraldv1.NotificationChannel {
	ch := &heraldv1.NotificationChannel{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "orders", UID: "u1"}}
	for _, m := range mods {
		m(ch)
	}
	return ch
}

func params() Params {
	return Params{
		Map:            shardmap.New("ns", "orders", shardmap.DeliveryDurable, []string{"ns/orders/0.0", "ns/orders/1.3"}),
		RelayImage:     "herald:1",
		RelayResources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
		RedisAddrs:     []string{"r1:6379", "r2:6379"},
	}
}

func TestDeployment(t *testing.T) {
	tests := map[string]struct {
		ch        *heraldv1.NotificationChannel
		p         Params
		wantImage string
		wantMem   string
		wantArgs  []string
		spread    bool
	}{
		"defaults": {ch: channel(), p: params(), wantImage: "herald:1", wantMem: "256Mi", spread: true,
			wantArgs: []string{"--shard=1", "--redis-addresses=r1:6379,r2:6379", "--redis-username=$(HERALD_REDIS_USERNAME)"}},
		"overrides": {ch: channel(func(c *heraldv1.NotificationChannel) {
			c.Spec.Relay.Image = "mine:2"
			c.Spec.Relay.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
			c.Spec.Relay.Affinity = &corev1.Affinity{}
		}), p: params(), wantImage: "mine:2", wantMem: "1Gi", spread: false},
		// 64Mi + 4 x (6 x 16 MiB + 64 KiB), to whole MiB; a limit the channel sets is kept.
		"large messages": {ch: channel(func(c *heraldv1.NotificationChannel) { c.Spec.MaxMessageBytes = 16 << 20 }),
			p: params(), wantImage: "herald:1", wantMem: "449Mi", spread: true},
		"large messages, own limit": {ch: channel(func(c *heraldv1.NotificationChannel) {
			c.Spec.MaxMessageBytes = 16 << 20
			c.Spec.Relay.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}}
		}), p: params(), wantImage: "herald:1", wantMem: "128Mi", spread: true},
		"limits": {ch: channel(func(c *heraldv1.NotificationChannel) {
			c.Spec.Relay.Limits = &heraldv1.RelayLimits{MaxSubscribersPerCaller: ptr(int32(500)), ReplaysPerSecondPerCaller: ptr(int32(5))}
		}), p: params(), wantImage: "herald:1", wantMem: "256Mi", spread: true,
			wantArgs: []string{"--max-subscribers-per-caller=500", "--replay-rate-per-caller=5"}},
		"log level": {ch: channel(func(c *heraldv1.NotificationChannel) { c.Spec.Relay.LogLevel = "debug" }),
			p: func() Params { p := params(); p.RelayLogLevel = "warn"; return p }(), wantImage: "herald:1", wantMem: "256Mi", spread: true,
			wantArgs: []string{"--log-level=debug"}},
		"operator's log level": {ch: channel(), p: func() Params { p := params(); p.RelayLogLevel = "warn"; return p }(),
			wantImage: "herald:1", wantMem: "256Mi", spread: true, wantArgs: []string{"--log-level=warn"}},
		"tls": {ch: channel(), p: func() Params {
			p := params()
			p.RedisTLS = &RedisTLS{RedisTLS: heraldv1.RedisTLS{ServerName: "redis.example", InsecureSkipVerify: true,
				CASecretRef: &heraldv1.SecretKeyRef{Name: "redis-ca", Key: "bundle.pem"}, ClientCertSecretRef: &heraldv1.SecretRef{Name: "redis-client"}}}
			return p
		}(), wantImage: "herald:1", wantMem: "256Mi", spread: true,
			wantArgs: []string{"--redis-tls", "--redis-tls-server-name=redis.example", "--redis-tls-insecure-skip-verify",
				"--redis-tls-ca-file=/etc/herald-redis-ca/ca.crt",
				"--redis-tls-cert-file=/etc/herald-redis-client/tls.crt", "--redis-tls-key-file=/etc/herald-redis-client/tls.key"}},
		"default Redis over TLS": {ch: channel(), p: func() Params {
			p := params()
			p.RedisTLS = &RedisTLS{CAPEM: "-----BEGIN CERTIFICATE-----"}
			return p
		}(), wantImage: "herald:1", wantMem: "256Mi", spread: true,
			wantArgs: []string{"--redis-tls", "--redis-tls-ca-file=/etc/herald/redis-ca.crt"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := Deployment(tc.ch, tc.p, 1)
			c := d.Spec.Template.Spec.Containers[0]
			if d.Name != "orders-shard-1" || c.Image != tc.wantImage || c.Resources.Limits.Memory().String() != tc.wantMem {
				t.Fatalf("got %s image %s memory %s", d.Name, c.Image, c.Resources.Limits.Memory())
			}
			for _, a := range tc.wantArgs {
				if !slices.Contains(c.Args, a) {
					t.Errorf("args %v lack %s", c.Args, a)
				}
			}
			if got := len(d.Spec.Template.Spec.TopologySpreadConstraints) > 0; got != tc.spread {
				t.Errorf("topology spread %v, want %v (an explicit affinity replaces it)", got, tc.spread)
			}
			if l := d.Spec.Template.Spec.EnableServiceLinks; l == nil || *l {
				t.Error("relay pods must not get Services' HERALD_*_PORT variables (they would set flags)")
			}
			if d.Spec.Selector.MatchLabels[LabelShard] != "1" || d.Spec.Template.Labels[LabelShard] != "1" {
				t.Error("the selector must pick this shard's pods only")
			}
			if tc.p.RedisTLS != nil && tc.p.RedisTLS.CASecretRef != nil {
				volumes := map[string]corev1.Volume{}
				for _, v := range d.Spec.Template.Spec.Volumes {
					volumes[v.Name] = v
				}
				mounts := map[string]string{}
				for _, m := range c.VolumeMounts {
					mounts[m.Name] = m.MountPath
				}
				if v := volumes["redis-ca"]; v.Secret == nil || v.Secret.SecretName != "redis-ca" || v.Secret.Items[0].Key != "bundle.pem" || mounts["redis-ca"] != "/etc/herald-redis-ca" {
					t.Errorf("the CA Secret is not mounted: %+v", v)
				}
				if v := volumes["redis-client-cert"]; v.Secret == nil || v.Secret.SecretName != "redis-client" || mounts["redis-client-cert"] != "/etc/herald-redis-client" {
					t.Errorf("the client certificate Secret is not mounted: %+v", v)
				}
			}
			if d.OwnerReferences[0].UID != "u1" || !*d.OwnerReferences[0].Controller {
				t.Error("the channel must control the Deployment")
			}
		})
	}
}

func TestPodTemplateTakesSpecLabelsAnnotationsAndPriority(t *testing.T) {
	ch := channel(func(c *heraldv1.NotificationChannel) {
		c.Spec.Relay.PodLabels = map[string]string{"team": "payments", LabelComponent: "stolen", LabelShard: "7"}
		c.Spec.Relay.PodAnnotations = map[string]string{"sidecar.istio.io/inject": "false", CredentialsHashAnnotation: "forged"}
		c.Spec.Relay.PriorityClassName = "realtime"
	})
	p := params()
	p.Password = "pw"
	d := Deployment(ch, p, 1)
	tmpl := d.Spec.Template
	if tmpl.Labels["team"] != "payments" || tmpl.Labels[LabelComponent] != "relay" || tmpl.Labels[LabelShard] != "1" {
		t.Fatalf("pod labels %v: want the spec's added and the operator's selector labels kept", tmpl.Labels)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if tmpl.Labels[k] != v {
			t.Fatalf("the selector %v no longer matches the pods %v", d.Spec.Selector.MatchLabels, tmpl.Labels)
		}
	}
	if tmpl.Annotations["sidecar.istio.io/inject"] != "false" || tmpl.Annotations[CredentialsHashAnnotation] == "forged" {
		t.Fatalf("pod annotations %v: want the spec's added and the operator's own kept", tmpl.Annotations)
	}
	if tmpl.Spec.PriorityClassName != "realtime" {
		t.Fatalf("priorityClassName %q", tmpl.Spec.PriorityClassName)
	}
	if d.Labels["team"] != "" {
		t.Fatalf("pod labels belong to the pods, not the Deployment: %v", d.Labels)
	}
}

func TestPodTemplateRollsWhenPasswordOrCAChanges(t *testing.T) {
	annotations := func(password, ca string) map[string]string {
		p := params()
		p.Password = password
		if ca != "" {
			p.RedisTLS = &RedisTLS{CAPEM: ca}
		}
		return Deployment(channel(), p, 0).Spec.Template.Annotations
	}
	base := annotations("pw1", "ca1")
	if base[CredentialsHashAnnotation] == "" || base[RedisCAHashAnnotation] == "" || strings.Contains(base[CredentialsHashAnnotation], "pw1") {
		t.Fatalf("want both hashes, and no password in clear: %v", base)
	}
	if a := annotations("pw2", "ca1"); a[CredentialsHashAnnotation] == base[CredentialsHashAnnotation] || a[RedisCAHashAnnotation] != base[RedisCAHashAnnotation] {
		t.Fatalf("a new password must change only the credentials hash: %v vs %v", a, base)
	}
	if a := annotations("pw1", "ca2"); a[RedisCAHashAnnotation] == base[RedisCAHashAnnotation] || a[CredentialsHashAnnotation] != base[CredentialsHashAnnotation] {
		t.Fatalf("a new CA must change only the CA hash: %v vs %v", a, base)
	}
	if a := annotations("", ""); a != nil {
		t.Fatalf("nothing to roll on, no annotations: %v", a)
	}
	// A CA the relays mount from spec.redis.tls.caSecretRef rolls them too.
	secretCA := func(ca string) string {
		p := params()
		p.RedisTLS = &RedisTLS{RedisTLS: heraldv1.RedisTLS{CASecretRef: &heraldv1.SecretKeyRef{Name: "redis-ca"}}, SecretCA: []byte(ca)}
		return Deployment(channel(), p, 0).Spec.Template.Annotations[RedisCAHashAnnotation]
	}
	if a, b := secretCA("ca1"), secretCA("ca2"); a == "" || a == b {
		t.Fatalf("the CA Secret's content must set the CA hash: %q, %q", a, b)
	}
}

func TestConfigMapShipsTheDefaultRedisCA(t *testing.T) {
	p := params()
	cm, err := ConfigMap(channel(), p)
	if err != nil || len(cm.Data) != 1 {
		t.Fatalf("without TLS the ConfigMap holds the shard map only: %v %v", cm.Data, err)
	}
	p.RedisTLS = &RedisTLS{CAPEM: "-----BEGIN CERTIFICATE-----\n"}
	if cm, _ = ConfigMap(channel(), p); cm.Data[RedisCAKey] != p.RedisTLS.CAPEM {
		t.Fatalf("the default Redis CA is not shipped: %v", cm.Data)
	}
	p.RedisTLS = &RedisTLS{RedisTLS: heraldv1.RedisTLS{CASecretRef: &heraldv1.SecretKeyRef{Name: "redis-ca"}}}
	if cm, _ = ConfigMap(channel(), p); len(cm.Data) != 1 {
		t.Fatalf("spec.redis.tls.caSecretRef is mounted from its Secret, not copied: %v", cm.Data)
	}
}

func TestNetworkPolicyAdmitsOwnAndAccessNamespaces(t *testing.T) {
	ch := channel(func(c *heraldv1.NotificationChannel) { c.Spec.Access.Namespaces = []string{"web", "jobs"} })
	np := NetworkPolicy(ch, nil)
	got := np.Spec.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values
	if !slices.Equal(got, []string{"ns", "web", "jobs"}) || len(np.Spec.Ingress[0].From) != 1 {
		t.Fatalf("admitted namespaces %v (%d peers)", got, len(np.Spec.Ingress[0].From))
	}
	monitoring := &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}
	np = NetworkPolicy(ch, monitoring)
	if from := np.Spec.Ingress[0].From; len(from) != 2 || from[1].NamespaceSelector != monitoring {
		t.Fatalf("Prometheus's namespaces are not admitted: %+v", from)
	}
}

func TestReplicasDefault(t *testing.T) {
	if Replicas(channel()) != 2 {
		t.Fatal("relays default to 2 per shard")
	}
	three := int32(3)
	if Replicas(channel(func(c *heraldv1.NotificationChannel) { c.Spec.Relay.Replicas = &three })) != 3 {
		t.Fatal("spec.relay.replicas is honoured")
	}
}

// Relays pull their image as the channel says, else as the operator says.
func TestPullPolicyAndSecrets(t *testing.T) {
	p := params()
	p.PullPolicy, p.PullSecrets = corev1.PullAlways, []corev1.LocalObjectReference{{Name: "operator-regcred"}}
	d := Deployment(channel(), p, 0)
	if c := d.Spec.Template.Spec.Containers[0]; c.ImagePullPolicy != corev1.PullAlways || d.Spec.Template.Spec.ImagePullSecrets[0].Name != "operator-regcred" {
		t.Fatalf("the operator's pull settings: %s %v", c.ImagePullPolicy, d.Spec.Template.Spec.ImagePullSecrets)
	}
	d = Deployment(channel(func(c *heraldv1.NotificationChannel) {
		c.Spec.Relay.ImagePullPolicy = corev1.PullIfNotPresent
		c.Spec.Relay.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "team-regcred"}}
	}), p, 0)
	if c := d.Spec.Template.Spec.Containers[0]; c.ImagePullPolicy != corev1.PullIfNotPresent ||
		len(d.Spec.Template.Spec.ImagePullSecrets) != 1 || d.Spec.Template.Spec.ImagePullSecrets[0].Name != "team-regcred" {
		t.Fatalf("the channel's pull settings: %s %v", c.ImagePullPolicy, d.Spec.Template.Spec.ImagePullSecrets)
	}
}

// A shard's relays (and an edge's pods) spread over zones and nodes, and leave a lost node after
// the operator's toleration instead of Kubernetes' 300 s, unless the channel tolerates those
// taints itself.
func TestRelaysSpreadAndLeaveALostNode(t *testing.T) {
	p := params()
	p.NodeLostToleration = 10 * time.Second
	d := Deployment(channel(), p, 0)
	var keys []string
	for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		keys = append(keys, c.TopologyKey)
	}
	if !slices.Equal(keys, []string{corev1.LabelTopologyZone, corev1.LabelHostname}) {
		t.Errorf("spread over %v, want zones, then nodes", keys)
	}
	seconds := func(tols []corev1.Toleration) map[string]int64 {
		out := map[string]int64{}
		for _, tol := range tols {
			if tol.Effect == corev1.TaintEffectNoExecute && tol.TolerationSeconds != nil {
				out[tol.Key] = *tol.TolerationSeconds
			}
		}
		return out
	}
	want := map[string]int64{corev1.TaintNodeNotReady: 10, corev1.TaintNodeUnreachable: 10}
	if got := seconds(d.Spec.Template.Spec.Tolerations); !maps.Equal(got, want) {
		t.Errorf("relay tolerations %v, want %v", got, want)
	}
	own := int64(120)
	ch := channel(func(c *heraldv1.NotificationChannel) {
		c.Spec.Relay.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &own}}
	})
	got := seconds(Deployment(ch, p, 0).Spec.Template.Spec.Tolerations)
	if want := map[string]int64{corev1.TaintNodeNotReady: 10, corev1.TaintNodeUnreachable: 120}; !maps.Equal(got, want) {
		t.Errorf("with the channel's own toleration: %v, want %v", got, want)
	}
	p.NodeLostToleration = 0
	if tols := Deployment(channel(), p, 0).Spec.Template.Spec.Tolerations; len(tols) != 0 {
		t.Errorf("with no toleration configured: %v, want Kubernetes' default (none on the template)", tols)
	}
}
