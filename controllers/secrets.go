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
		err = r.Create(ctx, desired)
		if !apierrors.IsAlreadyExists(err) {
			if err != nil {
				return fmt.Errorf("binding %s to the manager in namespace %s: %w", r.SecretsClusterRole, ch.Namespace, err)
			}
			return nil
		}
		// Another channel of the namespace made it meanwhile: join its owners.
		err = r.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), &live)
	}
	if err != nil {
		return fmt.Errorf("reading RoleBinding %s/%s: %w", ch.Namespace, desired.Name, err)
	}
	if live.RoleRef != desired.RoleRef {
		// A roleRef cannot change, and the admission policy lets the manager delete only its
		// bindings of herald-manager-secrets: --secrets-cluster-role changed.
		return fmt.Errorf("RoleBinding %s/%s binds %s, not %s (--secrets-cluster-role): delete it, and the manager makes it anew",
			ch.Namespace, live.Name, live.RoleRef.Name, desired.RoleRef.Name)
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
