// Command localup is Herald's embedded local stack, what `make dev` runs: a control plane (the
// envtest kube-apiserver and etcd from hack/setup-envtest.sh), a 6-node Redis Cluster from
// hack/redis-cluster.sh, the Herald manager as a local process and the relay runner, which runs
// the operator's relay Deployments as local processes (package hack/localstack). It applies the
// samples, waits until the sample channels are Ready, starts the sidecar an injected orders-app
// pod would have (on 127.0.0.1:7070, for the `orders` channel), and prints a kubeconfig and
// commands to paste.
// Ctrl-C (or `make dev-down`) stops everything it started and nothing else.
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

	"github.com/heraldhq/herald/hack/localstack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "localup:", err)
		os.Exit(1)
	}
}

// The sample channel the printed commands use, and its key.
const (
	sampleNamespace = "default"
	sampleChannel   = "orders"
	sampleKey       = "order-1"
	sidecarAddr     = "127.0.0.1:7070"
)

func run() error {
	stateDir := flag.String("state-dir", filepath.Join(cacheDir(), "dev"), "where the kubeconfig, logs, Redis data and the pid file go")
	herald := flag.String("herald", "bin/herald", "the herald binary to run")
	redisPort := flag.Int("redis-base-port", 7001, "first port of the local Redis Cluster (it uses six)")
	samples := flag.String("samples", "config/samples", "directory of sample objects to apply (empty: none)")
	readyWithin := flag.Duration("ready-timeout", 3*time.Minute, "how long to wait for the sample channels to become Ready")
	flag.Parse()

	if err := os.MkdirAll(*stateDir, 0o755); err != nil {
		return err
	}
	pidFile := filepath.Join(*stateDir, "localup.pid")
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("make dev is already running (pid %d); stop it with make dev-down", pid)
		}
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("localup [%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}

	// envtest logs through controller-runtime's global logger, which otherwise complains with a
	// stack trace that it was never set; the stack's progress is what say prints.
	ctrllog.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	stack, err := localstack.StartStack(localstack.StackOptions{Herald: *herald, Dir: *stateDir, RedisBasePort: *redisPort, Logf: say})
	if err != nil {
		return err
	}
	defer func() {
		if err := stack.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "localup: stopping:", err)
		}
		say("stopped")
	}()

	// Waiting ends early when the manager exits: its log says why.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if err, ok := <-stack.ManagerExited(); ok {
			cancel(fmt.Errorf("the manager exited: %v (see %s)", err, filepath.Join(*stateDir, "manager.log")))
		}
	}()

	if *samples != "" {
		say("applying %s", *samples)
		if err := applyDir(ctx, stack.Client, *samples, sampleNamespace); err != nil {
			return fmt.Errorf("applying samples: %w", err)
		}
		for _, name := range []string{sampleChannel, "presence"} {
			if _, err := localstack.WaitChannelReady(ctx, stack.Client, client.ObjectKey{Namespace: sampleNamespace, Name: name}, *readyWithin); err != nil {
				return fmt.Errorf("%w (logs: %s/manager.log, %s/runner.log, %s/relays/logs)", err, *stateDir, *stateDir, *stateDir)
			}
			say("channel %s is Ready", name)
		}
	}
	kubectl := "kubectl --kubeconfig " + stack.Kubeconfig

	var sidecar *localstack.Process
	if *samples != "" {
		if !stack.HasSidecarRole() {
			return fmt.Errorf("%s has no `relay --role=sidecar`: rebuild it (make build)", stack.Herald)
		}
		say("starting the sidecar an injected orders-app pod would have, on %s", sidecarAddr)
		sidecar, err = stack.StartSidecar(ctx, localstack.SidecarOptions{Name: "sidecar", Namespace: sampleNamespace, Channels: sampleChannel, Listen: sidecarAddr})
		if err != nil {
			return err
		}
		defer sidecar.Stop(10 * time.Second)
	}

	fmt.Printf(`
Herald is running locally (ready in %.0fs).

  export KUBECONFIG=%s
  kubectl get nch                       # the sample channels
  kubectl describe nch orders
  kubectl get deploy,svc -l app.kubernetes.io/managed-by=herald-operator

Redis Cluster: %s (and the next five ports)
Logs:          %s/{manager,runner,sidecar}.log, %s/relays/logs/
Endpoints:     %s (Service host -> ready relays)
Stop:          Ctrl-C here, or make dev-down
`, time.Since(began).Seconds(), stack.Kubeconfig, stack.RedisAddrs[0], *stateDir, *stateDir, stack.Runner.EndpointsFile())
	if sidecar != nil {
		base := "http://" + sidecarAddr
		first, err := publish(ctx, base, `{"order": 1, "status": "created"}`)
		if err != nil {
			// Say so loudly, and stay up: the stack is there to find out why.
			fmt.Printf("\nWARNING: publishing a first message through the sidecar failed: %v\n(see %s/sidecar.log and %s/relays/logs/)\n", err, *stateDir, *stateDir)
			first = "<the id of an event you received>"
		}
		ch := base + "/v1/channels/" + sampleChannel
		fmt.Printf(`
Try it in another terminal (the sidecar of an orders-app pod listens on %[6]s):

  # follow the whole channel: every key, its 3 shards merged (Server-Sent Events; Ctrl-C stops)
  curl -N %[1]s/events

  # publish; the answer is 202 {"id": <cursor>, "shard": <n>}
  curl -X POST -H 'Content-Type: application/json' --data '{"order": 1, "status": "paid"}' '%[1]s/messages?key=%[2]s'

  # follow one key (the same stream over WebSocket: %[4]s/ws?key=%[2]s)
  curl -N '%[1]s/events?key=%[2]s'

  # resume after a disconnect: everything after that cursor (the message published at start-up), then live
  curl -N -H 'Last-Event-ID: %[3]s' '%[1]s/events?key=%[2]s'

  %[5]s get nch
`, ch, sampleKey, first, strings.Replace(ch, "http://", "ws://", 1), kubectl, sidecarAddr)
	}
	fmt.Println()

	var sidecarExited <-chan error
	if sidecar != nil {
		sidecarExited = sidecar.Exited()
	}
	select {
	case <-ctx.Done():
		fmt.Println()
		if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
			return err
		}
	case err := <-sidecarExited:
		return fmt.Errorf("the sidecar exited: %v (see %s)", err, filepath.Join(*stateDir, "sidecar.log"))
	}
	return nil
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
