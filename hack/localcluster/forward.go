package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"golang.org/x/sys/unix"
)

// Forward serves listen (a loopback address) by connecting each client to podAddr inside the
// network namespace of a running pod of namespace that matches selector: what `kubectl
// port-forward` does, without the API server and kubelet streams, which give up after a while
// and then refuse every later connection. The node is this machine, so the pod's network is a
// namespace of it (found from a container's process, through containerd), looked up for each
// connection: a new pod (the old one replaced) gets the next one. Forward returns once it listens; it stops when
// ctx ends. logf says when the pod it reaches changes, or why it cannot reach one. It returns
// the address it listens on (listen may ask for any port).
func (c *Cluster) Forward(ctx context.Context, listen, namespace, selector, podAddr string, logf func(string, ...any)) (string, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	f := &forward{c: c, namespace: namespace, sel: sel, podAddr: podAddr, logf: logf}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // closed
			}
			go f.serve(ctx, conn)
		}
	}()
	return ln.Addr().String(), nil
}

type forward struct {
	c         *Cluster
	namespace string
	sel       labels.Selector
	podAddr   string
	logf      func(string, ...any)

	mu  sync.Mutex
	pod string // the pod connections went to last
}

func (f *forward) serve(ctx context.Context, client net.Conn) {
	defer client.Close()
	upstream, err := f.dial(ctx)
	if err != nil {
		f.logf("forward %s: %v", f.podAddr, err)
		return
	}
	defer upstream.Close()
	// Whichever side ends first ends the connection: a client that hangs up in the middle of a
	// stream frees the pod's side at once, and the pod's end reaches the client.
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(upstream, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, upstream); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// dial connects to podAddr in the network namespace of the pod that is ready now: found
// afresh for each connection, so a pod being deleted gets no new one.
func (f *forward) dial(ctx context.Context) (net.Conn, error) {
	pod, netn, err := f.find(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if pod != f.pod {
		f.logf("forwarding to pod %s/%s", f.namespace, pod)
		f.pod = pod
	}
	f.mu.Unlock()
	return dialIn(netn, f.podAddr)
}

// find returns a running, ready pod of the selector and the network namespace of its first
// running container.
func (f *forward) find(ctx context.Context) (string, string, error) {
	var pods corev1.PodList
	if err := f.c.Client.List(ctx, &pods, client.InNamespace(f.namespace), client.MatchingLabelsSelector{Selector: f.sel}); err != nil {
		return "", "", err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !PodReady(p) {
			continue
		}
		for _, s := range append(p.Status.ContainerStatuses, p.Status.InitContainerStatuses...) {
			id, ok := strings.CutPrefix(s.ContainerID, "containerd://")
			if !ok || s.State.Running == nil {
				continue
			}
			n := f.c.Node(p.Spec.NodeName)
			if n == nil {
				continue
			}
			pid, err := n.taskPID(ctx, id)
			if err != nil {
				continue
			}
			return p.Name, fmt.Sprintf("/proc/%d/ns/net", pid), nil
		}
	}
	return "", "", fmt.Errorf("no ready pod %q in %s", f.sel, f.namespace)
}

// taskPID is the PID of container id's process, from the node's containerd.
func (n *Node) taskPID(ctx context.Context, id string) (int, error) {
	out, err := n.ctr(ctx, "tasks", "list")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == id {
			var pid int
			if _, err := fmt.Sscan(f[1], &pid); err == nil && pid > 0 {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("containerd runs no task %s", id)
}

// dialIn connects to addr from inside the network namespace netns: the socket is made there,
// on a thread that enters it and comes back.
func dialIn(netns, addr string) (net.Conn, error) {
	target, err := os.Open(netns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	runtime.LockOSThread()
	own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer own.Close()
	// A process that ended and whose PID went to one of the machine's would have the machine's
	// namespace, this thread's: the forward would dial itself.
	var pod, host unix.Stat_t
	if err := unix.Fstat(int(target.Fd()), &pod); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	if err := unix.Fstat(int(own.Fd()), &host); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	if pod.Ino == host.Ino && pod.Dev == host.Dev {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("%s is the machine's own network namespace, not a pod's", netns)
	}
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("entering %s: %w", netns, err)
	}
	conn, dialErr := net.Dial("tcp", addr)
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays in the pod's namespace: keep it locked, so it ends with this goroutine.
		if conn != nil {
			conn.Close()
		}
		return nil, errors.Join(dialErr, fmt.Errorf("leaving %s: %w", netns, err))
	}
	runtime.UnlockOSThread()
	return conn, dialErr
}
