package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/relay/shardmap"
)

// markEdgeAvailable plays the kubelet for the edge Deployment.
func markEdgeAvailable(t *testing.T, ch *heraldv1.NotificationChannel) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		var d appsv1.Deployment
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ch.Namespace, Name: workloads.EdgeName(ch)}, &d); err != nil {
			return err
		}
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		return k8s.Status().Update(context.Background(), &d)
	})
}

// spec.edge becomes an edge Deployment (the right role, keys, token and limits), its Service,
// a PodDisruptionBudget and an Ingress for the channel's paths; Ready waits for it and the
// status says where it answers; removing spec.edge removes all of it.
func TestAnEdgeRunsWhatSpecEdgeAsksAndGoesWithIt(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	key := create(t, channel(ns, withShards(2), withEdge(func(e *heraldv1.EdgeSpec) {
		e.CORSAllowedOrigins = []string{"https://shop.example.com"}
		e.Limits = &heraldv1.EdgeLimits{StreamsPerUser: ptr(int32(4))}
		e.Ingress = &heraldv1.EdgeIngress{ClassName: ptr("nginx"), Hosts: []string{"notify.example.com"}, TLSSecretName: "notify-tls",
			Annotations: map[string]string{"nginx.ingress.kubernetes.io/proxy-buffering": "off"}}
	})))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	name := client.ObjectKey{Namespace: ns, Name: workloads.EdgeName(ch)}

	var d appsv1.Deployment
	eventually(t, 20*time.Second, func() error { return k8s.Get(ctx, name, &d) })
	c := d.Spec.Template.Spec.Containers[0]
	for _, want := range []string{"--role=edge", "--channels=" + ns + "/" + ch.Name, "--user-token-hmac-key-file=/etc/herald-edge-keys/hmac-key",
		"--cors-allowed-origins=https://shop.example.com", "--max-streams-per-user=4", "--trust-forwarded-for", "--metrics-listen=:7071"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("the edge's args %q lack %q", c.Args, want)
		}
	}
	if *d.Spec.Replicas != workloads.DefaultEdgeReplicas || !metav1.IsControlledBy(&d, ch) {
		t.Errorf("edge Deployment: %d replicas, controlled by the channel %v", *d.Spec.Replicas, metav1.IsControlledBy(&d, ch))
	}
	var token *corev1.ServiceAccountTokenProjection
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil {
					token = src.ServiceAccountToken
				}
				if src.Secret != nil && (src.Secret.Name != "edge-keys" || src.Secret.Items[0].Key != "hmac") {
					t.Errorf("the edge mounts Secret %+v, want edge-keys/hmac", src.Secret)
				}
			}
		}
	}
	if token == nil || token.Audience != shardmap.TokenAudience(ns, ch.Name) {
		t.Errorf("the edge's projected token is %+v, want the channel's audience (the shard relays accept it)", token)
	}

	var ing networkingv1.Ingress
	eventually(t, 20*time.Second, func() error { return k8s.Get(ctx, name, &ing) })
	rule := ing.Spec.Rules[0]
	if rule.Host != "notify.example.com" || rule.HTTP.Paths[0].Path != "/v1/channels/"+ch.Name+"/" || rule.HTTP.Paths[0].Backend.Service.Name != name.Name ||
		*ing.Spec.IngressClassName != "nginx" || ing.Spec.TLS[0].SecretName != "notify-tls" || ing.Annotations["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
		t.Errorf("Ingress %+v", ing.Spec)
	}
	var svc corev1.Service
	var pdb policyv1.PodDisruptionBudget
	if err := k8s.Get(ctx, name, &svc); err != nil || svc.Spec.Selector[workloads.LabelComponent] != "edge" {
		t.Errorf("edge Service: %v %+v", err, svc.Spec.Selector)
	}
	if err := k8s.Get(ctx, name, &pdb); err != nil {
		t.Errorf("edge PodDisruptionBudget (2 replicas): %v", err)
	}

	// Ready waits for the edge too, and says so.
	markRelaysAvailable(t, ch)
	waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionFalse, heraldv1.ReasonEdgeUnavailable)
	markEdgeAvailable(t, ch)
	ch = waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionTrue, heraldv1.ReasonReconciled)
	waitFor(t, key, heraldv1.ConditionEdgeAvailable, metav1.ConditionTrue, heraldv1.ReasonEdgeAvailable)
	if e := ch.Status.Edge; e == nil || e.ReadyReplicas != 2 || !slices.Equal(e.URLs, []string{"https://notify.example.com/v1/channels/" + ch.Name + "/"}) ||
		!strings.HasPrefix(e.Endpoint, "http://"+name.Name+"."+ns+".svc:7070") {
		t.Errorf("status.edge = %+v", e)
	}

	// An autoscaler's count stays when spec.edge.replicas is unset.
	start := reconciles.get(key)
	eventually(t, 10*time.Second, func() error {
		if err := k8s.Get(ctx, name, &d); err != nil {
			return err
		}
		d.Spec.Replicas = ptr(int32(5))
		return k8s.Update(ctx, &d)
	})
	eventually(t, 20*time.Second, func() error { // the update wakes the reconciler (it owns the Deployment)
		if n := reconciles.get(key) - start; n < 2 {
			return fmt.Errorf("%d reconciles since the autoscaler's change", n)
		}
		return nil
	})
	if err := k8s.Get(ctx, name, &d); err != nil || *d.Spec.Replicas != 5 {
		t.Errorf("after a reconcile the edge has %d replicas, want the 5 an autoscaler set (%v)", *d.Spec.Replicas, err)
	}

	// Without spec.edge, nothing of it stays.
	eventually(t, 10*time.Second, func() error {
		if err := k8s.Get(ctx, key, ch); err != nil {
			return err
		}
		ch.Spec.Edge = nil
		return k8s.Update(ctx, ch)
	})
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &policyv1.PodDisruptionBudget{}, &networkingv1.Ingress{}, &corev1.ServiceAccount{}} {
		eventually(t, 20*time.Second, func() error {
			if err := k8s.Get(ctx, name, obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("the edge's %T is still there (%v)", obj, err)
			}
			return nil
		})
	}
	ch = waitFor(t, key, heraldv1.ConditionReady, metav1.ConditionTrue, "")
	if ch.Status.Edge != nil || apimeta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionEdgeAvailable) != nil {
		t.Errorf("without spec.edge the status still says %+v", ch.Status.Edge)
	}
}

// An HTTPRoute where the cluster has no Gateway API: the edge runs behind its Service, and the
// EdgeAvailable condition says what is missing.
func TestAnHTTPRouteWithoutTheGatewayAPIIsReported(t *testing.T) {
	ns := newNamespace(t)
	key := create(t, channel(ns, withEdge(func(e *heraldv1.EdgeSpec) {
		e.HTTPRoute = &heraldv1.EdgeHTTPRoute{ParentRefs: []heraldv1.GatewayRef{{Name: "public", Namespace: "gateways"}}, Hostnames: []string{"notify.example.com"}}
	})))
	ch := waitFor(t, key, heraldv1.ConditionEdgeAvailable, metav1.ConditionFalse, heraldv1.ReasonGatewayAPIMissing)
	var d appsv1.Deployment
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: workloads.EdgeName(ch)}, &d); err != nil {
		t.Fatalf("the edge Deployment should run without its route: %v", err)
	}
}

// spec.retention.historyPerKey reaches the relays through the shard map: their publish function
// indexes that many of each key's newest events.
func TestHistoryPerKeyReachesTheShardMap(t *testing.T) {
	ns := newNamespace(t)
	key := create(t, channel(ns, withRetention(&heraldv1.Retention{MaxLength: ptr(int64(100)), HistoryPerKey: 5})))
	ch := waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	var cm corev1.ConfigMap
	eventually(t, 20*time.Second, func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: shardmap.ConfigMapName(ch.Name)}, &cm)
	})
	m, err := shardmap.Parse([]byte(cm.Data[shardmap.ConfigMapKey]))
	if err != nil || m.HistoryPerKey != 5 {
		t.Fatalf("the shard map says historyPerKey %d (%v), want 5", m.HistoryPerKey, err)
	}
}
