package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
)

// Pinning keeps the servers (shard relays, sidecar, Redis) and the load generator on cores of
// their own, so that the clients' work does not queue in front of the relay's and the p99 of
// a full-size row is the relay's. The bench runs some rows both ways.
type Pinning struct {
	Servers, Clients string // taskset CPU lists; "" = every core (not pinned)
}

// pinned: the servers on CPU 0, the clients on the others (one core each on 2 cores).
func pinned() Pinning {
	clients := "1"
	if n := runtime.NumCPU(); n > 2 {
		clients = "1-" + strconv.Itoa(n-1)
	}
	return Pinning{Servers: "0", Clients: clients}
}

// String is what the report says of the pinning.
func (p Pinning) String() string {
	if p.Servers == "" {
		return ""
	}
	return fmt.Sprintf("pinned: relay and Redis on CPU %s, clients on CPU %s", p.Servers, p.Clients)
}

// pin moves every thread of the servers and of this process as p says (taskset -a -p); the
// threads they start later inherit it.
func (r *Runner) pin(p Pinning) error {
	all := "0-" + strconv.Itoa(runtime.NumCPU()-1)
	servers, clients := p.Servers, p.Clients
	if servers == "" {
		servers, clients = all, all
	}
	var pids []int
	for _, port := range r.cluster.Ports() {
		if pid, err := r.cluster.PID(port); err == nil {
			pids = append(pids, pid)
		}
	}
	for _, proc := range []*Proc{r.relay, r.eager, r.sidecar} {
		if proc != nil {
			pids = append(pids, proc.PID())
		}
	}
	for _, pid := range pids {
		if err := taskset(servers, pid); err != nil {
			return err
		}
	}
	return taskset(clients, os.Getpid())
}

func taskset(cpus string, pid int) error {
	if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", cpus, pid, err, out)
	}
	return nil
}
