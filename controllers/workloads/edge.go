package workloads

import (
	"cmp"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/relay/shardmap"
)

// The edge (spec.edge): `herald relay --role=edge` in front of end users, one Deployment per
// channel with its Service, a PodDisruptionBudget when it has more than one pod, and an Ingress
// or an HTTPRoute. Its pods reach the shard relays as a sidecar does, with a projected token of
// the channel's audience, and read the keys of users' tokens from the team's Secrets.

const (
	edgeTokenDir = "/var/run/secrets/herald/tokens" // the projected token for the shard relays
	edgeKeysDir  = "/etc/herald-edge-keys"          // the keys of end users' tokens
	// EdgeMetricsPort serves the edge's /metrics, never on the end users' port.
	EdgeMetricsPort = shardmap.RelayPort + 1
	// DefaultEdgeReplicas is spec.edge.replicas when the Deployment is created without it.
	DefaultEdgeReplicas = 2
)

// EdgeName names the edge's Deployment, Service, ServiceAccount and route.
func EdgeName(ch *heraldv1.NotificationChannel) string { return ch.Name + "-edge" }

func edgeSelector(ch *heraldv1.NotificationChannel) map[string]string {
	return map[string]string{LabelChannel: ch.Name, LabelComponent: "edge"}
}

// EdgePath is the path prefix an Ingress or HTTPRoute sends to the edge: the channel's API only.
func EdgePath(ch *heraldv1.NotificationChannel) string { return "/v1/channels/" + ch.Name + "/" }

// EdgeServiceAccount is the identity of the edge's pods: it may call the channel's shard relays
// (its namespace is the channel's), and nothing else.
func EdgeServiceAccount(ch *heraldv1.NotificationChannel) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: meta(ch, EdgeName(ch), labels(ch, "edge")), AutomountServiceAccountToken: ptr(false)}
}

// EdgeDeployment runs the edge. replicas is nil to leave the live Deployment's (an HPA's) as is.
func EdgeDeployment(ch *heraldv1.NotificationChannel, p Params, replicas *int32) *appsv1.Deployment {
	e := ch.Spec.Edge
	l := labels(ch, "edge")
	sel := edgeSelector(ch)
	image := cmp.Or(ch.Spec.Relay.Image, p.RelayImage)
	resources := *p.RelayResources.DeepCopy()
	if e.Resources != nil {
		resources = *e.Resources
	}
	args := []string{
		"relay", "--role=edge",
		"--channels=" + ch.Namespace + "/" + ch.Name,
		"--namespace=" + ch.Namespace,
		"--token-dir=" + edgeTokenDir,
		"--listen=:" + strconv.Itoa(shardmap.RelayPort),
		"--metrics-listen=:" + strconv.Itoa(EdgeMetricsPort),
	}
	var keys []corev1.VolumeProjection
	if ref := e.Auth.HMACSecretRef; ref != nil {
		keys = append(keys, secretItem(ref, "hmac-key"))
		args = append(args, "--user-token-hmac-key-file="+edgeKeysDir+"/hmac-key")
	}
	if ref := e.Auth.JWKSSecretRef; ref != nil {
		keys = append(keys, secretItem(ref, "jwks.json"))
		args = append(args, "--user-token-jwks-file="+edgeKeysDir+"/jwks.json")
	}
	if e.Auth.JWKSURL != "" {
		args = append(args, "--user-token-jwks-url="+e.Auth.JWKSURL)
	}
	if e.Auth.Audience != "" {
		args = append(args, "--user-token-audience="+e.Auth.Audience)
	}
	if len(e.CORSAllowedOrigins) > 0 {
		args = append(args, "--cors-allowed-origins="+strings.Join(e.CORSAllowedOrigins, ","))
	}
	if e.Ingress != nil || e.HTTPRoute != nil {
		// Behind a proxy every connection comes from it; count users by the address it adds.
		args = append(args, "--trust-forwarded-for")
	}
	if lim := e.Limits; lim != nil {
		for _, f := range []struct {
			flag string
			v    *int32
		}{{"max-streams-per-user", lim.StreamsPerUser}, {"max-streams-per-address", lim.StreamsPerAddress}, {"max-keys-per-stream", lim.KeysPerStream}} {
			if f.v != nil {
				args = append(args, "--"+f.flag+"="+strconv.Itoa(int(*f.v)))
			}
		}
	}
	if level := cmp.Or(ch.Spec.Relay.LogLevel, p.RelayLogLevel); level != "" {
		args = append(args, "--log-level="+level)
	}
	volumes := []corev1.Volume{{Name: "tokens", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: shardmap.TokenAudience(ch.Namespace, ch.Name), ExpirationSeconds: ptr(int64(3600)),
			Path: shardmap.TokenFileName(ch.Namespace, ch.Name)}}},
	}}}}
	mounts := []corev1.VolumeMount{{Name: "tokens", MountPath: edgeTokenDir, ReadOnly: true}}
	if len(keys) > 0 {
		volumes = append(volumes, corev1.Volume{Name: "user-token-keys", VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: keys}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "user-token-keys", MountPath: edgeKeysDir, ReadOnly: true})
	}
	pod := corev1.PodSpec{
		ImagePullSecrets:             pullSecrets(ch.Spec.Relay.ImagePullSecrets, p.PullSecrets),
		ServiceAccountName:           EdgeName(ch),
		EnableServiceLinks:           ptr(false),
		AutomountServiceAccountToken: ptr(false), // only the projected token of the channel's audience
		SecurityContext:              podSecurity(),
		Containers: []corev1.Container{{
			Name:            "edge",
			Image:           image,
			ImagePullPolicy: cmp.Or(ch.Spec.Relay.ImagePullPolicy, p.PullPolicy),
			Args:            args,
			Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: shardmap.RelayPort, Protocol: corev1.ProtocolTCP},
				{Name: "metrics", ContainerPort: EdgeMetricsPort, Protocol: corev1.ProtocolTCP},
			},
			Resources:       resources,
			LivenessProbe:   httpProbe("/healthz", 10),
			ReadinessProbe:  httpProbe("/readyz", 5),
			VolumeMounts:    mounts,
			SecurityContext: containerSecurity(),
		}},
		Volumes:                   volumes,
		NodeSelector:              ch.Spec.Relay.NodeSelector,
		Tolerations:               tolerations(ch, p),
		PriorityClassName:         ch.Spec.Relay.PriorityClassName,
		TopologySpreadConstraints: spreadOverNodes(sel),
	}
	if e.Replicas != nil {
		replicas = e.Replicas
	}
	return &appsv1.Deployment{
		ObjectMeta: meta(ch, EdgeName(ch), l),
		Spec: appsv1.DeploymentSpec{
			Replicas: replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Strategy: surgeOnly(),
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels(ch, l)}, Spec: pod},
		},
	}
}

// secretItem projects one key of a Secret as file path.
func secretItem(ref *heraldv1.KeyRef, path string) corev1.VolumeProjection {
	return corev1.VolumeProjection{Secret: &corev1.SecretProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name},
		Items:                []corev1.KeyToPath{{Key: ref.Key, Path: path}},
	}}
}

// EdgeService is the Service in front of the edge: the API for end users (through an Ingress,
// an HTTPRoute or a load balancer of the platform's) and the metrics port for Prometheus.
func EdgeService(ch *heraldv1.NotificationChannel) *corev1.Service {
	s := service(ch, EdgeName(ch), labels(ch, "edge"), edgeSelector(ch))
	s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "metrics", Port: EdgeMetricsPort,
		TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP})
	return s
}

// EdgePodDisruptionBudget keeps one edge pod up through voluntary disruptions (built only when
// the edge has more than one pod).
func EdgePodDisruptionBudget(ch *heraldv1.NotificationChannel) *policyv1.PodDisruptionBudget {
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: meta(ch, EdgeName(ch), labels(ch, "edge")),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &one,
			Selector:     &metav1.LabelSelector{MatchLabels: edgeSelector(ch)},
		},
	}
}

// EdgeIngress routes the channel's API on spec.edge.ingress.hosts to the edge Service.
func EdgeIngress(ch *heraldv1.NotificationChannel) *networkingv1.Ingress {
	in := ch.Spec.Edge.Ingress
	prefix := networkingv1.PathTypePrefix
	backend := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
		Name: EdgeName(ch), Port: networkingv1.ServiceBackendPort{Name: "http"}}}
	m := meta(ch, EdgeName(ch), labels(ch, "edge"))
	m.Annotations = in.Annotations
	ing := &networkingv1.Ingress{ObjectMeta: m, Spec: networkingv1.IngressSpec{IngressClassName: in.ClassName}}
	for _, h := range in.Hosts {
		ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{Host: h, IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: EdgePath(ch), PathType: &prefix, Backend: backend}}}}})
	}
	if in.TLSSecretName != "" {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: in.Hosts, SecretName: in.TLSSecretName}}
	}
	return ing
}

// HTTPRouteKind is the Gateway API route the edge is exposed with (unstructured: the operator
// does not need the Gateway API in its module, nor in the cluster unless a channel asks).
var HTTPRouteKind = schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"}

// EdgeHTTPRoute routes the channel's API on spec.edge.httpRoute's Gateways to the edge Service.
func EdgeHTTPRoute(ch *heraldv1.NotificationChannel) *unstructured.Unstructured {
	hr := ch.Spec.Edge.HTTPRoute
	var parents []any
	for _, ref := range hr.ParentRefs {
		p := map[string]any{"name": ref.Name}
		if ref.Namespace != "" {
			p["namespace"] = ref.Namespace
		}
		if ref.SectionName != "" {
			p["sectionName"] = ref.SectionName
		}
		parents = append(parents, p)
	}
	spec := map[string]any{
		"parentRefs": parents,
		"rules": []any{map[string]any{
			"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": strings.TrimSuffix(EdgePath(ch), "/")}}},
			"backendRefs": []any{map[string]any{"name": EdgeName(ch), "port": int64(shardmap.RelayPort)}},
		}},
	}
	if len(hr.Hostnames) > 0 {
		hosts := make([]any, len(hr.Hostnames))
		for i, h := range hr.Hostnames {
			hosts[i] = h
		}
		spec["hostnames"] = hosts
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(HTTPRouteKind)
	m := meta(ch, EdgeName(ch), labels(ch, "edge"))
	u.SetName(m.Name)
	u.SetNamespace(m.Namespace)
	u.SetLabels(m.Labels)
	u.SetOwnerReferences(m.OwnerReferences)
	return u
}

// EdgeURLs are where end users reach the channel through the Ingress or the HTTPRoute.
func EdgeURLs(ch *heraldv1.NotificationChannel) []string {
	e := ch.Spec.Edge
	var urls []string
	switch {
	case e.Ingress != nil:
		scheme := "http://"
		if e.Ingress.TLSSecretName != "" {
			scheme = "https://"
		}
		for _, h := range e.Ingress.Hosts {
			urls = append(urls, scheme+h+EdgePath(ch))
		}
	case e.HTTPRoute != nil:
		for _, h := range e.HTTPRoute.Hostnames {
			urls = append(urls, "https://"+h+EdgePath(ch))
		}
	}
	return urls
}
