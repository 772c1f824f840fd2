// Command localup is Herald's embedded local cluster, what `make dev` runs: a Kubernetes
// cluster with one real node on this machine (package hack/localcluster: the envtest control
// plane, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy, CoreDNS) and
// a Redis Cluster that pods reach. It serves an OCI registry on 127.0.0.1:5001 that the node
// pulls from (and takes as the mirror of ghcr.io), pushes the images hack/images wrote and the
// Helm chart there, installs Herald from oci://, applies the samples, waits until the sample channels are Ready and the
// orders-app pod runs with its injected sidecar, forwards 127.0.0.1:7070 to that sidecar (into
// the pod's network namespace: hack/localcluster Forward) and prints a kubeconfig and commands to paste.
//
// Ctrl-C (or `make dev-down`, which runs `localup -down`) stops everything it started and
// removes what it made on the machine; -down also cleans up after a run that crashed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/heraldhq/herald/hack/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "localup:", err)
		os.Exit(1)
	}
}

// The sample channel the printed commands use, its key, and where the orders-app pod's sidecar
// is forwarded to.
const (
	sampleNamespace = "default"
	sampleChannel   = "orders"
	sampleKey       = "order-1"
	forwardAddr     = "127.0.0.1:7070"
)

func nodeCount(n int) string {
	if n == 1 {
		return "one node"
	}
	return fmt.Sprintf("%d nodes", n)
}

func run() error {
	stateDir := flag.String("state-dir", filepath.Join(cacheDir(), "dev"), "where the kubeconfig, logs, Redis data, containerd and kubelet state and the pid file go")
	images := flag.String("images", "bin/images", "directory of the OCI image archives hack/images wrote")
	tag := flag.String("tag", "dev", "tag of the images")
	helm := flag.String("helm", "bin/helm", "the helm binary")
	chart := flag.String("chart", "charts/herald", "the Herald chart")
	redisPort := flag.Int("redis-base-port", 7001, "first port of the local Redis Cluster (it uses six)")
	nodes := flag.Int("nodes", 1, fmt.Sprintf("how many nodes the cluster has (1 to %d), each in a zone of its own", localcluster.MaxNodes))
	registryAddr := flag.String("registry", "127.0.0.1:5001", "address of the node's OCI registry (plain HTTP)")
	samples := flag.String("samples", "config/samples", "directory of sample objects to apply (empty: none)")
	readyWithin := flag.Duration("ready-timeout", 3*time.Minute, "how long to wait for the samples to be Ready")
	down := flag.Bool("down", false, "stop a running localup and remove whatever a crashed one left, then exit")
	flag.Parse()

	pidFile := *stateDir + ".pid" // beside the state directory, which Start empties
	if *down {
		return stop(pidFile, *stateDir)
	}
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("make dev is already running (pid %d); stop it with make dev-down", pid)
		}
	}
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	began := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("localup [%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	// envtest logs through controller-runtime's global logger, which otherwise complains with a
	// stack trace that it was never set; the cluster's progress is what say prints.
	ctrllog.SetLogger(zap.New(zap.WriteTo(io.Discard)))

	var archives []string
	for _, name := range []string{"herald", "pause", "orders-app"} {
		archives = append(archives, filepath.Join(*images, name+".tar"))
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		Dir: *stateDir, Images: archives, PauseImage: "ghcr.io/heraldhq/pause:" + *tag,
		RegistryAddr: *registryAddr, RedisBasePort: *redisPort, Nodes: *nodes, Logf: say,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "localup: stopping:", err)
		}
		say("stopped")
	}()

	const chartVersion = "0.0.0-dev"
	ref, err := cluster.PushChart(ctx, *helm, *chart, chartVersion)
	if err != nil {
		return err
	}
	say("installing Herald with helm from %s --version %s", ref, chartVersion)
	if err := cluster.InstallHerald(ctx, *helm, localcluster.Chart{Ref: ref, Version: chartVersion, ImageTag: *tag}); err != nil {
		return err
	}
	kubectl := "kubectl --kubeconfig " + cluster.Kubeconfig
	if *samples != "" {
		say("applying %s", *samples)
		if err := applyDir(ctx, cluster.Client, *samples, sampleNamespace); err != nil {
			return fmt.Errorf("applying samples: %w", err)
		}
		for _, name := range []string{sampleChannel, "presence"} {
			if _, err := localcluster.WaitChannelReady(ctx, cluster.Client, client.ObjectKey{Namespace: sampleNamespace, Name: name}, *readyWithin); err != nil {
				return fmt.Errorf("%w (%s logs -n %s deploy/herald-manager)", err, kubectl, localcluster.HeraldNamespace)
			}
			say("channel %s is Ready", name)
		}
		say("waiting for the orders-app pod and its injected sidecar")
		if _, err := cluster.WaitPodsReady(ctx, sampleNamespace, "app.kubernetes.io/name=orders-app", 1, *readyWithin); err != nil {
			return err
		}
	}

	forwarding := false
	if *samples != "" {
		say("forwarding %s to the orders-app pod's sidecar (from inside the pod's network namespace)", forwardAddr)
		if err := startForward(ctx, cluster, say); err != nil {
			return err
		}
		forwarding = true
	}

	fmt.Printf(`
Herald is running on a local cluster with %s (ready in %.0fs).

  export KUBECONFIG=%s
  kubectl get nodes -L topology.kubernetes.io/zone
  kubectl get pods -A -o wide          # the manager, the relays, orders-app (2/2: app + sidecar)
  kubectl get nch                      # the sample channels
  kubectl logs deploy/orders-app -c app --follow
  kubectl describe nch orders

Redis Cluster: %s (and the next five ports; password: Secret herald-system/redis-admin)
Registry:      %s (the nodes pull from it; it mirrors ghcr.io; plain HTTP)
Logs:          %s/logs/ (control plane, kubelet, containerd); pods: kubectl logs
Stop:          Ctrl-C here, or make dev-down
`, nodeCount(len(cluster.Nodes)), time.Since(began).Seconds(), cluster.Kubeconfig, cluster.Redis.Addr(), cluster.Registry, *stateDir)
	if forwarding {
		base := "http://" + forwardAddr
		first, err := publish(ctx, base, `{"order": 1, "status": "created"}`)
		if err != nil {
			// Say so loudly, and stay up: the cluster is there to find out why.
			fmt.Printf("\nWARNING: publishing a first message through the sidecar failed: %v\n(see %s logs deploy/orders-app -c herald-relay)\n", err, kubectl)
			first = "<the id of an event you received>"
		}
		ch := base + "/v1/channels/" + sampleChannel
		fmt.Printf(`
Try it in another terminal (%[6]s is forwarded to the sidecar of the orders-app pod):

  # follow the whole channel: every key, its 3 shards merged (Server-Sent Events; Ctrl-C stops)
  curl -N %[1]s/events

  # publish; the answer is 202 {"id": <cursor>, "shard": <n>, "eventId": <CloudEvents id>}
  curl -X POST -H 'Content-Type: application/json' --data '{"order": 1, "status": "paid"}' '%[1]s/messages?key=%[2]s'

  # follow one key (the same stream over WebSocket: %[4]s/ws?key=%[2]s)
  curl -N '%[1]s/events?key=%[2]s'

  # resume after a disconnect: everything after that cursor (the message published at start-up), then live
  curl -N -H 'Last-Event-ID: %[3]s' '%[1]s/events?key=%[2]s'

  %[5]s get pods -A
`, ch, sampleKey, first, strings.Replace(ch, "http://", "ws://", 1), kubectl, forwardAddr)
	}
	fmt.Println()
	<-ctx.Done()
	fmt.Println()
	return nil
}

// stop ends a running localup (SIGTERM, then waits for it to clean up) and removes whatever a
// crashed one left behind.
func stop(pidFile, stateDir string) error {
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && syscall.Kill(pid, syscall.SIGTERM) == nil {
			fmt.Printf("stopping make dev (pid %d)\n", pid)
			for i := 0; i < 600 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	if err := localcluster.Down(stateDir); err != nil {
		return err
	}
	_ = os.Remove(pidFile)
	fmt.Println("nothing of make dev is left running")
	return nil
}

// startForward serves forwardAddr with the sidecar of the orders-app pod (whichever pod runs
// now) until ctx ends, and returns once it answers.
func startForward(ctx context.Context, cluster *localcluster.Cluster, say func(string, ...any)) error {
	if _, err := cluster.Forward(ctx, forwardAddr, sampleNamespace, "app.kubernetes.io/name=orders-app", "127.0.0.1:7070", say); err != nil {
		return err
	}
	for i := 0; i < 100; i++ {
		if resp, err := http.Get("http://" + forwardAddr + "/healthz"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the orders-app pod's sidecar does not answer on %s", forwardAddr)
}

// publish posts one JSON message with key sampleKey and returns its cursor.
func publish(ctx context.Context, base, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/channels/"+sampleChannel+"/messages?key="+sampleKey, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ack struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &ack) != nil || ack.ID == "" {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return ack.ID, nil
}

// applyDir creates every object of every YAML file in dir (kustomization files excepted).
func applyDir(ctx context.Context, c client.Client, dir, namespace string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if u.GetNamespace() == "" {
				u.SetNamespace(namespace)
			}
			if err := c.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: %s %s: %w", f, u.GetKind(), u.GetName(), err)
			}
		}
	}
	return nil
}

func cacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "herald")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "herald")
}
