package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
)

// edgeState is what the edge's Deployment and route report.
type edgeState struct {
	ready, available int32
	noGatewayAPI     bool // spec.edge.httpRoute, and the cluster serves no HTTPRoutes
}

// applyEdge runs spec.edge (docs/edge.md), or removes what an earlier spec.edge left.
func (r *NotificationChannelReconciler) applyEdge(ctx context.Context, ch *heraldv1.NotificationChannel, p workloads.Params, o *observation) error {
	name := client.ObjectKey{Namespace: ch.Namespace, Name: workloads.EdgeName(ch)}
	var live appsv1.Deployment
	err := r.Get(ctx, name, &live)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading the edge Deployment: %w", err)
	}
	exists := err == nil
	if ch.Spec.Edge == nil {
		if exists && metav1.IsControlledBy(&live, ch) {
			return r.removeEdge(ctx, ch)
		}
		return nil
	}
	if err := r.ensure(ctx, workloads.EdgeServiceAccount(ch)); err != nil {
		return err
	}
	// Without spec.edge.replicas an autoscaler owns the count: keep what the Deployment has.
	replicas := ptrTo(int32(workloads.DefaultEdgeReplicas))
	if exists {
		replicas = live.Spec.Replicas
	}
	d := workloads.EdgeDeployment(ch, p, replicas)
	if err := r.ensure(ctx, d); err != nil {
		return err
	}
	o.edge = &edgeState{ready: d.Status.ReadyReplicas, available: d.Status.AvailableReplicas}
	if err := r.ensure(ctx, workloads.EdgeService(ch)); err != nil {
		return err
	}
	pdb := workloads.EdgePodDisruptionBudget(ch)
	if d.Spec.Replicas != nil && *d.Spec.Replicas > 1 {
		err = r.ensure(ctx, pdb)
	} else {
		err = client.IgnoreNotFound(r.Delete(ctx, pdb))
	}
	if err != nil {
		return err
	}
	ing := &networkingv1.Ingress{ObjectMeta: pdb.ObjectMeta}
	if ch.Spec.Edge.Ingress != nil {
		err = r.ensure(ctx, workloads.EdgeIngress(ch))
	} else {
		err = r.deleteIfPresent(ctx, ing)
	}
	if err != nil {
		return err
	}
	return r.applyHTTPRoute(ctx, ch, o.edge)
}

// applyHTTPRoute creates the HTTPRoute spec.edge.httpRoute asks for, where the cluster serves
// the Gateway API, and removes one the spec no longer asks for.
func (r *NotificationChannelReconciler) applyHTTPRoute(ctx context.Context, ch *heraldv1.NotificationChannel, st *edgeState) error {
	if _, err := r.RESTMapper().RESTMapping(workloads.HTTPRouteKind.GroupKind(), workloads.HTTPRouteKind.Version); err != nil {
		if meta.IsNoMatchError(err) {
			st.noGatewayAPI = ch.Spec.Edge.HTTPRoute != nil
			return nil
		}
		return fmt.Errorf("looking up the Gateway API's HTTPRoute: %w", err)
	}
	if ch.Spec.Edge.HTTPRoute != nil {
		return r.ensure(ctx, workloads.EdgeHTTPRoute(ch))
	}
	route := &unstructured.Unstructured{}
	route.SetGroupVersionKind(workloads.HTTPRouteKind)
	route.SetNamespace(ch.Namespace)
	route.SetName(workloads.EdgeName(ch))
	return r.deleteIfPresent(ctx, route)
}

// removeEdge deletes the edge's objects (spec.edge was removed).
func (r *NotificationChannelReconciler) removeEdge(ctx context.Context, ch *heraldv1.NotificationChannel) error {
	m := workloads.EdgeServiceAccount(ch).ObjectMeta
	objs := []client.Object{
		&appsv1.Deployment{ObjectMeta: m}, &corev1.Service{ObjectMeta: m}, &policyv1.PodDisruptionBudget{ObjectMeta: m},
		&networkingv1.Ingress{ObjectMeta: m}, &corev1.ServiceAccount{ObjectMeta: m},
	}
	for _, o := range objs {
		if err := client.IgnoreNotFound(r.Delete(ctx, o)); err != nil {
			return fmt.Errorf("removing the edge's %T: %w", o, err)
		}
	}
	if _, err := r.RESTMapper().RESTMapping(workloads.HTTPRouteKind.GroupKind(), workloads.HTTPRouteKind.Version); err == nil {
		route := &unstructured.Unstructured{}
		route.SetGroupVersionKind(workloads.HTTPRouteKind)
		route.SetNamespace(ch.Namespace)
		route.SetName(workloads.EdgeName(ch))
		return r.deleteIfPresent(ctx, route)
	}
	return nil
}

// deleteIfPresent deletes o, which may not exist, reading first so that a steady state sends
// no write (the read is served from the manager's cache).
func (r *NotificationChannelReconciler) deleteIfPresent(ctx context.Context, o client.Object) error {
	probe := o.DeepCopyObject().(client.Object)
	if err := r.Get(ctx, client.ObjectKeyFromObject(o), probe); err != nil {
		return client.IgnoreNotFound(err)
	}
	return client.IgnoreNotFound(r.Delete(ctx, probe))
}

func ptrTo[T any](v T) *T { return &v }
