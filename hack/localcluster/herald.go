package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// HeraldNamespace is where InstallHerald puts the release.
const HeraldNamespace = "herald-system"

// NewClient is a direct (uncached) client of cfg that knows the built-in and Herald's types.
func NewClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(heraldv1.AddToScheme(scheme))
	return client.New(cfg, client.Options{Scheme: scheme})
}

// Chart is the Herald chart InstallHerald installs.
type Chart struct {
	Ref      string // a directory, or an oci:// reference (the node's registry is plain HTTP)
	Version  string // of an oci:// chart
	ImageTag string // image.tag to set, for a chart whose image is not pinned; "" keeps a release's digest
}

// InstallHerald runs `helm upgrade --install herald <chart>` into HeraldNamespace with the
// cluster's Redis as the default Redis, plus set (more --set values), and waits until the
// manager is available.
func (c *Cluster) InstallHerald(ctx context.Context, helm string, chart Chart, set ...string) error {
	if err := c.writeRedisAdminSecret(ctx); err != nil {
		return err
	}
	addrs := strings.Join(c.Redis.Addrs()[:3], ",")
	args := []string{"upgrade", "--install", "herald", chart.Ref, "--kubeconfig", c.Kubeconfig,
		"--namespace", HeraldNamespace, "--create-namespace", "--wait", "--timeout", "4m",
		"--set", "redis.addresses={" + addrs + "}",
		"--set", "redis.existingSecret.name=" + RedisAdminSecret, "--set", "redis.existingSecret.usernameKey="}
	if chart.Version != "" {
		args = append(args, "--version", chart.Version)
	}
	if strings.HasPrefix(chart.Ref, "oci://"+c.Registry+"/") {
		args = append(args, "--plain-http")
	}
	if chart.ImageTag != "" {
		args = append(args, "--set", "image.tag="+chart.ImageTag, "--set", "image.pullPolicy=IfNotPresent")
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.CommandContext(ctx, helm, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("helm install: %v: %s%s", err, out.String(), c.PodsReport(context.Background(), HeraldNamespace, ""))
	}
	return nil
}

// RedisAdminSecret holds the password of the cluster's Redis (its default user) in
// HeraldNamespace, for the chart's redis.existingSecret.
const RedisAdminSecret = "redis-admin"

// writeRedisAdminSecret creates HeraldNamespace and the Secret with the Redis password, or
// updates it.
func (c *Cluster) writeRedisAdminSecret(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: HeraldNamespace}}
	if err := c.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: HeraldNamespace, Name: RedisAdminSecret}}
	_, err := controllerutil.CreateOrUpdate(ctx, c.Client, s, func() error {
		s.Data = map[string][]byte{"password": []byte(c.Redis.Password)}
		return nil
	})
	return err
}

// WaitChannelReady polls a NotificationChannel until its Ready condition is True for its
// current generation, and returns it; on timeout the error quotes the last Ready condition.
func WaitChannelReady(parent context.Context, c client.Client, key client.ObjectKey, within time.Duration) (*heraldv1.NotificationChannel, error) {
	ctx, cancel := context.WithTimeout(parent, within)
	defer cancel()
	last := "not found yet"
	for {
		var ch heraldv1.NotificationChannel
		if err := c.Get(ctx, key, &ch); err == nil {
			cond := meta.FindStatusCondition(ch.Status.Conditions, heraldv1.ConditionReady)
			if cond != nil && cond.Status == "True" && cond.ObservedGeneration == ch.Generation {
				return &ch, nil
			}
			if cond != nil {
				last = fmt.Sprintf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if err := context.Cause(parent); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("channel %s is not Ready after %s: %s", key, within, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitPodsReady waits until count pods match selector in namespace, every one Running with
// all its containers (native sidecars included) ready, and returns them; on timeout the error
// describes each pod.
func (c *Cluster) WaitPodsReady(ctx context.Context, namespace, selector string, count int, within time.Duration) ([]corev1.Pod, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		var pods corev1.PodList
		if err := c.Client.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: sel}); err == nil {
			ready := 0
			for i := range pods.Items {
				if PodReady(&pods.Items[i]) {
					ready++
				}
			}
			if ready == count && len(pods.Items) == count {
				return pods.Items, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pods %q in %s are not %d ready after %s:%s", selector, namespace, count, within, c.PodsReport(context.Background(), namespace, selector))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// PodReady says whether pod runs with every container, init sidecars included, ready.
func PodReady(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, s := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		if !s.Ready && (s.State.Terminated == nil || s.State.Terminated.ExitCode != 0) {
			return false
		}
	}
	return true
}

// PodsReport describes the pods of namespace matching selector ("" for all) and their
// containers' states, for an error message.
func (c *Cluster) PodsReport(ctx context.Context, namespace, selector string) string {
	sel, _ := labels.Parse(selector)
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return "\n  (listing pods: " + err.Error() + ")"
	}
	var b strings.Builder
	if len(pods.Items) == 0 {
		b.WriteString("\n  no pods")
	}
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "\n  pod %s: %s", p.Name, p.Status.Phase)
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue && cond.Message != "" {
				fmt.Fprintf(&b, " (%s: %s)", cond.Type, cond.Message)
			}
		}
		for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, "\n    container %s: ready=%v restarts=%d", s.Name, s.Ready, s.RestartCount)
			switch {
			case s.State.Waiting != nil:
				fmt.Fprintf(&b, " waiting %s %s", s.State.Waiting.Reason, s.State.Waiting.Message)
			case s.State.Terminated != nil:
				fmt.Fprintf(&b, " terminated %s (exit %d) %s", s.State.Terminated.Reason, s.State.Terminated.ExitCode, s.State.Terminated.Message)
			}
		}
	}
	return b.String()
}
