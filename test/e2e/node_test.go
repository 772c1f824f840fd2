//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldhq/herald/hack/localcluster"
)

// The local node is as closed as a real one, so the suite runs Herald under the same auth: its
// kubelet lets no anonymous caller in (every pod reaches NodeIP:10250), while the API server
// still reads a pod's log through it with its client certificate; its Redis wants a password
// (every pod reaches it too), which the operator has from the release's Secret.
func TestTheNodeLetsNoAnonymousCallerIn(t *testing.T) {
	ctx := context.Background()
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // only the status matters
	for _, path := range []string{"/pods", "/run/" + localcluster.HeraldNamespace + "/x/manager", "/configz"} {
		resp, err := insecure.Get("https://" + localcluster.NodeIP + ":10250" + path)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the kubelet answers an anonymous %s with %d, want 401", path, resp.StatusCode)
		}
	}
	cs, err := kubernetes.NewForConfig(node.Config)
	must(t, err)
	pods, err := cs.CoreV1().Pods(localcluster.HeraldNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=manager"})
	must(t, err)
	if len(pods.Items) == 0 {
		t.Fatal("no manager pod")
	}
	logs, err := cs.CoreV1().Pods(localcluster.HeraldNamespace).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{Container: "manager"}).Stream(ctx)
	if err != nil {
		t.Fatalf("reading the manager's log through the API server (and so the kubelet): %v", err)
	}
	b, _ := io.ReadAll(logs)
	logs.Close()
	if !strings.Contains(string(b), "Starting manager") {
		t.Errorf("the manager's log through the kubelet lacks its start:\n%.2000s", b)
	}

	anonymous := redis.NewClient(&redis.Options{Addr: node.Redis.Addr(), MaxRetries: -1})
	defer anonymous.Close()
	if err := anonymous.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("Redis answers a client without the password: %v; want NOAUTH", err)
	}
	admin := redis.NewClient(&redis.Options{Addr: node.Redis.Addr(), Password: node.Redis.Password})
	defer admin.Close()
	must(t, admin.Ping(ctx).Err())
}
