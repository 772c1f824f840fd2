package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/relay/shardmap"
)

// applyChildren makes the channel's Kubernetes objects match the spec and records what the relay
// Deployments report.
func (r *NotificationChannelReconciler) applyChildren(ctx context.Context, ch *heraldv1.NotificationChannel, o *observation) error {
	m := shardmap.New(ch.Namespace, ch.Name, string(ch.Spec.Delivery), o.tags)
	m.MaxMessageBytes = int64(ch.Spec.MaxMessageBytes)
	if ch.Spec.Delivery == heraldv1.DeliveryDurable {
		m.IdempotencyWindow = shardmap.Duration{Duration: heraldv1.DefaultIdempotencyWindow}
		if w := ch.Spec.IdempotencyWindow; w != nil {
			m.IdempotencyWindow.Duration = w.Duration
		}
	}
	m.Access = ch.Spec.Access.Namespaces
	if ret := ch.Spec.Retention; ret != nil {
		if ret.MaxLength != nil {
			m.Retention.MaxLength = *ret.MaxLength
		}
		if ret.MaxAge != nil {
			m.Retention.MaxAge = shardmap.Duration{Duration: ret.MaxAge.Duration}
		}
		m.HistoryPerKey = int(ret.HistoryPerKey)
	}
	p := workloads.Params{Map: m, RelayImage: r.RelayImage, RelayResources: r.RelayResources, RelayLogLevel: r.RelayLogLevel,
		PullPolicy: r.RelayPullPolicy, PullSecrets: r.RelayPullSecrets, RedisAddrs: o.redisAddrs, Password: o.password,
		NodeLostToleration: r.RelayNodeLost}
	switch {
	case ch.Spec.Redis == nil:
		p.RedisTLS = r.DefaultRedis.RelayTLS
		if err := r.relayClientCert(ctx, ch, &p); err != nil {
			return err
		}
	case ch.Spec.Redis.TLS != nil:
		p.RedisTLS = &workloads.RedisTLS{RedisTLS: *ch.Spec.Redis.TLS, SecretCA: o.redisCA}
	}

	if err := r.ensure(ctx, workloads.ServiceAccount(ch)); err != nil {
		return err
	}
	if r.RelayClusterRole != "" {
		if err := r.ensure(ctx, workloads.TokenReviewBinding(ch, r.RelayClusterRole)); err != nil {
			return err
		}
	}
	cm, err := workloads.ConfigMap(ch, p)
	if err != nil {
		return err
	}
	if err := r.ensure(ctx, cm); err != nil {
		return err
	}
	o.relays = make([]relayState, len(o.tags))
	for i := range o.tags {
		d := workloads.Deployment(ch, p, i)
		if err := r.ensure(ctx, d); err != nil {
			return err
		}
		o.relays[i] = relayState{workload: d.Name, ready: d.Status.ReadyReplicas, available: d.Status.AvailableReplicas}
		if err := r.ensure(ctx, workloads.ShardService(ch, i)); err != nil {
			return err
		}
		if err := r.ensure(ctx, workloads.ShardReplicasService(ch, i)); err != nil {
			return err
		}
		pdb := workloads.PodDisruptionBudget(ch, i)
		if workloads.Replicas(ch) > 1 {
			err = r.ensure(ctx, pdb)
		} else {
			err = client.IgnoreNotFound(r.Delete(ctx, pdb))
		}
		if err != nil {
			return err
		}
	}
	if err := r.ensure(ctx, workloads.ChannelService(ch)); err != nil {
		return err
	}
	if err := r.ensure(ctx, workloads.NetworkPolicy(ch, r.MetricsScrapers)); err != nil {
		return err
	}
	return r.applyEdge(ctx, ch, p, o)
}

// ensure creates desired, or updates the live object when it has drifted from desired. Only the
// fields desired sets are compared (equality.Semantic.DeepDerivative), so values the API server
// defaults are not drift and a steady state writes nothing. On return desired holds the live
// object, status included.
func (r *NotificationChannelReconciler) ensure(ctx context.Context, desired client.Object) error {
	stampAppliedHash(desired)
	live := desired.DeepCopyObject().(client.Object)
	err := r.Get(ctx, client.ObjectKeyFromObject(desired), live)
	if apierrors.IsNotFound(err) {
		if err := r.Create(ctx, desired); err != nil {
			return fmt.Errorf("creating %T %s: %w", desired, desired.GetName(), err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %T %s: %w", desired, desired.GetName(), err)
	}
	if drifted(live, desired) {
		overlay(live, desired)
		if err := r.Update(ctx, live); err != nil {
			return fmt.Errorf("updating %T %s: %w", desired, desired.GetName(), err)
		}
	}
	reflect.ValueOf(desired).Elem().Set(reflect.ValueOf(live).Elem())
	return nil
}

// drifted reports whether live differs from desired in what the operator owns. Only the fields
// desired sets are compared (equality.Semantic.DeepDerivative), so values the API server
// defaults, and labels others add, are not drift. A field the operator stops setting (a
// nodeSelector removed from the spec) is unset in desired and so invisible to that comparison:
// the applied-hash annotation catches it.
func drifted(live, desired client.Object) bool {
	d := equality.Semantic.DeepDerivative
	return !d(desired.GetLabels(), live.GetLabels()) ||
		!d(desired.GetAnnotations(), live.GetAnnotations()) ||
		!d(desired.GetOwnerReferences(), live.GetOwnerReferences()) ||
		!d(ownedFields(desired), ownedFields(live))
}

// appliedHashAnnotation holds a hash of what the operator last wrote to the owned fields.
const appliedHashAnnotation = "notifications.herald.dev/applied-hash"

func stampAppliedHash(o client.Object) {
	b, err := json.Marshal(ownedFields(o)) // map keys come out sorted: the hash is stable
	if err != nil {
		panic(fmt.Sprintf("%T cannot be marshalled: %v", o, err)) // API types always can
	}
	sum := sha256.Sum256(b)
	a := maps.Clone(o.GetAnnotations())
	if a == nil {
		a = map[string]string{}
	}
	a[appliedHashAnnotation] = hex.EncodeToString(sum[:8])
	o.SetAnnotations(a)
}

// ownedFields points at the part of an object the operator owns beyond its metadata.
func ownedFields(o client.Object) any {
	switch o := o.(type) {
	case *corev1.ConfigMap:
		return &o.Data
	case *corev1.Secret:
		return &o.Data
	case *corev1.ServiceAccount:
		return &struct{}{} // its metadata is all the operator sets
	case *rbacv1.ClusterRoleBinding:
		return &struct {
			RoleRef  *rbacv1.RoleRef
			Subjects *[]rbacv1.Subject
		}{&o.RoleRef, &o.Subjects}
	case *corev1.Service:
		return &struct {
			Selector *map[string]string
			Ports    *[]corev1.ServicePort
		}{&o.Spec.Selector, &o.Spec.Ports}
	case *appsv1.Deployment:
		return &o.Spec
	case *policyv1.PodDisruptionBudget:
		return &o.Spec
	case *networkingv1.NetworkPolicy:
		return &o.Spec
	case *networkingv1.Ingress:
		return &o.Spec
	case *unstructured.Unstructured: // an HTTPRoute
		return o.Object["spec"]
	}
	panic(fmt.Sprintf("%T is not an object the operator owns", o))
}

// overlay copies onto live the metadata and fields the operator owns in desired; what the API
// server or other controllers filled in (a Service's cluster IP, extra labels) is left alone.
func overlay(live, desired client.Object) {
	l := live.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, desired.GetLabels())
	live.SetLabels(l)
	a := live.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	maps.Copy(a, desired.GetAnnotations())
	live.SetAnnotations(a)
	live.SetOwnerReferences(desired.GetOwnerReferences())
	switch d := desired.(type) {
	case *corev1.ConfigMap:
		live.(*corev1.ConfigMap).Data = d.Data
	case *corev1.Secret:
		live.(*corev1.Secret).Data = d.Data
	case *rbacv1.ClusterRoleBinding:
		live.(*rbacv1.ClusterRoleBinding).Subjects = d.Subjects // roleRef is immutable and part of the name
	case *corev1.Service:
		s := live.(*corev1.Service)
		s.Spec.Selector, s.Spec.Ports = d.Spec.Selector, d.Spec.Ports
	case *appsv1.Deployment:
		live.(*appsv1.Deployment).Spec = d.Spec
	case *policyv1.PodDisruptionBudget:
		live.(*policyv1.PodDisruptionBudget).Spec = d.Spec
	case *networkingv1.NetworkPolicy:
		live.(*networkingv1.NetworkPolicy).Spec = d.Spec
	case *networkingv1.Ingress:
		live.(*networkingv1.Ingress).Spec = d.Spec
	case *unstructured.Unstructured:
		live.(*unstructured.Unstructured).Object["spec"] = d.Object["spec"]
	}
}

// relayClientCert gives the channel's relays a client certificate of their own for the default
// Redis, issued from the operator's client CA and renewed before it expires. Without a client CA
// the relays present none, and a certificate Secret an earlier version left (a copy of the
// operator's own key) is removed.
func (r *NotificationChannelReconciler) relayClientCert(ctx context.Context, ch *heraldv1.NotificationChannel, p *workloads.Params) error {
	var current corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: workloads.RedisClientCertSecretName(ch)}, &current)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	exists := err == nil && metav1.IsControlledBy(&current, ch)
	if r.DefaultRedis.ClientCA == (ClientCA{}) || p.RedisTLS == nil {
		if exists {
			return client.IgnoreNotFound(r.Delete(ctx, &current))
		}
		return nil
	}
	var data map[string][]byte
	if exists {
		data = current.Data
	}
	data, err = r.DefaultRedis.ClientCA.relayClientCert(data, shardmap.ACLUser(ch.Namespace, ch.Name), r.now())
	if err != nil {
		return err
	}
	if err := r.ensure(ctx, workloads.RedisClientCertSecret(ch, data)); err != nil {
		return err
	}
	t := *p.RedisTLS
	t.ClientCertSecretRef = &heraldv1.SecretRef{Name: workloads.RedisClientCertSecretName(ch)}
	p.RedisTLS = &t
	return nil
}
