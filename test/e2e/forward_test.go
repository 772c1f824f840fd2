//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/hack/localcluster"
)

// make dev's 127.0.0.1:7070 reaches a pod's sidecar from inside the pod's network namespace
// (localcluster.Forward). `kubectl port-forward` stopped answering after a client hung up in the
// middle of a stream; this forward keeps serving: clients cut mid-stream, each followed by a
// good request, and then the pod replaced under it.
func TestTheForwardSurvivesCutsAndANewPod(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns, channel = "e2e-forward", "tour"
	ensureNamespace(t, ctx, ns)
	one := int32(1)
	ch := &heraldv1.NotificationChannel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: channel},
		Spec: heraldv1.NotificationChannelSpec{Shards: 1, Delivery: heraldv1.DeliveryLive,
			Relay: heraldv1.RelaySpec{Replicas: &one}, DeletionPolicy: heraldv1.DeletionDelete},
	}
	must(t, node.Client.Create(ctx, ch))
	_, err := localcluster.WaitChannelReady(ctx, node.Client, client.ObjectKeyFromObject(ch), readyTimeout)
	must(t, err)
	first, _ := startApp(t, ctx, ns, "app", channel)

	var mu sync.Mutex
	var said []string
	addr, err := node.Forward(ctx, "127.0.0.1:0", ns, "app=app", "127.0.0.1:7070", func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		said = append(said, fmt.Sprintf(f, a...))
		t.Logf("forward: "+f, a...)
	})
	must(t, err)
	base := "http://" + addr + "/v1/channels/" + channel
	publish := func(what string) {
		t.Helper()
		resp, err := http.Post(base+"/messages?key=k", "application/json", strings.NewReader(`{"n": 1}`))
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: publish through the forward: %s, want 202", what, resp.Status)
		}
	}
	for i := range 5 {
		// A client follows the channel, gets one event, and hangs up in the middle of the stream.
		sctx, hangUp := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(sctx, http.MethodGet, base+"/events?key=k", nil)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("cut %d: follow through the forward: %s", i, resp.Status)
		}
		got := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "data:") {
					got <- true
					return
				}
			}
			got <- false
		}()
		publishUntil(t, ctx, base, got)
		hangUp()
		resp.Body.Close()
		// The next request is served.
		publish(fmt.Sprintf("after cut %d", i+1))
	}

	// The pod is replaced: the next connections reach the new one.
	must(t, node.Client.Delete(ctx, &first))
	awaitCond(t, readyTimeout, "the app's pod replaced", func() bool {
		pods, err := node.WaitPodsReady(ctx, ns, "app=app", 1, time.Second)
		return err == nil && pods[0].UID != first.UID
	})
	awaitCond(t, 30*time.Second, "a publish through the forward to the new pod", func() bool {
		resp, err := http.Post(base+"/messages?key=k", "application/json", strings.NewReader(`{"n": 2}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted
	})
	mu.Lock()
	defer mu.Unlock()
	var pods []string
	for _, s := range said {
		if pod, ok := strings.CutPrefix(s, "forwarding to pod "+ns+"/"); ok {
			pods = append(pods, pod)
		}
	}
	if len(pods) != 2 || pods[0] != first.Name || pods[1] == first.Name {
		t.Errorf("the forward said %q; want it to name the first pod and then the new one", said)
	}
	must(t, node.Client.Delete(ctx, ch))
}

// publishUntil publishes to base every 100 ms until got says whether the follower received one.
func publishUntil(t *testing.T, ctx context.Context, base string, got <-chan bool) {
	t.Helper()
	for {
		resp, err := http.Post(base+"/messages?key=k", "application/json", strings.NewReader(`{"n": 0}`))
		if err == nil {
			resp.Body.Close()
		}
		select {
		case ok := <-got:
			if !ok {
				t.Fatal("the stream ended before an event came")
			}
			return
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}
