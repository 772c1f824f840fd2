package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// NotificationChannelReconciler reconciles NotificationChannel objects.
type NotificationChannelReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder // events on condition transitions
}

// +kubebuilder:rbac:groups=notifications.herald.dev,resources=notificationchannels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=notifications.herald.dev,resources=notificationchannels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=notifications.herald.dev,resources=notificationchannels/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one channel closer to its spec and reports what it sees.
func (r *NotificationChannelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ch heraldv1.NotificationChannel
	if err := r.Get(ctx, req.NamespacedName, &ch); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("generation", ch.Generation))

	if !ch.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, &ch)
	}
	if !controllerutil.ContainsFinalizer(&ch, heraldv1.Finalizer) {
		orig := ch.DeepCopy()
		controllerutil.AddFinalizer(&ch, heraldv1.Finalizer)
		if err := r.Patch(ctx, &ch, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	status := computeStatus(&ch)
	if equality.Semantic.DeepEqual(status, ch.Status) {
		return ctrl.Result{}, nil
	}
	orig := ch.DeepCopy()
	ch.Status = status
	if err := r.Status().Patch(ctx, &ch, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("writing status: %w", err)
	}
	return ctrl.Result{}, nil
}

// computeStatus rebuilds the status from what the reconciler knows. Conditions keep their
// lastTransitionTime when nothing about them changed.
func computeStatus(ch *heraldv1.NotificationChannel) heraldv1.NotificationChannelStatus {
	status := *ch.Status.DeepCopy()
	status.ObservedGeneration = ch.Generation
	set := func(typ string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: ch.Generation,
		})
	}
	set(heraldv1.ConditionRedisConfigured, metav1.ConditionUnknown, heraldv1.ReasonProvisioning,
		"Shard placement, streams and ACL users have not been provisioned yet.")
	set(heraldv1.ConditionRelaysAvailable, metav1.ConditionUnknown, heraldv1.ReasonProvisioning,
		"Relay Deployments have not been created yet.")
	set(heraldv1.ConditionDegraded, metav1.ConditionFalse, heraldv1.ReasonAsExpected, "Nothing is degraded.")
	set(heraldv1.ConditionReady, metav1.ConditionFalse, heraldv1.ReasonProvisioning,
		"Waiting for Redis configuration and relays.")
	return status
}

// finalize carries out the deletion policy, then releases the finalizer.
func (r *NotificationChannelReconciler) finalize(ctx context.Context, ch *heraldv1.NotificationChannel) error {
	if !controllerutil.ContainsFinalizer(ch, heraldv1.Finalizer) {
		return nil
	}
	orig := ch.DeepCopy()
	controllerutil.RemoveFinalizer(ch, heraldv1.Finalizer)
	if err := r.Patch(ctx, ch, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("releasing finalizer: %w", err)
	}
	log.FromContext(ctx).Info("Released channel", "deletionPolicy", ch.Spec.DeletionPolicy)
	return nil
}

// SetupWithManager registers the reconciler with the manager.
func (r *NotificationChannelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&heraldv1.NotificationChannel{}).
		Named("notificationchannel").
		Complete(r)
}
