package localcluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// leftover starts a process the way a cluster run does (its pid file under dir/pids, named
// after its binary, a file of dir on its command line), as if the run had crashed.
func leftover(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "logs", "x.log")
	if err := os.WriteFile(log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return startWithPidFile(t, dir, "tail", exec.Command("tail", "-f", log))
}

// startWithPidFile starts cmd and writes its pid to dir/pids/name.
func startWithPidFile(t *testing.T, dir, name string, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	if err := os.MkdirAll(filepath.Join(dir, "pids"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pids", name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// A second start next to a live (or crashed) cluster is refused with what to do.
func TestPreflightRefusesALiveCluster(t *testing.T) {
	if os.Geteuid() != 0 {
		if err := Preflight(t.TempDir(), 7981); err == nil || !strings.Contains(err.Error(), "as root") {
			t.Fatalf("Preflight without root: %v; want it to say to run as root", err)
		}
		return
	}
	dir := t.TempDir()
	leftover(t, dir)
	err := Preflight(dir, 7981)
	if err == nil || !strings.Contains(err.Error(), "already running") || !strings.Contains(err.Error(), "make dev-down") {
		t.Fatalf("Preflight with a live process of the cluster: %v; want it to say so and name make dev-down", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the error is more than one line: %q", err)
	}
}

// Down removes what a crashed run left: its processes (by pid file) and its mounts.
func TestDownRemovesLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mounts); make test runs as root in CI")
	}
	dir := t.TempDir()
	proc := leftover(t, dir)
	// A pid file whose PID now belongs to a process of the machine running the same binary
	// (as if the machine's own tail had taken a recycled PID): not the cluster's, left alone.
	foreign := startWithPidFile(t, dir, "tail-2", exec.Command("tail", "-f", "/dev/null"))
	mnt := filepath.Join(dir, "kubelet", "pods", "x", "volumes", "token")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	if err := Down(dir); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _, _ = proc.Process.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("Down left the cluster's process running")
	}
	if err := foreign.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("Down killed a process of the machine that ran the binary a pid file names: %v", err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), mnt) {
		t.Errorf("Down left %s mounted", mnt)
	}
	if _, err := os.Stat(filepath.Join(dir, "pids", "tail")); !os.IsNotExist(err) {
		t.Errorf("Down left the pid file (%v)", err)
	}
}
