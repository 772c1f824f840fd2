package localstack

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ownedKinds are the kinds the operator creates for a channel. envtest has no
// kube-controller-manager, so nothing garbage-collects them when their channel is deleted; the
// runner does, for objects labelled managed-by=herald-operator only.
var ownedKinds = []schema.GroupVersionKind{
	{Group: "apps", Version: "v1", Kind: "DeploymentList"},
	{Version: "v1", Kind: "ServiceList"},
	{Version: "v1", Kind: "ConfigMapList"},
	{Version: "v1", Kind: "SecretList"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudgetList"},
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicyList"},
}

// collectGarbage deletes managed objects whose controller owner no longer exists (background
// propagation: their own dependents go on a later pass).
func (r *Runner) collectGarbage(ctx context.Context) error {
	var errs []error
	for _, gvk := range ownedKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk)
		if err := r.client.List(ctx, list, client.MatchingLabels{LabelManagedBy: ManagedBy}); err != nil {
			errs = append(errs, fmt.Errorf("listing %s: %w", gvk.Kind, err))
			continue
		}
		for i := range list.Items {
			obj := &list.Items[i]
			for _, ref := range obj.GetOwnerReferences() {
				if ref.Controller == nil || !*ref.Controller {
					continue
				}
				owner := &unstructured.Unstructured{}
				owner.SetAPIVersion(ref.APIVersion)
				owner.SetKind(ref.Kind)
				err := r.client.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: ref.Name}, owner)
				gone := apierrors.IsNotFound(err) || (err == nil && owner.GetUID() != ref.UID)
				if err != nil && !gone {
					errs = append(errs, err)
					continue
				}
				if gone {
					r.opt.Logf("garbage collector: deleting %s %s/%s (owner %s %s is gone)", obj.GetKind(), obj.GetNamespace(), obj.GetName(), ref.Kind, ref.Name)
					if err := r.client.Delete(ctx, obj, client.PropagationPolicy("Background")); err != nil && !apierrors.IsNotFound(err) {
						errs = append(errs, err)
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}
