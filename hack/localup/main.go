// Command localup is Herald's embedded local stack, what `make dev` runs: a control plane (the
// envtest kube-apiserver and etcd from hack/setup-envtest.sh), a 6-node Redis Cluster from
// hack/redis-cluster.sh and the Herald manager as a local process. It applies the samples, prints
// a kubeconfig and commands to paste, and on Ctrl-C (or `make dev-down`) stops everything it
// started and nothing else.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "localup:", err)
		os.Exit(1)
	}
}

func run() error {
	stateDir := flag.String("state-dir", filepath.Join(cacheDir(), "dev"), "where the kubeconfig, logs and pid file go")
	herald := flag.String("herald", "bin/herald", "the herald binary to run")
	redisPort := flag.Int("redis-base-port", 7001, "first port of the local Redis Cluster")
	samples := flag.String("samples", "config/samples", "directory of sample objects to apply (empty: none)")
	flag.Parse()

	if err := os.MkdirAll(*stateDir, 0o755); err != nil {
		return err
	}
	pidFile := filepath.Join(*stateDir, "localup.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	assets, err := output("hack/setup-envtest.sh")
	if err != nil {
		return fmt.Errorf("building the control plane: %w", err)
	}

	redisEnv := []string{"REDIS_CLUSTER_BASE_PORT=" + strconv.Itoa(*redisPort)}
	if err := script(redisEnv, "hack/redis-cluster.sh", "up"); err != nil {
		return fmt.Errorf("starting the Redis Cluster: %w", err)
	}
	defer script(redisEnv, "hack/redis-cluster.sh", "down") //nolint:errcheck // best effort on the way out

	env := &envtest.Environment{
		BinaryAssetsDirectory: string(bytes.TrimSpace(assets)),
		CRDDirectoryPaths:     []string{"config/crd/bases"},
		ErrorIfCRDPathMissing: true,
	}
	_, err = env.Start()
	defer env.Stop() //nolint:errcheck // also after a failed start, which may leave processes
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}

	admin, err := env.AddUser(envtest.User{Name: "herald-dev", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(*stateDir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}

	redisAddr := "127.0.0.1:" + strconv.Itoa(*redisPort)
	manager, err := start(ctx, *stateDir, "manager", *herald, []string{"KUBECONFIG=" + kubeconfigPath},
		"manager", "--metrics-bind-address=127.0.0.1:8080", "--health-probe-bind-address=127.0.0.1:8081")
	if err != nil {
		return err
	}
	defer manager.stop()

	if *samples != "" {
		c, err := client.New(admin.Config(), client.Options{})
		if err != nil {
			return err
		}
		if err := applyDir(ctx, c, *samples, "default"); err != nil {
			return fmt.Errorf("applying samples: %w", err)
		}
	}

	fmt.Printf(`
Herald is running locally.

  export KUBECONFIG=%s
  kubectl get nch                       # the sample channels
  kubectl describe nch orders
  kubectl explain nch.spec

Redis Cluster: %s (and the next five ports)
Manager logs:  %s
Stop:          Ctrl-C here, or make dev-down

`, kubeconfigPath, redisAddr, filepath.Join(*stateDir, "manager.log"))

	select {
	case <-ctx.Done():
		fmt.Println("\nstopping")
	case err := <-manager.exited:
		return fmt.Errorf("the manager exited: %v (see %s)", err, filepath.Join(*stateDir, "manager.log"))
	}
	return nil
}

// process is a child started by localup; only localup's own children are ever stopped.
type process struct {
	cmd    *exec.Cmd
	exited chan error
}

func start(ctx context.Context, logDir, name, bin string, env []string, args ...string) (*process, error) {
	logf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches localup, which stops it
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait(); logf.Close() }()
	return p, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
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

func script(env []string, path string, args ...string) error {
	cmd := exec.Command("bash", append([]string{path}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func output(path string) ([]byte, error) {
	cmd := exec.Command("bash", path)
	cmd.Stderr = os.Stderr
	return cmd.Output()
}

func cacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "herald")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "herald")
}
