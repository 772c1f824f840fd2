package localstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Back-off between restarts of a replica that exited: doubling from restartBackoffMin to
// restartBackoffMax, reset after a run of at least restartBackoffReset (a kubelet uses 10 s to
// 5 min; locally a relay that died is wanted back quickly).
const (
	restartBackoffMin   = 500 * time.Millisecond
	restartBackoffMax   = 10 * time.Second
	restartBackoffReset = 10 * time.Second
)

// replica is one pod of a Deployment, run as a supervised process of the herald binary.
type replica struct {
	name, namespace, deployment string
	hash                        string            // pod template hash it was created from
	labels                      map[string]string // the template's labels
	addr                        string            // 127.0.0.1:port, kept across restarts
	logPath                     string
	herald                      string
	prepare                     func(ctx context.Context) (args, env []string, err error) // run before every start
	probePath                   string
	probeTimeout                time.Duration
	probeInterval               time.Duration
	failureThreshold            int
	grace                       time.Duration // SIGTERM to SIGKILL
	notify                      func()        // readiness or process changed
	logf                        func(format string, args ...any)

	ready    atomic.Bool
	readyAt  atomic.Int64 // unix nanoseconds of the last change to ready
	pid      atomic.Int64
	restarts atomic.Int32
	stopOnce sync.Once
	stopCh   chan struct{} // closed by stop
	done     chan struct{} // closed when the supervisor returned
}

// freeLoopbackAddr picks a free 127.0.0.1 port. The port is free when picked, not reserved: a
// replica keeps it for its lifetime, like a pod keeps its IP.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// supervise starts the process, restarts it when it exits and stops it when stop is called.
func (r *replica) supervise() {
	defer close(r.done)
	backoff := time.Duration(0)
	for {
		began := time.Now()
		err := r.runOnce()
		if err == errStopped {
			return
		}
		if time.Since(began) >= restartBackoffReset {
			backoff = 0
		}
		backoff = min(max(2*backoff, restartBackoffMin), restartBackoffMax)
		r.logf("replica %s/%s exited (%v); restarting in %s (log: %s)", r.namespace, r.name, err, backoff, r.logPath)
		r.appendLog(fmt.Sprintf("--- localstack: exited (%v); restarting in %s\n", err, backoff))
		select {
		case <-r.stopCh:
			return
		case <-time.After(backoff):
		}
		r.restarts.Add(1)
	}
}

var errStopped = fmt.Errorf("stopped")

// runOnce runs the process until it exits (its error) or stop is called (errStopped).
func (r *replica) runOnce() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	args, env, err := r.prepare(ctx)
	if err != nil {
		select {
		case <-r.stopCh:
			return errStopped
		default:
		}
		return fmt.Errorf("preparing the container: %w", err)
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(r.herald, args...)
	cmd.Env = env // the container's environment only, as in a pod: nothing leaks from the runner's
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C in the terminal reaches the runner, which stops replicas in
	// order. Pdeathsig: a runner killed with -9 does not leave relays behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.pid.Store(int64(cmd.Process.Pid))
	r.logf("replica %s/%s started: pid %d on %s", r.namespace, r.name, cmd.Process.Pid, r.addr)
	r.notify()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	go r.probe(ctx)
	defer func() {
		cancel()
		r.ready.Store(false)
		r.pid.Store(0)
		r.notify()
	}()
	select {
	case err := <-exited:
		if err == nil {
			err = fmt.Errorf("exit status 0")
		}
		return err
	case <-r.stopCh:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(r.grace):
			_ = cmd.Process.Kill()
			<-exited
		}
		return errStopped
	}
}

// probe polls the readiness path until ctx ends: ready after one success, not ready after
// failureThreshold failures in a row (the probe's own thresholds, on a shorter period).
func (r *replica) probe(ctx context.Context) {
	client := &http.Client{Timeout: r.probeTimeout}
	url := "http://" + r.addr + r.probePath
	tick := time.NewTicker(r.probeInterval)
	defer tick.Stop()
	failures := 0
	for {
		ok := false
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil); err == nil {
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok = resp.StatusCode >= 200 && resp.StatusCode < 400
			}
		}
		if ctx.Err() != nil {
			return
		}
		if ok {
			failures = 0
			if !r.ready.Swap(true) {
				r.readyAt.Store(time.Now().UnixNano())
				r.notify()
			}
		} else if failures++; failures >= r.failureThreshold && r.ready.Swap(false) {
			r.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stop ends the process (SIGTERM, SIGKILL after grace) and waits for the supervisor.
func (r *replica) stop() {
	r.stopOnce.Do(func() { close(r.stopCh) })
	<-r.done
}

func (r *replica) appendLog(s string) {
	if f, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		_, _ = f.WriteString(s)
		f.Close()
	}
}

// ReplicaInfo is a snapshot of one running replica, for tests and for people.
type ReplicaInfo struct {
	Namespace, Deployment, Name string
	Labels                      map[string]string
	Addr                        string // 127.0.0.1:port
	PID                         int    // 0 while the process is not running
	Ready                       bool
	ReadySince                  time.Time // when it last became ready (zero: never)
	Restarts                    int
	LogPath                     string
}

func (r *replica) info() ReplicaInfo {
	info := ReplicaInfo{
		Namespace: r.namespace, Deployment: r.deployment, Name: r.name, Labels: r.labels,
		Addr: r.addr, PID: int(r.pid.Load()), Ready: r.ready.Load(), Restarts: int(r.restarts.Load()), LogPath: r.logPath,
	}
	if ns := r.readyAt.Load(); ns != 0 && info.Ready {
		info.ReadySince = time.Unix(0, ns)
	}
	return info
}

func (i ReplicaInfo) String() string {
	return i.Namespace + "/" + i.Name + " pid " + strconv.Itoa(i.PID) + " " + i.Addr
}
