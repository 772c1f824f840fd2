package controllers

import (
	"context"
	"fmt"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
)

// grantSecrets lets the manager at the Secrets of the channel's namespace before it reads or
// writes any there. The manager holds no right on Secrets across the cluster, only `bind` on
// SecretsClusterRole, which it binds here to its own ServiceAccount: it reaches the Secrets of
// namespaces that have channels, and of no other. The binding is read uncached (the manager
// neither lists nor watches RoleBindings) and written only when it is missing or lacks this
// channel as an owner.
func (r *NotificationChannelReconciler) grantSecrets(ctx context.Context, ch *heraldv1.NotificationChannel) error {
	if r.SecretsClusterRole == "" {
		return nil // the manager's own RBAC covers Secrets
	}
	desired := workloads.SecretsBinding(ch, r.SecretsClusterRole, r.ManagerServiceAccount)
	var live rbacv1.RoleBinding
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), &live)
	if apierrors.IsNotFound(err) {
		if err := r.Create(ctx, desired); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("binding %s to the manager in namespace %s: %w", r.SecretsClusterRole, ch.Namespace, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading RoleBinding %s/%s: %w", ch.Namespace, desired.Name, err)
	}
	if live.RoleRef != desired.RoleRef {
		// A roleRef cannot change (--secrets-cluster-role did): replace the binding.
		if err := r.Delete(ctx, &live); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("replacing RoleBinding %s/%s: %w", ch.Namespace, live.Name, err)
		}
		return fmt.Errorf("RoleBinding %s/%s bound %s: replaced on the next pass", ch.Namespace, live.Name, live.RoleRef.Name)
	}
	owner := workloads.SecretsBindingOwner(ch)
	owned := slices.ContainsFunc(live.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == owner.UID })
	if owned && equality.Semantic.DeepEqual(live.Subjects, desired.Subjects) {
		return nil
	}
	if !owned {
		live.OwnerReferences = append(live.OwnerReferences, owner)
	}
	live.Subjects = desired.Subjects
	if err := r.Update(ctx, &live); err != nil {
		return fmt.Errorf("updating RoleBinding %s/%s: %w", ch.Namespace, live.Name, err)
	}
	return nil
}
