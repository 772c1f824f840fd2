package localcluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a child process with its output in a log file and its PID in <dir>/pids/<name>,
// so that Down can stop it after a crash of its parent.
type Process struct {
	Name    string
	cmd     *exec.Cmd
	pidFile string
	exited  chan error
	done    chan struct{} // closed when the process is gone
}

// StartProcess starts bin with args, this process's environment plus env, and output appended
// to <dir>/logs/<name>.log. It runs in its own process group (a Ctrl-C reaches only its
// parent, which stops it) and is killed if its parent dies.
func StartProcess(dir, name, bin string, args, env []string) (*Process, error) {
	logPath := filepath.Join(dir, "logs", name+".log")
	pidFile := filepath.Join(dir, "pids", name)
	for _, d := range []string{filepath.Dir(logPath), filepath.Dir(pidFile)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
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
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	p := &Process{Name: name, cmd: cmd, pidFile: pidFile, exited: make(chan error, 1), done: make(chan struct{})}
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
	_ = os.Remove(p.pidFile)
}

// Kill sends SIGKILL and returns when the process is gone.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	_ = os.Remove(p.pidFile)
}

// runs reports whether pid is a process of the cluster in dir named name: it runs the binary
// name was started from ("kubelet" for kubelet and kubelet-2) with dir on its command line
// (each is given a file there), so that a recycled PID, even the machine's own containerd's, is
// left alone.
func runs(pid int, name, dir string) bool {
	bin := processName(pid)
	if bin == "" || (name != bin && !strings.HasPrefix(name, bin+"-")) {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(cmdline), dir+"/")
}

// killPidFiles stops every process named by a pid file under <dir>/pids that still runs the
// binary it was started as (a recycled PID is left alone), and removes the files.
func killPidFiles(dir string) (killed []string) {
	files, _ := filepath.Glob(filepath.Join(dir, "pids", "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && runs(pid, filepath.Base(f), dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, filepath.Base(f))
		}
		_ = os.Remove(f)
	}
	return killed
}

// processName is the file name of pid's executable ("" when it is gone).
func processName(pid int) string {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return ""
	}
	return filepath.Base(exe)
}
