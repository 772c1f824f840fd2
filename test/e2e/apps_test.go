//go:build e2e

package e2e

import (
	"context"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/injection"
	"github.com/heraldhq/herald/relay/shardmap"
)

// appDeployment runs one pod, opted in to injection when inject is set, whose app container
// (test/e2e/forwarder) forwards <pod IP>:8080 to the sidecar, so the test, outside the pod,
// talks to the injected sidecar as the app does.
func appDeployment(namespace, name, channels string, inject bool) *appsv1.Deployment {
	one := int32(1)
	podLabels := map[string]string{"app": name}
	if inject {
		podLabels[heraldv1.InjectLabel] = "true"
	}
	nonRoot, noEscalation := true, false
	uid := int64(65532)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: map[string]string{heraldv1.ChannelsAnnotation: channels}},
				Spec: corev1.PodSpec{
					ServiceAccountName:           name,
					AutomountServiceAccountToken: &noEscalation,
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Containers: []corev1.Container{{
						Name: "app", Image: forwarderImage, ImagePullPolicy: corev1.PullIfNotPresent,
						Ports: []corev1.ContainerPort{{Name: "forward", ContainerPort: 8080}},
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &noEscalation,
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
				},
			},
		},
	}
}

// startApp creates namespace (if new), the service account and the app Deployment, waits for
// its pod to be ready with every container, and returns the pod and the base URL of its
// sidecar as forwarded by the app.
func startApp(t *testing.T, ctx context.Context, namespace, name, channels string) (corev1.Pod, string) {
	t.Helper()
	return startAppOn(t, ctx, namespace, name, channels, "")
}

// startAppOn is startApp with the pod on the node nodeName ("": any).
func startAppOn(t *testing.T, ctx context.Context, namespace, name, channels, nodeName string) (corev1.Pod, string) {
	t.Helper()
	ensureNamespace(t, ctx, namespace)
	must(t, node.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}))
	d := appDeployment(namespace, name, channels, true)
	if nodeName != "" {
		d.Spec.Template.Spec.NodeSelector = map[string]string{corev1.LabelHostname: nodeName}
	}
	must(t, node.Client.Create(ctx, d))
	pods, err := node.WaitPodsReady(ctx, namespace, "app="+name, 1, readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return pods[0], "http://" + pods[0].Status.PodIP + ":8080"
}

func ensureNamespace(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	err := node.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// checkInjected asserts what the webhook promises an opted-in pod: exactly one Herald sidecar,
// a native one (an init container with restartPolicy Always), that started and became ready
// before the app container started, and HERALD_URL in the app container.
func checkInjected(t *testing.T, pod corev1.Pod) {
	t.Helper()
	var sidecars []corev1.Container
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Name == injection.ContainerName {
			sidecars = append(sidecars, c)
		}
	}
	if len(sidecars) != 1 || len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != injection.ContainerName {
		t.Fatalf("pod %s: want exactly one %s, as its only init container; init %d, all %d", pod.Name, injection.ContainerName, len(pod.Spec.InitContainers), len(sidecars))
	}
	if rp := pod.Spec.InitContainers[0].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Errorf("pod %s: the sidecar's restartPolicy is %v, want Always (a native sidecar)", pod.Name, rp)
	}
	var url string
	for _, e := range pod.Spec.Containers[0].Env {
		if e.Name == injection.URLEnv {
			url = e.Value
		}
	}
	if url != "http://127.0.0.1:7070" {
		t.Errorf("pod %s: app container %s=%q", pod.Name, injection.URLEnv, url)
	}
	if len(pod.Status.InitContainerStatuses) != 1 || len(pod.Status.ContainerStatuses) != 1 {
		t.Fatalf("pod %s: statuses of %d init and %d app containers", pod.Name, len(pod.Status.InitContainerStatuses), len(pod.Status.ContainerStatuses))
	}
	side, app := pod.Status.InitContainerStatuses[0], pod.Status.ContainerStatuses[0]
	if side.State.Running == nil || app.State.Running == nil || !side.Ready || side.RestartCount != 0 {
		t.Fatalf("pod %s: sidecar %+v, app %+v: want both running, the sidecar ready and never restarted", pod.Name, side.State, app.State)
	}
	// The kubelet starts the app only once the sidecar's startup probe passed: the pod's
	// Initialized condition turns True between the two starts.
	var initialized time.Time
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodInitialized && c.Status == corev1.ConditionTrue {
			initialized = c.LastTransitionTime.Time
		}
	}
	sideStart, appStart := side.State.Running.StartedAt.Time, app.State.Running.StartedAt.Time
	if initialized.IsZero() || sideStart.After(initialized) || initialized.After(appStart) {
		t.Errorf("pod %s: sidecar started %s, pod initialized %s, app started %s: want them in that order",
			pod.Name, sideStart.Format(time.RFC3339), initialized.Format(time.RFC3339), appStart.Format(time.RFC3339))
	}
}

// relayPods are the ready pods of a shard's relay Deployment.
func relayPods(t *testing.T, ctx context.Context, namespace, channel string, shard int) []corev1.Pod {
	t.Helper()
	var d appsv1.Deployment
	must(t, node.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: shardmap.ShardDeploymentName(channel, shard)}, &d))
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	must(t, err)
	var pods corev1.PodList
	must(t, node.Client.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: sel}))
	var ready []corev1.Pod
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				ready = append(ready, p)
			}
		}
	}
	return ready
}

// relayAddr is the address a relay pod serves HTTP API v1 and /metrics on.
func relayAddr(p corev1.Pod) string {
	return p.Status.PodIP + ":" + strconv.Itoa(shardmap.RelayPort)
}

// startRefusedApp is startApp for a pod whose sidecar is never ready (the relays refuse it):
// it waits only for the app container to run.
func startRefusedApp(t *testing.T, ctx context.Context, namespace, name, channels string) string {
	t.Helper()
	ensureNamespace(t, ctx, namespace)
	must(t, node.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}))
	must(t, node.Client.Create(ctx, appDeployment(namespace, name, channels, true)))
	var url string
	if err := await(readyTimeout, func() bool {
		var pods corev1.PodList
		_ = node.Client.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{"app": name})
		for _, p := range pods.Items {
			for _, s := range p.Status.ContainerStatuses {
				if s.State.Running != nil && p.Status.PodIP != "" {
					url = "http://" + p.Status.PodIP + ":8080"
				}
			}
		}
		return url != ""
	}); err != nil {
		t.Fatalf("the app container of %s/%s never ran:%s", namespace, name, node.PodsReport(ctx, namespace, "app="+name))
	}
	return url
}

// serviceAccountToken mints a token of namespace/name (created if missing) for the channel's
// audience, as the kubelet does for the volume the injector projects.
func serviceAccountToken(t *testing.T, ctx context.Context, namespace, name string, ch *heraldv1.NotificationChannel) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := node.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	hour := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{shardmap.TokenAudience(ch.Namespace, ch.Name)}, ExpirationSeconds: &hour}}
	must(t, node.Client.SubResource("token").Create(ctx, sa, tr))
	return tr.Status.Token
}
