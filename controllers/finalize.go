package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/relay/shardmap"
)

// finalize carries out the deletion policy (Delete: the channel's keys and ACL user go; Retain:
// the keys stay and the user is disabled), then releases the finalizer. The Kubernetes children
// go with the channel through their owner references. Cleanup of Redis is retried for
// CleanupTimeout; after that the channel says so in its Ready condition and waits for the
// skip-cleanup annotation, so a Redis that is gone for good never holds a namespace forever.
// The annotation is the channel owner's to set, so it never spares the user: with it the data
// is retained, but the user is still disabled wherever Redis answers, and the channel is
// released without that only once CleanupTimeout has passed (the Redis is gone for good).
func (r *NotificationChannelReconciler) finalize(ctx context.Context, ch *heraldv1.NotificationChannel) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(ch, heraldv1.Finalizer) {
		return ctrl.Result{}, nil
	}
	skip := ch.Annotations[heraldv1.SkipCleanupAnnotation] == "true"
	outside := false // the operator never dials a Redis outside its policy, not even to clean up
	if err := r.Policy.checkRedis(ch); err != nil {
		log.FromContext(ctx).Info("Released without Redis cleanup", "reason", err.Error())
		outside = true
	}
	if !outside {
		// Delete removes the data and the user; Retain keeps the data but disables the user, so
		// the password the channel's namespace held opens nothing once the channel is gone.
		cleanup, what := r.disableUser, "disable the channel's Redis user"
		if ch.Spec.DeletionPolicy == heraldv1.DeletionDelete && !skip {
			cleanup, what = r.cleanupRedis, "delete the channel's Redis data"
		}
		work, cancel := context.WithTimeout(ctx, r.reconcileTimeout())
		err := cleanup(work, ch)
		cancel()
		if err != nil {
			waited := r.now().Sub(ch.DeletionTimestamp.Time)
			reconcileErrors.WithLabelValues(heraldv1.ReasonCleanupFailed).Inc()
			switch {
			case waited < r.cleanupTimeout():
				r.setDeleting(ctx, ch, heraldv1.ReasonDeleting, fmt.Sprintf("Trying to %s: %v; retrying.", what, err))
				return ctrl.Result{}, err
			case !skip:
				r.setDeleting(ctx, ch, heraldv1.ReasonCleanupFailed, fmt.Sprintf(
					"Could not %s for %s: %v. Fix Redis, or annotate the channel with %s=true to release it without cleanup.",
					what, waited.Round(time.Second), err, heraldv1.SkipCleanupAnnotation))
				return ctrl.Result{}, nil // bounded: wait for the annotation (or any edit) instead of retrying forever
			}
			log.FromContext(ctx).Info("Releasing without Redis cleanup: Redis did not answer for the cleanup timeout", "error", err.Error())
		}
	}
	// The relays' TokenReview binding is cluster-scoped: owner references cannot collect it.
	if err := client.IgnoreNotFound(r.Delete(ctx, workloads.TokenReviewBinding(ch, r.RelayClusterRole))); err != nil {
		return ctrl.Result{}, fmt.Errorf("deleting the relays' TokenReview binding: %w", err)
	}
	orig := ch.DeepCopy()
	controllerutil.RemoveFinalizer(ch, heraldv1.Finalizer)
	if err := r.Patch(ctx, ch, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("releasing finalizer: %w", err)
	}
	r.redisUsers.forget(client.ObjectKeyFromObject(ch))
	r.libraries.forget(client.ObjectKeyFromObject(ch))
	forgetConditions(ch.Namespace, ch.Name)
	log.FromContext(ctx).Info("Released channel", "deletionPolicy", ch.Spec.DeletionPolicy, "skipCleanupAnnotation", skip)
	return ctrl.Result{}, nil
}

// cleanupRedis removes the channel's keys (streams, idempotency keys) and its ACL user from every node.
func (r *NotificationChannelReconciler) cleanupRedis(ctx context.Context, ch *heraldv1.NotificationChannel) error {
	conn, nodes, err := r.channelRedis(ctx, ch)
	if err != nil {
		return err
	}
	removed, err := conn.DeleteKeys(ctx, nodes, shardmap.KeyPattern(ch.Namespace, ch.Name))
	if err != nil {
		return err
	}
	if err := conn.DeleteUser(ctx, nodes, shardmap.ACLUser(ch.Namespace, ch.Name)); err != nil {
		return err
	}
	log.FromContext(ctx).Info("Deleted the channel's Redis data", "keys", removed, "nodes", len(nodes))
	return nil
}

// disableUser turns the channel's ACL user off on every node and forgets its password
// (deletionPolicy Retain): the streams stay for a channel applied again, which turns the user on
// with a password of its own.
func (r *NotificationChannelReconciler) disableUser(ctx context.Context, ch *heraldv1.NotificationChannel) error {
	conn, nodes, err := r.channelRedis(ctx, ch)
	if err != nil {
		return err
	}
	if err := conn.DisableUser(ctx, nodes, shardmap.ACLUser(ch.Namespace, ch.Name)); err != nil {
		return err
	}
	log.FromContext(ctx).Info("Disabled the channel's Redis user; its data is retained", "nodes", len(nodes))
	return nil
}

// channelRedis is a connection to the channel's Redis and its nodes.
func (r *NotificationChannelReconciler) channelRedis(ctx context.Context, ch *heraldv1.NotificationChannel) (*redisconf.Conn, []redisconf.Node, error) {
	// Only a channel with a Redis of its own reads Secrets here. In a namespace being deleted
	// the binding may be gone and cannot be made again (Forbidden): then its Secrets are gone
	// too, and reading them fails on its own.
	if ch.Spec.Redis != nil {
		if err := r.grantSecrets(ctx, ch); err != nil && !apierrors.IsForbidden(err) {
			return nil, nil, err
		}
	}
	opts, _, err := r.redisOptions(ctx, ch)
	if err != nil {
		return nil, nil, err
	}
	conn := r.Redis.Get(opts)
	_, nodes, err := conn.Discover(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach Redis: %w", err)
	}
	return conn, nodes, nil
}

func (r *NotificationChannelReconciler) setDeleting(ctx context.Context, ch *heraldv1.NotificationChannel, reason, msg string) {
	status := *ch.Status.DeepCopy()
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: heraldv1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: reason, Message: msg, ObservedGeneration: ch.Generation})
	if err := r.writeStatus(ctx, ch, status); err != nil { // records the transition as an event
		log.FromContext(ctx).Error(err, "Writing deletion status")
	}
}

func (r *NotificationChannelReconciler) cleanupTimeout() time.Duration {
	if r.CleanupTimeout > 0 {
		return r.CleanupTimeout
	}
	return 10 * time.Minute
}
