//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/hack/localcluster"
)

// The suite runs a release as a platform team gets it: `make release` pushed the image (an
// index of linux/amd64 and linux/arm64) and the chart to the node's registry, helm installed the
// chart from oci://, and the node pulled the image by the digest the chart pins, for the manager,
// the relays and the sidecars alike.
func TestHeraldRunsTheReleaseItPulled(t *testing.T) {
	ctx := context.Background()
	image := releasedImage(t)
	if !strings.HasPrefix(image, node.Registry+"/heraldhq/herald@sha256:") {
		t.Fatalf("the release names %s, not an image of the node's registry", image)
	}
	digest := image[strings.Index(image, "@")+1:]

	// The registry's index holds both platforms.
	ref, err := name.ParseReference(image)
	must(t, err)
	idx, err := remote.Index(ref)
	must(t, err)
	m, err := idx.IndexManifest()
	must(t, err)
	var archs []string
	for _, d := range m.Manifests {
		if d.Platform != nil {
			archs = append(archs, d.Platform.Architecture)
		}
	}
	if !slices.Contains(archs, "amd64") || !slices.Contains(archs, "arm64") {
		t.Errorf("the release's image index holds %v, want amd64 and arm64", archs)
	}

	// The manager runs the pinned image, pulled.
	var managers corev1.PodList
	must(t, node.Client.List(ctx, &managers, client.InNamespace(localcluster.HeraldNamespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"}))
	if len(managers.Items) == 0 {
		t.Fatal("no manager pod")
	}
	for _, p := range managers.Items {
		checkPinned(t, p, "manager", image, digest)
	}

	// A channel's relays and an app's injected sidecar run it too, and the channel works.
	const ns = "release"
	ensureNamespace(t, ctx, ns)
	one, maxLen := int32(1), int64(1000)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pulled"},
		Spec: heraldv1.NotificationChannelSpec{Shards: 1, Relay: heraldv1.RelaySpec{Replicas: &one}, DeletionPolicy: heraldv1.DeletionDelete,
			Retention: &heraldv1.Retention{MaxLength: &maxLen}},
	}
	must(t, node.Client.Create(ctx, ch))
	ch, err = localcluster.WaitChannelReady(ctx, node.Client, client.ObjectKeyFromObject(ch), readyTimeout)
	must(t, err)
	roundTrip(t, ctx, ch)
	for _, p := range relayPods(t, ctx, ns, ch.Name, 0) {
		checkPinned(t, p, "relay", image, digest)
	}
	app, _ := startApp(t, ctx, ns, "sidecar-app", ch.Name)
	checkPinned(t, app, "herald-relay", image, digest)

	// The app's node pulled it from the registry: its image store has the pinned reference and
	// not the release's or make images' tag under Herald's own name (nothing was imported by
	// hand).
	images, err := node.Node(app.Spec.NodeName).Images(ctx)
	must(t, err)
	if !slices.Contains(images, image) {
		t.Errorf("the images of node %s lack %s: %v", app.Spec.NodeName, image, images)
	}
	for _, im := range images {
		if im == "ghcr.io/heraldhq/herald:v"+releaseVersion || im == "ghcr.io/heraldhq/herald:"+imageTag {
			t.Errorf("node %s holds %s, which the release does not name", app.Spec.NodeName, im)
		}
	}
	must(t, node.Client.Delete(ctx, ch))
}

// releasedImage is the image the suite's release pins: <registry>/heraldhq/herald@<digest>.
func releasedImage(t *testing.T) string {
	t.Helper()
	digests, err := os.ReadFile(filepath.Join(release, "DIGESTS"))
	must(t, err)
	for _, line := range strings.Split(string(digests), "\n") {
		if ref, ok := strings.CutPrefix(line, "image "); ok {
			repoTag, digest, _ := strings.Cut(ref, "@")
			repo, _, _ := strings.Cut(repoTag, ":v")
			return repo + "@" + digest
		}
	}
	t.Fatalf("DIGESTS names no image:\n%s", digests)
	return ""
}

// checkPinned fails unless pod's container (or init container) name runs image and the node
// reports the digest it pulled.
func checkPinned(t *testing.T, pod corev1.Pod, container, image, digest string) {
	t.Helper()
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Name == container && c.Image != image {
			t.Errorf("pod %s: container %s runs %s, want %s", pod.Name, container, c.Image, image)
		}
	}
	for _, s := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		if s.Name == container {
			if !strings.HasSuffix(s.ImageID, digest) {
				t.Errorf("pod %s: container %s's image ID is %s, want the digest %s", pod.Name, container, s.ImageID, digest)
			}
			return
		}
	}
	t.Errorf("pod %s has no container %s", pod.Name, container)
}
