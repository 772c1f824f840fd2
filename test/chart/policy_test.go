package chart

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The manager caches only objects labelled app.kubernetes.io/managed-by=herald-operator. The
// chart's admission policies keep that label the manager's: a tenant with every right in its
// namespace cannot put it on an object (one it creates, or one it changes), so it cannot fill
// the manager's cache; the manager can, and the objects it marked stay editable as RBAC allows.
// The manager itself may delete only its own ClusterRoleBindings, reads no Secret of a
// namespace where it has not bound herald-manager-secrets to itself, and can bind that role to
// nobody else. Without the policies, or with the chart's old cluster-wide rule on Secrets, a
// refused request here succeeds.
func TestAdmissionPoliciesKeepTheManagersLabelItsOwn(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t, "policy-")
	var objs []*unstructured.Unstructured
	for _, u := range mustHelmTemplate(t, ns) {
		switch u.GetKind() {
		case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount":
			objs = append(objs, u)
		}
	}
	t.Cleanup(func() { deleteAll(t, objs) })
	apply(t, objs, false)

	manager := impersonate(t, "system:serviceaccount:"+ns+":herald-manager", "system:serviceaccounts", "system:serviceaccounts:"+ns, "system:authenticated")
	tenant := impersonate(t, "tenant", "system:authenticated")
	// What a namespace admin may do with Secrets (envtest aggregates no roles, so "admin" is empty).
	must(t, k8s.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-admin"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "create", "update", "patch", "delete"}}}}))
	must(t, k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-admin"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tenant-admin"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tenant"}}}))

	marked := func(name string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "herald-operator"}},
			Data: map[string][]byte{"filler": make([]byte, 512<<10)}}
	}
	refused := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only its manager may put it on an object") {
			t.Errorf("%s: %v; want it refused by the policy herald-managed-objects", what, err)
		}
	}
	// RBAC and the policies take effect once the API server has loaded them.
	plain := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"}, Data: map[string][]byte{"k": []byte("v")}}
	eventually(t, 30*time.Second, func() error { return tenant.Create(ctx, plain) })
	eventually(t, 30*time.Second, func() error {
		err := tenant.Create(ctx, marked("filler-0"))
		if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "herald-managed-objects") {
			return nil
		}
		if err == nil {
			_ = k8s.Delete(ctx, marked("filler-0"))
		}
		return fmt.Errorf("a tenant's labelled Secret: %v", err)
	})
	refused("a tenant creates a Secret with the manager's label", tenant.Create(ctx, marked("filler-1")))
	plain.Labels = map[string]string{"app.kubernetes.io/managed-by": "herald-operator"}
	refused("a tenant labels its Secret as the manager's", tenant.Update(ctx, plain))

	// The manager marks its objects; a tenant may still change them as RBAC allows.
	mine := marked("herald-made")
	mine.Data = map[string][]byte{"password": []byte("s3cret")}
	eventually(t, 30*time.Second, func() error { return manager.Create(ctx, mine) }) // in its own namespace (RBAC loads)
	mine.Annotations = map[string]string{"touched-by": "tenant"}
	if err := tenant.Update(ctx, mine); err != nil {
		t.Errorf("a tenant updates a Secret the manager made: %v; want it allowed (RBAC decides)", err)
	}

	// ClusterRoleBindings: the manager's own come and go; another party's stays.
	others := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-someone-elses"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "someone"}}}
	must(t, k8s.Create(ctx, others))
	t.Cleanup(func() { _ = k8s.Delete(ctx, others) })
	if err := manager.Delete(ctx, others); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only its own bindings") {
		t.Errorf("the manager deletes another party's ClusterRoleBinding: %v; want it refused by herald-manager-bindings", err)
	}
	own := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "herald-relay." + ns + ".orders", Labels: map[string]string{"app.kubernetes.io/managed-by": "herald-operator"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "herald-relay"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "orders-relay"}}}
	must(t, manager.Create(ctx, own))
	must(t, manager.Delete(ctx, own))

	// Secrets: the manager holds no right on them across the cluster, only the binding of
	// herald-manager-secrets to itself, which it makes in the namespaces of its channels.
	appNS := restrictedNamespace(t, "channels-")
	theirs := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "app-database"}, Data: map[string][]byte{"password": []byte("x")}}
	must(t, k8s.Create(ctx, theirs))
	if err := manager.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); !apierrors.IsForbidden(err) {
		t.Errorf("the manager reads a Secret of a namespace it has not bound itself in: %v; want 403", err)
	}
	var list corev1.SecretList
	if err := manager.List(ctx, &list); !apierrors.IsForbidden(err) {
		t.Errorf("the manager lists Secrets across the cluster: %v; want 403", err)
	}
	binding := func(role string, subject rbacv1.Subject) *rbacv1.RoleBinding {
		return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, GenerateName: "herald-manager-secrets-",
			Labels: map[string]string{"app.kubernetes.io/managed-by": "herald-operator"}},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}, Subjects: []rbacv1.Subject{subject}}
	}
	itself := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "herald-manager"}
	if err := manager.Create(ctx, binding("herald-manager-secrets", rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tenant"})); !apierrors.IsForbidden(err) {
		t.Errorf("the manager grants herald-manager-secrets to another user: %v; want it refused by herald-manager-bindings", err)
	}
	if err := manager.Create(ctx, binding("herald-relay", itself)); !apierrors.IsForbidden(err) {
		t.Errorf("the manager binds herald-relay in a namespace: %v; want it refused by herald-manager-bindings", err)
	}
	must(t, manager.Create(ctx, binding("herald-manager-secrets", itself)))
	eventually(t, 30*time.Second, func() error { return manager.Get(ctx, client.ObjectKeyFromObject(theirs), theirs) })
	if err := manager.List(ctx, &list, client.InNamespace(appNS)); !apierrors.IsForbidden(err) {
		t.Errorf("the manager lists the Secrets of a namespace with a channel: %v; want 403 (it reads them one by one)", err)
	}
}

// impersonate is a client of the API server acting as user (with groups), under RBAC.
func impersonate(t *testing.T, user string, groups ...string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	must(t, err)
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
