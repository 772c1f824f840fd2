package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat (100 on Linux).
const clockTicks = 100

// ProcStat is what the load generator reads of a process from /proc.
type ProcStat struct {
	CPU time.Duration // utime + stime
	RSS int64         // resident set size, bytes
}

// ReadProc reads /proc/<pid>/stat.
func ReadProc(pid int) (ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime 15, rss 24.
	if len(f) < 22 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return ProcStat{
		CPU: time.Duration(ut+st) * time.Second / clockTicks,
		RSS: rss * int64(os.Getpagesize()),
	}, nil
}

// CPUOf returns the CPU time of pids added up (0 for a process that is gone).
func CPUOf(pids ...int) time.Duration {
	var d time.Duration
	for _, p := range pids {
		if s, err := ReadProc(p); err == nil {
			d += s.CPU
		}
	}
	return d
}

// Proc is a process the load generator started (a relay or a sidecar).
type Proc struct {
	Name string
	URL  string // base URL of its HTTP API
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// PID is the process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// StartProc starts bin with args, logging to logPath; url is where it will serve.
func StartProc(name, bin string, args []string, env []string, logPath, url string) (*Proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	// If the load generator dies, the kernel ends what it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	p := &Proc{Name: name, URL: url, cmd: cmd, done: make(chan struct{}), log: lf}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Stop ends the process with SIGTERM (SIGKILL after 10 s) and waits for it.
func (p *Proc) Stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.log.Close()
}

// WaitReady polls /readyz until it answers 200.
func (p *Proc) WaitReady(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready; see %s", p.Name, p.log.Name())
		default:
		}
		if resp, err := http.Get(p.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v; see %s", p.Name, within, p.log.Name())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errNotRecovered marks a measurement that did not finish in time.
var errNotRecovered = errors.New("did not recover in time")
