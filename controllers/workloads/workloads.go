package workloads

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/relay/shardmap"
)

// Labels on every object the operator owns.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "herald-operator"
	LabelChannel   = "notifications.herald.dev/channel"
	LabelShard     = "notifications.herald.dev/shard"
	LabelComponent = "app.kubernetes.io/component"
)

// Secret keys of the relay credentials.
const (
	SecretUsernameKey = "username"
	SecretPasswordKey = "password"
)

const (
	shardMapDir    = "/etc/herald"              // the shard map ConfigMap
	redisCADir     = "/etc/herald-redis-ca"     // the CA of spec.redis.tls.caSecretRef
	redisClientDir = "/etc/herald-redis-client" // the client certificate (tls.crt, tls.key)
)

// RedisCAKey is the key of the shard map ConfigMap that carries the CA bundle of the operator's
// default Redis, for relays in the channel's namespace (a CA bundle is public, like the
// kube-root-ca.crt ConfigMap).
const RedisCAKey = "redis-ca.crt"

// Params is what the builders need besides the channel itself.
type Params struct {
	Map            *shardmap.Map               // placed shards
	RelayImage     string                      // default relay image (spec.relay.image overrides)
	RelayResources corev1.ResourceRequirements // default relay resources (spec.relay.resources overrides)
	RelayLogLevel  string                      // default relay log level (spec.relay.logLevel overrides); "" leaves the relay's
	// PullPolicy and PullSecrets of the relays unless spec.relay sets them.
	PullPolicy  corev1.PullPolicy
	PullSecrets []corev1.LocalObjectReference
	RedisAddrs  []string  // what relays connect to
	RedisTLS    *RedisTLS // nil for plain TCP
	Password    string    // the relays' Redis password; only its hash goes into the pod template
	// NodeLostToleration is how long relays and edges stay bound to a node that is not ready or
	// unreachable before they are evicted and replaced elsewhere; 0 leaves Kubernetes' default
	// (300 s). A channel's own spec.relay.tolerations for those taints win.
	NodeLostToleration time.Duration
}

// Relays read their password and CA bundle once, at start. Hashes of both on the pod template
// roll the relays when either changes.
const (
	CredentialsHashAnnotation = "notifications.herald.dev/credentials-hash"
	RedisCAHashAnnotation     = "notifications.herald.dev/redis-ca-hash"
)

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// RedisTLS is how relays reach Redis over TLS: spec.redis.tls as written (its CA and client
// certificate come from Secrets in the channel's namespace), or the operator's default Redis
// settings, whose CA the operator ships in the shard map ConfigMap and whose client certificate
// in the Secret RedisClientCertSecret builds.
type RedisTLS struct {
	heraldv1.RedisTLS
	CAPEM string // the default Redis's CA bundle; empty: spec.redis.tls.caSecretRef, else the system roots
	// SecretCA is what spec.redis.tls.caSecretRef holds, read by the operator. It only rolls the
	// relays when it changes: they mount the Secret themselves.
	SecretCA []byte
}

func labels(ch *heraldv1.NotificationChannel, component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name": "herald",
		LabelManagedBy:           ManagedBy,
		LabelComponent:           component,
		LabelChannel:             ch.Name,
	}
}

func meta(ch *heraldv1.NotificationChannel, name string, l map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       ch.Namespace,
		Labels:          l,
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ch, heraldv1.GroupVersion.WithKind("NotificationChannel"))},
	}
}

func relaySelector(ch *heraldv1.NotificationChannel, shard int) map[string]string {
	s := map[string]string{LabelChannel: ch.Name, LabelComponent: "relay"}
	if shard >= 0 {
		s[LabelShard] = strconv.Itoa(shard)
	}
	return s
}

// ConfigMap holds the shard map relays read.
func ConfigMap(ch *heraldv1.NotificationChannel, p Params) (*corev1.ConfigMap, error) {
	b, err := json.MarshalIndent(p.Map, "", "  ")
	if err != nil {
		return nil, err
	}
	data := map[string]string{shardmap.ConfigMapKey: string(b)}
	if p.RedisTLS != nil && p.RedisTLS.CAPEM != "" {
		data[RedisCAKey] = p.RedisTLS.CAPEM
	}
	return &corev1.ConfigMap{
		ObjectMeta: meta(ch, shardmap.ConfigMapName(ch.Name), labels(ch, "shardmap")),
		Data:       data,
	}, nil
}

// Secret holds the channel's ACL user and password. Only relays read it; apps never do.
func Secret(ch *heraldv1.NotificationChannel, password string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: meta(ch, shardmap.CredentialsSecretName(ch.Name), labels(ch, "credentials")),
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			SecretUsernameKey: []byte(shardmap.ACLUser(ch.Namespace, ch.Name)),
			SecretPasswordKey: []byte(password),
		},
	}
}

// Memory a relay and a sidecar need besides room for messages.
var (
	relayBaseMemory   = resource.MustParse("64Mi")
	sidecarBaseMemory = resource.MustParse("32Mi")
)

// RelayMemoryFloor is the least memory limit a relay of ch needs: its base, and room for a few of
// the largest messages the channel allows (shardmap.MessageMemory).
func RelayMemoryFloor(ch *heraldv1.NotificationChannel) resource.Quantity {
	return memoryFloor(relayBaseMemory, int64(ch.Spec.MaxMessageBytes))
}

// SidecarMemoryFloor is the least memory limit of a sidecar whose largest channel allows
// messages of maxMessageBytes.
func SidecarMemoryFloor(maxMessageBytes int64) resource.Quantity {
	return memoryFloor(sidecarBaseMemory, maxMessageBytes)
}

// memoryFloor is base plus shardmap.MessageMemory, rounded up to whole MiB.
func memoryFloor(base resource.Quantity, maxMessageBytes int64) resource.Quantity {
	const mi = 1 << 20
	n := base.Value() + shardmap.MessageMemory(maxMessageBytes)
	return *resource.NewQuantity((n+mi-1)/mi*mi, resource.BinarySI)
}

// RedisClientCertSecretName is the Secret with the client certificate the operator issued the
// channel's relays for the default Redis.
func RedisClientCertSecretName(ch *heraldv1.NotificationChannel) string {
	return ch.Name + "-redis-client-cert"
}

// RedisClientCertSecret carries the relays' own client certificate for the default Redis
// (data: tls.crt and tls.key).
func RedisClientCertSecret(ch *heraldv1.NotificationChannel, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: meta(ch, RedisClientCertSecretName(ch), labels(ch, "credentials")),
		Type:       corev1.SecretTypeTLS,
		Data:       data,
	}
}

// Deployment runs the relays of one shard.
func Deployment(ch *heraldv1.NotificationChannel, p Params, shard int) *appsv1.Deployment {
	l := labels(ch, "relay")
	l[LabelShard] = strconv.Itoa(shard)
	sel := relaySelector(ch, shard)
	image := p.RelayImage
	if ch.Spec.Relay.Image != "" {
		image = ch.Spec.Relay.Image
	}
	resources := *p.RelayResources.DeepCopy()
	if ch.Spec.Relay.Resources != nil {
		resources = *ch.Spec.Relay.Resources
	} else if limit, ok := resources.Limits[corev1.ResourceMemory]; ok {
		// The operator's default limit grows with the channel's message size; a limit the
		// channel sets is kept (the Degraded condition says when it is too small).
		if floor := RelayMemoryFloor(ch); limit.Cmp(floor) < 0 {
			resources.Limits[corev1.ResourceMemory] = floor
		}
	}
	args := []string{
		"relay", "--role=shard",
		"--shardmap=" + shardMapDir + "/" + shardmap.ConfigMapKey,
		"--shard=" + strconv.Itoa(shard),
		"--listen=:" + strconv.Itoa(shardmap.RelayPort),
		"--redis-addresses=" + strings.Join(p.RedisAddrs, ","),
		"--redis-username=$(HERALD_REDIS_USERNAME)",
	}
	if level := cmp.Or(ch.Spec.Relay.LogLevel, p.RelayLogLevel); level != "" {
		args = append(args, "--log-level="+level)
	}
	if l := ch.Spec.Relay.Limits; l != nil {
		for _, f := range []struct {
			flag string
			v    *int32
		}{
			{"max-subscribers", l.MaxSubscribers}, {"max-subscribers-per-caller", l.MaxSubscribersPerCaller},
			{"max-replays-per-caller", l.MaxReplaysPerCaller}, {"replay-rate-per-caller", l.ReplaysPerSecondPerCaller},
		} {
			if f.v != nil {
				args = append(args, "--"+f.flag+"="+strconv.Itoa(int(*f.v)))
			}
		}
	}
	type secretMount struct {
		volume corev1.Volume
		dir    string
	}
	var secretMounts []secretMount // Secrets in the channel's namespace the relays read
	if t := p.RedisTLS; t != nil {
		args = append(args, "--redis-tls")
		if ref := t.CASecretRef; ref != nil {
			key := ref.Key
			if key == "" {
				key = "ca.crt"
			}
			secretMounts = append(secretMounts, secretMount{corev1.Volume{Name: "redis-ca", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: ref.Name, Items: []corev1.KeyToPath{{Key: key, Path: "ca.crt"}}}}}, redisCADir})
			args = append(args, "--redis-tls-ca-file="+redisCADir+"/ca.crt")
		} else if t.CAPEM != "" {
			args = append(args, "--redis-tls-ca-file="+shardMapDir+"/"+RedisCAKey)
		}
		if t.ServerName != "" {
			args = append(args, "--redis-tls-server-name="+t.ServerName)
		}
		if t.InsecureSkipVerify {
			args = append(args, "--redis-tls-insecure-skip-verify")
		}
		if ref := t.ClientCertSecretRef; ref != nil {
			secretMounts = append(secretMounts, secretMount{corev1.Volume{Name: "redis-client-cert", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: ref.Name, Items: []corev1.KeyToPath{{Key: corev1.TLSCertKey, Path: corev1.TLSCertKey}, {Key: corev1.TLSPrivateKeyKey, Path: corev1.TLSPrivateKeyKey}}}}}, redisClientDir})
			args = append(args, "--redis-tls-cert-file="+redisClientDir+"/"+corev1.TLSCertKey,
				"--redis-tls-key-file="+redisClientDir+"/"+corev1.TLSPrivateKeyKey)
		}
	}
	secretEnv := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: shardmap.CredentialsSecretName(ch.Name)}, Key: key}}}
	}
	pod := corev1.PodSpec{
		// The relay verifies callers' tokens with TokenReview, which needs its own token.
		ImagePullSecrets:             pullSecrets(ch.Spec.Relay.ImagePullSecrets, p.PullSecrets),
		ServiceAccountName:           RelayServiceAccountName(ch),
		EnableServiceLinks:           ptr(false), // Services' HERALD_*_PORT variables would set flags
		AutomountServiceAccountToken: ptr(true),
		SecurityContext:              podSecurity(),
		Containers: []corev1.Container{{
			Name:            "relay",
			Image:           image,
			ImagePullPolicy: cmp.Or(ch.Spec.Relay.ImagePullPolicy, p.PullPolicy),
			Args:            args,
			Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: shardmap.RelayPort, Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{
				secretEnv("HERALD_REDIS_USERNAME", SecretUsernameKey),
				secretEnv("HERALD_REDIS_PASSWORD", SecretPasswordKey),
			},
			Resources:       resources,
			LivenessProbe:   httpProbe("/healthz", 10),
			ReadinessProbe:  httpProbe("/readyz", 5),
			VolumeMounts:    []corev1.VolumeMount{{Name: "shardmap", MountPath: shardMapDir, ReadOnly: true}},
			SecurityContext: containerSecurity(),
		}},
		Volumes: []corev1.Volume{{Name: "shardmap", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: shardmap.ConfigMapName(ch.Name)}}}}},
		NodeSelector:      ch.Spec.Relay.NodeSelector,
		Tolerations:       tolerations(ch, p),
		Affinity:          ch.Spec.Relay.Affinity,
		PriorityClassName: ch.Spec.Relay.PriorityClassName,
	}
	for _, m := range secretMounts {
		pod.Volumes = append(pod.Volumes, m.volume)
		pod.Containers[0].VolumeMounts = append(pod.Containers[0].VolumeMounts,
			corev1.VolumeMount{Name: m.volume.Name, MountPath: m.dir, ReadOnly: true})
	}
	if pod.Affinity == nil {
		pod.TopologySpreadConstraints = spreadOverNodes(sel)
	}
	return &appsv1.Deployment{
		ObjectMeta: meta(ch, shardmap.ShardDeploymentName(ch.Name, shard), l),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(Replicas(ch)),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Strategy: surgeOnly(),
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels(ch, l), Annotations: podAnnotations(ch, p)}, Spec: pod},
		},
	}
}

// surgeOnly never drops below the requested pods during a rollout: subscribers move, not wait.
func surgeOnly() appsv1.DeploymentStrategy {
	maxUnavailable, maxSurge := intstr.FromInt32(0), intstr.FromInt32(1)
	return appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &maxUnavailable, MaxSurge: &maxSurge}}
}

// spreadOverNodes spreads the pods sel selects across zones and across nodes, where the
// scheduler can: a lost node, or zone, then takes at most one replica of a shard's relays.
func spreadOverNodes(sel map[string]string) []corev1.TopologySpreadConstraint {
	var out []corev1.TopologySpreadConstraint
	for _, key := range []string{corev1.LabelTopologyZone, corev1.LabelHostname} {
		out = append(out, corev1.TopologySpreadConstraint{
			MaxSkew: 1, TopologyKey: key, WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector: &metav1.LabelSelector{MatchLabels: sel},
		})
	}
	return out
}

// tolerations are spec.relay.tolerations, plus, for the taints of a node that is not ready or
// unreachable and that they do not cover, NoExecute tolerations of p.NodeLostToleration: the
// pods of a lost node are replaced that long after the node controller marks it, instead of the
// 300 s Kubernetes gives every pod.
func tolerations(ch *heraldv1.NotificationChannel, p Params) []corev1.Toleration {
	out := slices.Clone(ch.Spec.Relay.Tolerations)
	if p.NodeLostToleration <= 0 {
		return out
	}
	secs := int64(p.NodeLostToleration / time.Second)
	for _, taint := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		covered := slices.ContainsFunc(out, func(t corev1.Toleration) bool {
			return (t.Key == taint || (t.Key == "" && t.Operator == corev1.TolerationOpExists)) &&
				(t.Effect == "" || t.Effect == corev1.TaintEffectNoExecute)
		})
		if !covered {
			out = append(out, corev1.Toleration{Key: taint, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &secs})
		}
	}
	return out
}

// httpProbe checks path on the container's "http" port.
func httpProbe(path string, period int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
		PeriodSeconds: period, TimeoutSeconds: 2, FailureThreshold: 3, SuccessThreshold: 1, // ints are compared even when zero: spell out the defaults
	}
}

// podSecurity and containerSecurity are the restricted Pod Security Standard, as every relay runs.
func podSecurity() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr(true),
		RunAsUser:      ptr(int64(65532)),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func containerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// podLabels are spec.relay.podLabels under the operator's own, which select the pods.
func podLabels(ch *heraldv1.NotificationChannel, own map[string]string) map[string]string {
	l := maps.Clone(ch.Spec.Relay.PodLabels)
	if l == nil {
		return own
	}
	maps.Copy(l, own)
	return l
}

// podAnnotations are spec.relay.podAnnotations under the hashes of what relays read only at
// start.
func podAnnotations(ch *heraldv1.NotificationChannel, p Params) map[string]string {
	a := maps.Clone(ch.Spec.Relay.PodAnnotations)
	if a == nil {
		a = map[string]string{}
	}
	if p.Password != "" {
		a[CredentialsHashAnnotation] = hash(p.Password)
	}
	if t := p.RedisTLS; t != nil && (t.CAPEM != "" || len(t.SecretCA) > 0) {
		a[RedisCAHashAnnotation] = hash(t.CAPEM + string(t.SecretCA))
	}
	if len(a) == 0 {
		return nil
	}
	return a
}

// RelayServiceAccountName is the ServiceAccount the channel's relays run as.
func RelayServiceAccountName(ch *heraldv1.NotificationChannel) string { return ch.Name + "-relay" }

// ServiceAccount is the identity of the channel's relays.
func ServiceAccount(ch *heraldv1.NotificationChannel) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: meta(ch, RelayServiceAccountName(ch), labels(ch, "relay"))}
}

// LabelNamespace marks cluster-scoped objects with the namespace of the channel they serve.
const LabelNamespace = "notifications.herald.dev/namespace"

// TokenReviewBinding lets the channel's relays create TokenReviews (to authenticate sidecars) by
// binding their ServiceAccount to clusterRole. It is cluster-scoped, so it cannot be owned by the
// channel: the operator deletes it when the channel goes.
func TokenReviewBinding(ch *heraldv1.NotificationChannel, clusterRole string) *rbacv1.ClusterRoleBinding {
	l := labels(ch, "relay")
	l[LabelNamespace] = ch.Namespace
	return &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: TokenReviewBindingName(ch), Labels: l},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ch.Namespace, Name: RelayServiceAccountName(ch)}},
	}
}

// TokenReviewBindingName is unique per channel across the cluster.
func TokenReviewBindingName(ch *heraldv1.NotificationChannel) string {
	return "herald-relay." + ch.Namespace + "." + ch.Name
}

// Replicas is the number of relays per shard the channel asks for (2 when unset).
func Replicas(ch *heraldv1.NotificationChannel) int32 {
	if ch.Spec.Relay.Replicas != nil {
		return *ch.Spec.Relay.Replicas
	}
	return 2
}

// ShardService is the Service in front of one shard's relays.
func ShardService(ch *heraldv1.NotificationChannel, shard int) *corev1.Service {
	l := labels(ch, "relay")
	l[LabelShard] = strconv.Itoa(shard)
	return service(ch, shardmap.ShardServiceName(ch.Name, shard), l, relaySelector(ch, shard))
}

// ShardReplicasService is the headless Service of one shard's relays: its DNS name answers with
// the address of every ready relay (not-ready ones are left out), so sidecars choose the replica
// themselves and leave one whose node went silent at once, instead of waiting for kube-proxy to
// stop picking it after the node is marked NotReady.
func ShardReplicasService(ch *heraldv1.NotificationChannel, shard int) *corev1.Service {
	svc := ShardService(ch, shard)
	svc.Name = shardmap.ShardReplicasServiceName(ch.Name, shard)
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	return svc
}

// ChannelService is the channel-wide Service in front of every relay of the channel.
func ChannelService(ch *heraldv1.NotificationChannel) *corev1.Service {
	return service(ch, shardmap.ChannelServiceName(ch.Name), labels(ch, "relay"), relaySelector(ch, -1))
}

func service(ch *heraldv1.NotificationChannel, name string, l, sel map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: meta(ch, name, l),
		Spec: corev1.ServiceSpec{
			Selector: sel,
			Ports: []corev1.ServicePort{{Name: "http", Port: shardmap.RelayPort,
				TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// PodDisruptionBudget keeps one relay of a shard up through voluntary disruptions. Only built
// when the shard has more than one replica (a PDB on one replica would block node drains).
func PodDisruptionBudget(ch *heraldv1.NotificationChannel, shard int) *policyv1.PodDisruptionBudget {
	l := labels(ch, "relay")
	l[LabelShard] = strconv.Itoa(shard)
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: meta(ch, shardmap.ShardDeploymentName(ch.Name, shard), l),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &one,
			Selector:     &metav1.LabelSelector{MatchLabels: relaySelector(ch, shard)},
		},
	}
}

// NetworkPolicy admits traffic to the channel's relays only from the channel's own namespace,
// the namespaces in spec.access and, when scrapers is set, the namespaces it selects (where
// Prometheus runs).
func NetworkPolicy(ch *heraldv1.NotificationChannel, scrapers *metav1.LabelSelector) *networkingv1.NetworkPolicy {
	namespaces := append([]string{ch.Namespace}, ch.Spec.Access.Namespaces...)
	port := intstr.FromInt32(shardmap.RelayPort)
	tcp := corev1.ProtocolTCP
	ports := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}
	peers := []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: namespaces}},
	}}}
	if scrapers != nil {
		// Prometheus's namespaces reach /metrics on the same port; the API there still wants a
		// token of an admitted namespace (401/403 otherwise).
		peers = append(peers, networkingv1.NetworkPolicyPeer{NamespaceSelector: scrapers})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: meta(ch, shardmap.ChannelServiceName(ch.Name), labels(ch, "relay")),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: relaySelector(ch, -1)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// pullSecrets are the channel's own, else the operator's.
func pullSecrets(own, operators []corev1.LocalObjectReference) []corev1.LocalObjectReference {
	if len(own) > 0 {
		return own
	}
	return operators
}

// SecretsBindingName names the RoleBinding that lets the manager at the Secrets of one namespace.
const SecretsBindingName = "herald-manager-secrets"

// SecretsBinding binds clusterRole (Secrets: get, create, update, patch, delete) to the manager's
// own ServiceAccount in the channel's namespace, owned by the channel (every channel of the
// namespace adds itself as an owner, so the binding goes with the last of them).
func SecretsBinding(ch *heraldv1.NotificationChannel, clusterRole string, manager types.NamespacedName) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{
			Name: SecretsBindingName, Namespace: ch.Namespace,
			Labels:          map[string]string{"app.kubernetes.io/name": "herald", LabelManagedBy: ManagedBy, LabelComponent: "manager"},
			OwnerReferences: []metav1.OwnerReference{SecretsBindingOwner(ch)},
		},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: manager.Namespace, Name: manager.Name}},
	}
}

// SecretsBindingOwner is the channel's owner reference on the Secrets binding: not a controller
// one, since the namespace's channels share the binding.
func SecretsBindingOwner(ch *heraldv1.NotificationChannel) metav1.OwnerReference {
	gvk := heraldv1.GroupVersion.WithKind("NotificationChannel")
	return metav1.OwnerReference{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: ch.Name, UID: ch.UID}
}
