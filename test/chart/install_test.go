package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

const crdName = "notificationchannels.notifications.herald.dev"

// The chart, rendered with several value sets, passes the API server's validation and admission
// (a server-side dry run) without a warning; with its defaults it installs for real.
func TestChartAppliesToAPIServer(t *testing.T) {
	ns := restrictedNamespace(t, "chart-")
	dryRuns := map[string][]string{
		"defaults": nil,
		"Redis with credentials and TLS": {"--set", "redis.addresses={redis-0.redis:6379}",
			"--set", "redis.existingSecret.name=redis-admin", "--set", "redis.tls.enabled=true",
			"--set", "redis.tls.caSecret.name=redis-ca", "--set", "manager.replicas=2"},
		// The cert-manager kinds do not exist here; TestChartRendersWhatValuesAsk checks them.
		"certManager": {"--set", "webhook.certificates.mode=certManager"},
	}
	for name, flags := range dryRuns {
		objs := withoutKinds(mustHelmTemplate(t, ns, flags...), "Issuer", "Certificate")
		for obj, w := range apply(t, objs, true) {
			t.Errorf("%s: the API server warns about %s: %v", name, obj, w)
		}
	}
	objs := mustHelmTemplate(t, ns)
	t.Cleanup(func() { deleteAll(t, objs) })
	for obj, w := range apply(t, objs, false) {
		t.Errorf("the API server warns about %s: %v", obj, w)
	}
	assertInstalled(t, ns)
}

// config/default applies the same way, into the namespace it creates itself.
func TestKustomizeAppliesToAPIServer(t *testing.T) {
	objs := kustomize(t, "config/default")
	nsObj := find(t, objs, "Namespace", "herald-system")
	if l := nsObj.GetLabels(); l["pod-security.kubernetes.io/enforce"] != "restricted" || l["pod-security.kubernetes.io/warn"] != "restricted" {
		t.Errorf("Namespace herald-system labels %v; want Pod Security enforce and warn restricted", l)
	}
	apply(t, []*unstructured.Unstructured{nsObj}, false) // namespaced objects need it even for a dry run
	rest := withoutKinds(objs, "Namespace")
	t.Cleanup(func() { deleteAll(t, rest) })
	for obj, w := range apply(t, rest, true) {
		t.Errorf("the API server warns about %s: %v", obj, w)
	}
	for obj, w := range apply(t, rest, false) {
		t.Errorf("the API server warns about %s: %v", obj, w)
	}
	assertInstalled(t, "herald-system")
}

// `helm install` against the API server: the release is deployed, the CRD comes from the chart's
// crds/ (the one envtest loaded is deleted first), and `helm uninstall` removes what it made.
func TestHelmInstall(t *testing.T) {
	const ns, release = "herald-helm", "herald"
	ctx := context.Background()
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: crdName}}
	if err := k8s.Delete(ctx, crd); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("deleting the CRD envtest installed: %v", err)
	}
	eventually(t, 60*time.Second, func() error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(crd), crd)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("the CRD is still there (err %v)", err)
	})
	// Put the CRD back however this test ends, for the tests that follow.
	t.Cleanup(func() { ensureCRD(t) })

	helm := func(args ...string) []byte {
		t.Helper()
		out, err := run(helmBin, append(args, "--kubeconfig", kubeconfig, "--namespace", ns)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_, _ = run(helmBin, "uninstall", release, "--kubeconfig", kubeconfig, "--namespace", ns)
		}
	})
	var installed struct {
		Info struct {
			Status string `json:"status"`
			Notes  string `json:"notes"`
		} `json:"info"`
	}
	out := helm("install", release, chartDir, "--create-namespace", "--output", "json")
	if err := json.Unmarshal(out, &installed); err != nil {
		t.Fatalf("helm install --output json: %v\n%s", err, out)
	}
	if installed.Info.Status != "deployed" {
		t.Errorf("helm install reports status %q, want deployed", installed.Info.Status)
	}
	for _, want := range []string{"kubectl get nch", "rollout status deployment/herald-manager", "redis.addresses is empty"} {
		if !strings.Contains(installed.Info.Notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, installed.Info.Notes)
		}
	}
	var status struct {
		Info struct {
			Status string `json:"status"`
		} `json:"info"`
	}
	if err := json.Unmarshal(helm("status", release, "--output", "json"), &status); err != nil {
		t.Fatal(err)
	}
	if status.Info.Status != "deployed" {
		t.Errorf("helm status reports %q, want deployed", status.Info.Status)
	}

	assertInstalled(t, ns)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(crd), crd); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(crd.ManagedFields, func(f metav1.ManagedFieldsEntry) bool { return f.Manager == "helm" }) {
		t.Errorf("the CRD was not written by helm (managed fields %v)", crd.ManagedFields)
	}

	helm("uninstall", release)
	uninstalled = true
	for _, obj := range []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "herald-manager"}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "herald-manager"}},
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "herald-sidecar-injector"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "herald-manager", Namespace: ns}},
	} {
		eventually(t, 30*time.Second, func() error {
			err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("%T %s survives helm uninstall (err %v)", obj, obj.GetName(), err)
		})
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(crd), crd); err != nil {
		t.Errorf("helm uninstall removed the CRD (and with it every channel): %v", err)
	}
}

// The samples are what hack/localup applies to the `default` namespace with a plain Create and
// what `kubectl apply -k config/samples` applies; the app is valid and passes the restricted
// Pod Security Standard.
func TestSamplesApplyToAPIServer(t *testing.T) {
	ensureCRD(t)
	objs := kustomize(t, "config/samples")

	// The kustomization lists every sample file, so localup and kustomize apply the same set.
	b, err := os.ReadFile(filepath.Join(root, "config", "samples", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	var samples []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			samples = append(samples, filepath.Base(f))
		}
	}
	slices.Sort(k.Resources)
	if !slices.Equal(samples, k.Resources) {
		t.Errorf("config/samples holds %v but its kustomization lists %v", samples, k.Resources)
	}

	kinds := map[string]int{}
	for _, u := range objs {
		kinds[u.GetKind()]++
	}
	if kinds["NotificationChannel"] != 2 || kinds["Deployment"] != 1 {
		t.Errorf("samples %s; want the Durable and Live channels and one app Deployment", describeAll(objs))
	}
	var app appsv1.Deployment
	for _, u := range objs {
		if u.GetKind() == "Deployment" {
			convert(t, u, &app)
		}
	}
	pod := app.Spec.Template
	if pod.Labels["notifications.herald.dev/inject"] != "true" {
		t.Errorf("app pod labels %v lack notifications.herald.dev/inject: \"true\"", pod.Labels)
	}
	if pod.Annotations["notifications.herald.dev/channels"] != "orders" {
		t.Errorf("app pod annotations %v; want notifications.herald.dev/channels: orders", pod.Annotations)
	}
	// The app is config/samples/orders-app, whose image `make dev` builds (hack/images).
	if cs := pod.Spec.Containers; len(cs) != 1 || !strings.HasPrefix(cs[0].Image, "ghcr.io/heraldhq/orders-app:") {
		t.Errorf("app containers %v; want one running the orders-app image", cs)
	}

	// As localup does: each object into `default` (a dry run: nothing stays behind there).
	ctx := context.Background()
	for _, u := range objs {
		u := u.DeepCopy()
		u.SetNamespace("default")
		if err := k8s.Create(ctx, u, client.DryRunAll); err != nil {
			t.Errorf("creating %s in default: %v", describe(u), err)
		}
	}
	// For real, in a namespace that enforces (and warns about) the restricted standard.
	ns := restrictedNamespace(t, "samples-")
	for _, u := range objs {
		u.SetNamespace(ns)
	}
	t.Cleanup(func() { deleteAll(t, objs) })
	for obj, w := range apply(t, objs, false) {
		t.Errorf("the API server warns about %s: %v", obj, w)
	}
}

// assertInstalled checks, through the API server, that a Herald install is complete in ns.
func assertInstalled(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	get := func(obj client.Object, name, namespace string) {
		t.Helper()
		if err := k8s.Get(ctx, client.ObjectKey{Name: name, Namespace: namespace}, obj); err != nil {
			t.Fatalf("%T %s/%s: %v", obj, namespace, name, err)
		}
	}

	var crd apiextensionsv1.CustomResourceDefinition
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Name: crdName}, &crd); err != nil {
			return err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("CRD %s is not Established: %v", crdName, crd.Status.Conditions)
	})
	if crd.Spec.Names.ShortNames == nil || crd.Spec.Names.ShortNames[0] != "nch" {
		t.Errorf("CRD short names %v, want nch", crd.Spec.Names.ShortNames)
	}

	var sa corev1.ServiceAccount
	get(&sa, "herald-manager", ns)

	var d appsv1.Deployment
	get(&d, "herald-manager", ns)
	spec := d.Spec.Template.Spec
	if spec.ServiceAccountName != "herald-manager" {
		t.Errorf("manager runs as %q, want ServiceAccount herald-manager", spec.ServiceAccountName)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("manager pod has %d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	wantArgs(t, c, "--leader-elect", "--webhook-port=9443")
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("manager probes %+v / %+v, want /healthz and /readyz", c.LivenessProbe, c.ReadinessProbe)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["probes"] != 8081 || ports["metrics"] != 8443 || ports["webhook"] != 9443 {
		t.Errorf("manager ports %v, want probes 8081, metrics 8443 (HTTPS), webhook 9443", ports)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("manager container security context %+v is not restricted", sc)
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("manager pod security context %+v, want runAsNonRoot and RuntimeDefault seccomp", psc)
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		t.Errorf("manager resources %+v lack a memory request", c.Resources)
	}

	var cr rbacv1.ClusterRole
	get(&cr, "herald-manager", "")
	for _, p := range perms(generatedRules(t)) {
		if !grants(cr.Rules, p) {
			t.Errorf("installed ClusterRole herald-manager lacks %+v", p)
		}
	}
	assertManagerMay(t, ns)
	var crb rbacv1.ClusterRoleBinding
	get(&crb, "herald-manager", "")
	wantBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", ns)
	var role rbacv1.Role
	get(&role, "herald-leader-election", ns)
	if !grants(role.Rules, perm{"coordination.k8s.io", "leases", "update", ""}) || !grants(role.Rules, perm{"", "events", "create", ""}) {
		t.Errorf("leader election Role %+v cannot update Leases and create Events", role.Rules)
	}
	var rb rbacv1.RoleBinding
	get(&rb, "herald-leader-election", ns)
	wantBinding(t, rb.RoleRef, rb.Subjects, "Role", ns)

	var svc corev1.Service
	get(&svc, "herald-webhook", ns)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 ||
		svc.Spec.Ports[0].TargetPort != intstr.FromString("webhook") {
		t.Errorf("webhook Service ports %+v, want 443 -> the manager's webhook port (9443)", svc.Spec.Ports)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if svc.Spec.Selector[k] != v {
			t.Errorf("webhook Service selector %v does not select the manager pods (%v)", svc.Spec.Selector, d.Spec.Selector.MatchLabels)
		}
	}
	var metrics corev1.Service
	get(&metrics, "herald-metrics", ns)
	if len(metrics.Spec.Ports) != 1 || metrics.Spec.Ports[0].TargetPort != intstr.FromString("metrics") {
		t.Errorf("metrics Service ports %+v, want the manager's metrics port", metrics.Spec.Ports)
	}

	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	get(&mwc, "herald-sidecar-injector", "")
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("herald-sidecar-injector has %d webhooks, want 1", len(mwc.Webhooks))
	}
	wh := mwc.Webhooks[0]
	if wh.ObjectSelector == nil || len(wh.ObjectSelector.MatchLabels) != 1 ||
		wh.ObjectSelector.MatchLabels["notifications.herald.dev/inject"] != "true" {
		t.Errorf("injector objectSelector %+v, want exactly notifications.herald.dev/inject: \"true\"", wh.ObjectSelector)
	}
	if fp := wh.FailurePolicy; fp == nil || *fp != admissionregistrationv1.Fail {
		t.Errorf("injector failurePolicy %s, want Fail", ptrString(fp))
	}
	if wh.SideEffects == nil || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		!slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("injector sideEffects %s, admissionReviewVersions %v; want None and [v1]", ptrString(wh.SideEffects), wh.AdmissionReviewVersions)
	}
	if s := wh.ClientConfig.Service; s == nil || s.Name != "herald-webhook" || s.Namespace != ns ||
		s.Path == nil || *s.Path != "/mutate-v1-pod" || s.Port == nil || *s.Port != 443 {
		t.Errorf("injector clientConfig %+v, want Service %s/herald-webhook:443 /mutate-v1-pod", wh.ClientConfig.Service, ns)
	}
	if len(wh.Rules) != 1 || !slices.Equal(wh.Rules[0].Resources, []string{"pods"}) ||
		!slices.Equal(wh.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
		t.Errorf("injector rules %+v, want CREATE of pods only", wh.Rules)
	}
}

// assertManagerMay asks the API server's own authorizer (SubjectAccessReview) whether the
// manager's ServiceAccount in ns may do what the code needs, and may not do a few things it
// does not need.
func assertManagerMay(t *testing.T, ns string) {
	t.Helper()
	may := func(p perm, namespace string) bool {
		t.Helper()
		res, sub, _ := strings.Cut(p.resource, "/")
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + ns + ":herald-manager",
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: namespace, Verb: p.verb, Group: p.group, Resource: res, Subresource: sub, Name: p.name,
			},
		}}
		if err := k8s.Create(context.Background(), sar); err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		return sar.Status.Allowed
	}
	for _, p := range perms(generatedRules(t)) {
		if !may(p, "") { // in every namespace
			t.Errorf("the manager's ServiceAccount may not %+v in every namespace", p)
		}
	}
	for _, p := range []perm{{"coordination.k8s.io", "leases", "update", "herald-manager.notifications.herald.dev"}, {"", "events", "create", ""}} {
		if !may(p, ns) {
			t.Errorf("the manager's ServiceAccount may not %+v in its namespace (leader election)", p)
		}
	}
	for _, p := range []perm{
		{"coordination.k8s.io", "leases", "update", ""},                    // only in its own namespace
		{"", "pods", "create", ""},                                         // the webhook mutates, never creates, pods
		{"", "nodes", "get", ""},                                           // nothing about nodes
		{"notifications.herald.dev", "notificationchannels", "delete", ""}, // channels belong to their teams
		{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", "someone-elses-webhook"},
	} {
		if may(p, "") {
			t.Errorf("the manager's ServiceAccount may %+v in every namespace, which it does not need", p)
		}
	}
}

func wantBinding(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, ns string) {
	t.Helper()
	want := rbacv1.Subject{Kind: "ServiceAccount", Name: "herald-manager", Namespace: ns}
	if ref.Kind != kind || len(subjects) != 1 || subjects[0] != want {
		t.Errorf("binding %+v to %+v; want %s bound to ServiceAccount %s/herald-manager", ref, subjects, kind, ns)
	}
}

// restrictedNamespace creates a namespace of its own that enforces and warns about the restricted
// Pod Security Standard, so the API server judges every pod template applied to it.
func restrictedNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"pod-security.kubernetes.io/warn":    "restricted",
	}}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// ensureCRD applies the generated CRD (if a test removed it) and waits until it is established.
func ensureCRD(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "config", "crd", "bases", "notifications.herald.dev_notificationchannels.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, objs, false)
	eventually(t, 30*time.Second, func() error {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: crdName}, &crd); err != nil {
			return err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("CRD not established yet")
	})
}

// deleteAll deletes what a test applied, except CRDs and Namespaces (shared, and namespaces never
// finish deleting without a controller manager), and waits until cluster-scoped objects are
// gone, so that `helm install` can own them afterwards.
func deleteAll(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	for _, u := range withoutKinds(objs, "CustomResourceDefinition", "Namespace") {
		u := u.DeepCopy()
		if err := k8s.Delete(ctx, u); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s: %v", describe(u), err)
			continue
		}
		if u.GetNamespace() == "" {
			eventually(t, 30*time.Second, func() error {
				err := k8s.Get(ctx, client.ObjectKeyFromObject(u), u.DeepCopy())
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("%s is still there (err %v)", describe(u), err)
			})
		}
	}
}

func withoutKinds(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if !slices.Contains(kinds, u.GetKind()) {
			out = append(out, u)
		}
	}
	return out
}

// ptrString prints what a pointer to a string type points at, or <nil>.
func ptrString[S ~string](p *S) string {
	if p == nil {
		return "<nil>"
	}
	return string(*p)
}

// The samples with an edge (config/samples-edge) are the samples with the `orders` channel's
// edge and the app serving the order tracker: valid for the API server (the CRD's schema and
// the restricted Pod Security Standard), and the app signs with the key the edge checks.
func TestEdgeSamplesApplyToAPIServer(t *testing.T) {
	ensureCRD(t)
	objs := kustomize(t, "config/samples-edge")
	var ch heraldv1.NotificationChannel
	var app appsv1.Deployment
	for _, u := range objs {
		switch {
		case u.GetKind() == "NotificationChannel" && u.GetName() == "orders":
			convert(t, u, &ch)
		case u.GetKind() == "Deployment":
			convert(t, u, &app)
		}
	}
	if ch.Spec.Edge == nil || ch.Spec.Edge.Auth.HMACSecretRef == nil || ch.Spec.Retention == nil || ch.Spec.Retention.HistoryPerKey == 0 {
		t.Fatalf("the orders channel of the edge samples: %+v; want spec.edge with an HMAC key and retention.historyPerKey", ch.Spec)
	}
	env := map[string]string{}
	for _, e := range app.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	ref := ch.Spec.Edge.Auth.HMACSecretRef
	var mount string
	for _, v := range app.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == ref.Name {
			for _, m := range app.Spec.Template.Spec.Containers[0].VolumeMounts {
				if m.Name == v.Name {
					mount = m.MountPath
				}
			}
		}
	}
	if mount == "" || env["EDGE_KEY_FILE"] != mount+"/"+ref.Key || env["EDGE_URL"] == "" {
		t.Errorf("the app signs with EDGE_KEY_FILE=%q (Secret %s mounted at %q), EDGE_URL=%q; want the edge's key %s/%s",
			env["EDGE_KEY_FILE"], ref.Name, mount, env["EDGE_URL"], ref.Name, ref.Key)
	}
	ns := restrictedNamespace(t, "edge-samples-")
	for _, u := range objs {
		u.SetNamespace(ns)
	}
	t.Cleanup(func() { deleteAll(t, objs) })
	for obj, w := range apply(t, objs, false) {
		t.Errorf("the API server warns about %s: %v", obj, w)
	}
}
