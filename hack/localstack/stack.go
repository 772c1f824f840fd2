package localstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldhq/herald/internal/rediscluster"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// StackOptions configure StartStack.
type StackOptions struct {
	Root          string                           // repository root (hack/ scripts, config/crd/bases). Defaults to the module root above the working directory.
	Herald        string                           // the herald binary. Defaults to <Root>/bin/herald.
	Dir           string                           // kubeconfig, logs, Redis data, relay volumes and endpoints go here; required
	RedisBasePort int                              // first of the six Redis Cluster ports; required
	RedisTLS      bool                             // the Redis Cluster speaks only TLS and wants client certificates; the manager gets its CA and a client certificate
	ManagerArgs   []string                         // extra flags of `herald manager`
	Logf          func(format string, args ...any) // progress of StartStack and Stop; none by default
	RunnerLogf    func(format string, args ...any) // the runner's events. Defaults to <Dir>/runner.log.
}

// Stack is a running local Herald: control plane, Redis Cluster, manager and relay runner.
type Stack struct {
	Dir        string
	Kubeconfig string       // an admin (system:masters) kubeconfig of the API server
	Config     *rest.Config // the same admin credentials
	RedisAddrs []string     // 127.0.0.1:base .. base+5
	RedisDir   string       // hack/redis-cluster.sh's directory: <port>/redis.pid, <port>/redis.log
	Runner     *Runner
	Client     client.Client // admin client that knows Herald's API types (reads are not cached)
	Herald     string

	opt          StackOptions
	saMu         sync.Mutex           // serializes service account token renewals
	saTokens     map[string]time.Time // namespace/name -> when its token was minted
	env          *envtest.Environment
	manager      *Process
	stopRunner   context.CancelFunc
	runnerDone   chan struct{}
	redisStarted bool
}

// StartStack starts the control plane (hack/setup-envtest.sh's binaries), the Redis Cluster
// (hack/redis-cluster.sh with its own directory), the manager and the relay runner. On error it
// stops what it had started.
func StartStack(opt StackOptions) (_ *Stack, err error) {
	if opt.Dir == "" || opt.RedisBasePort == 0 {
		return nil, errors.New("localstack: StackOptions need Dir and RedisBasePort")
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Root == "" {
		if opt.Root, err = rediscluster.ModuleRoot(); err != nil {
			return nil, err
		}
	}
	if opt.Herald == "" {
		opt.Herald = filepath.Join(opt.Root, "bin", "herald")
	}
	if opt.Herald, err = filepath.Abs(opt.Herald); err != nil {
		return nil, err
	}
	if _, err := os.Stat(opt.Herald); err != nil {
		return nil, fmt.Errorf("the herald binary: %w (run make build)", err)
	}
	if opt.Dir, err = filepath.Abs(opt.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, err
	}
	s := &Stack{Dir: opt.Dir, RedisDir: filepath.Join(opt.Dir, "redis"), Herald: opt.Herald, opt: opt}
	// What a previous run in the same directory left (tokens and kubeconfigs of another API
	// server, relay logs and volumes) must not be read by this one.
	logs, _ := filepath.Glob(filepath.Join(opt.Dir, "*.log"))
	for _, d := range append([]string{"serviceaccounts", "tokens", "relays"}, logs...) {
		if err := os.RemoveAll(filepath.Join(opt.Dir, filepath.Base(d))); err != nil {
			return nil, err
		}
	}
	for p := opt.RedisBasePort; p < opt.RedisBasePort+6; p++ {
		s.RedisAddrs = append(s.RedisAddrs, "127.0.0.1:"+strconv.Itoa(p))
	}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()

	opt.Logf("building (once, cached) and finding the control plane binaries")
	assets, err := s.script(true, "setup-envtest.sh")
	if err != nil {
		return nil, fmt.Errorf("building the control plane: %w", err)
	}
	opt.Logf("starting the Redis Cluster on %s-%d", s.RedisAddrs[0], opt.RedisBasePort+5)
	s.redisStarted = true
	if _, err := s.script(false, "redis-cluster.sh", "up"); err != nil {
		return nil, fmt.Errorf("starting the Redis Cluster: %w", err)
	}

	opt.Logf("starting the control plane (etcd, kube-apiserver)")
	s.env = &envtest.Environment{
		BinaryAssetsDirectory: strings.TrimSpace(string(assets)),
		CRDDirectoryPaths:     []string{filepath.Join(opt.Root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if _, err = s.env.Start(); err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	admin, err := s.env.AddUser(envtest.User{Name: "herald-dev", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return nil, err
	}
	s.Config = admin.Config()
	s.Kubeconfig = filepath.Join(opt.Dir, "kubeconfig")
	if err := os.WriteFile(s.Kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}

	opt.Logf("starting the manager (log: %s)", filepath.Join(opt.Dir, "manager.log"))
	margs := []string{"manager", "--redis-addresses=" + strings.Join(s.RedisAddrs[:3], ","),
		"--metrics-bind-address=0", "--health-probe-bind-address=0"}
	if opt.RedisTLS {
		r := s.redis()
		margs = append(margs, "--redis-tls", "--redis-tls-ca-file="+r.CAFile(),
			"--redis-tls-cert-file="+r.ClientCertFile(), "--redis-tls-key-file="+r.ClientKeyFile())
	}
	margs = append(margs, opt.ManagerArgs...)
	if out, _ := exec.Command(opt.Herald, "manager", "--help").CombinedOutput(); bytes.Contains(out, []byte("-webhook-port")) {
		// No kubelet creates pods here, so nothing would call the injection webhook; and the
		// API server could not reach it through a Service without endpoints.
		margs = append(margs, "--webhook-port=0")
	}
	if s.manager, err = StartProcess(opt.Herald, margs, []string{"KUBECONFIG=" + s.Kubeconfig}, filepath.Join(opt.Dir, "manager.log")); err != nil {
		return nil, fmt.Errorf("starting the manager: %w", err)
	}

	if s.Client, err = NewClient(s.Config); err != nil {
		return nil, err
	}
	if opt.RunnerLogf == nil {
		opt.RunnerLogf = fileLogf(filepath.Join(opt.Dir, "runner.log"))
	}
	ropt := RunnerOptions{Config: s.Config, Herald: opt.Herald, Dir: filepath.Join(opt.Dir, "relays"), Logf: opt.RunnerLogf}
	if kubeconfig, _ := relayFlags(opt.Herald); kubeconfig {
		// Shard relays check callers' tokens with TokenReviews (--auth=tokenreview, the
		// default) as their pod's service account, which the manager binds to herald-relay.
		if err := s.installRelayRole(context.Background()); err != nil {
			return nil, err
		}
		ropt.ServiceAccountKubeconfig = s.serviceAccountKubeconfig
	}
	if s.Runner, err = NewRunner(ropt); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopRunner, s.runnerDone = cancel, make(chan struct{})
	go func() {
		defer close(s.runnerDone)
		_ = s.Runner.Run(ctx)
	}()
	return s, nil
}

// ManagerExited reports the manager's exit (it should not exit while the stack runs).
func (s *Stack) ManagerExited() <-chan error { return s.manager.Exited() }

// RedisPID is the PID of the Redis node on port, from the pid file hack/redis-cluster.sh wrote.
func (s *Stack) RedisPID(port int) (int, error) { return s.redis().PID(port) }

// RestartRedis starts a node that was killed again; it rejoins as a replica of whoever took over
// its slots.
func (s *Stack) RestartRedis(port int) error { return s.redis().Restart(port) }

// RedisTLSFiles are the CA, client certificate and client key of the Redis Cluster (RedisTLS).
func (s *Stack) RedisTLSFiles() (ca, cert, key string) {
	r := s.redis()
	return r.CAFile(), r.ClientCertFile(), r.ClientKeyFile()
}

func (s *Stack) redis() *rediscluster.Cluster {
	c := rediscluster.At(s.opt.RedisBasePort, s.RedisDir)
	c.TLS = s.opt.RedisTLS
	return c
}

// Stop stops, in order, the runner (and every relay), the manager, the control plane and the
// Redis Cluster: what StartStack started and nothing else.
func (s *Stack) Stop() error {
	var errs []error
	if s.stopRunner != nil {
		s.opt.Logf("stopping the relays")
		s.stopRunner()
		<-s.runnerDone
	}
	if s.manager != nil {
		s.opt.Logf("stopping the manager")
		s.manager.Stop(10 * time.Second)
	}
	if s.env != nil {
		s.opt.Logf("stopping the control plane")
		errs = append(errs, s.env.Stop())
	}
	if s.redisStarted {
		s.opt.Logf("stopping the Redis Cluster")
	}
	if s.redisStarted {
		if _, err := s.script(false, "redis-cluster.sh", "down"); err != nil {
			errs = append(errs, fmt.Errorf("stopping the Redis Cluster: %w", err))
		}
	}
	return errors.Join(errs...)
}

// script runs hack/<name> with the stack's Redis port and directory; with capture, it returns
// stdout (stderr goes to the log), else both go to the log.
func (s *Stack) script(capture bool, name string, args ...string) ([]byte, error) {
	cmd := exec.Command("bash", append([]string{filepath.Join(s.opt.Root, "hack", name)}, args...)...)
	cmd.Dir = s.opt.Root
	cmd.Env = append(os.Environ(), "REDIS_CLUSTER_BASE_PORT="+strconv.Itoa(s.opt.RedisBasePort), "REDIS_CLUSTER_DIR="+s.RedisDir)
	if s.opt.RedisTLS {
		cmd.Env = append(cmd.Env, "REDIS_CLUSTER_TLS=1")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var out []byte
	var err error
	if capture {
		out, err = cmd.Output()
	} else {
		cmd.Stdout = &stderr
		err = cmd.Run()
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		s.opt.Logf("%s: %s", name, msg)
	}
	return out, err
}

// Process is a child process with its output in a log file.
type Process struct {
	cmd    *exec.Cmd
	exited chan error
	done   chan struct{} // closed when the process is gone
}

// StartProcess starts bin with args, the runner's environment plus env, and output appended to
// logPath. It runs in its own process group (a Ctrl-C reaches only its parent, which stops it)
// and dies with its parent.
func StartProcess(bin string, args, env []string, logPath string) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Process{cmd: cmd, exited: make(chan error, 1), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		close(p.done)
		p.exited <- err
		close(p.exited)
	}()
	return p, nil
}

// PID is the process's id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited yields the process's exit error once, then is closed.
func (p *Process) Exited() <-chan error { return p.exited }

// Stop sends SIGTERM, waits up to grace, then SIGKILL; it returns when the process is gone.
func (p *Process) Stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
