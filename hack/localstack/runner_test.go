package localstack

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/heraldhq/herald/relay/shardmap"
)

// The runner's tests run the test binary itself as the "herald" of the replicas: with
// FAKE_RELAY=1 in its environment (the container's env) it serves /readyz on --listen and
// records its args, env and the shard map file it was given in $RECORD_DIR/<pod name>.json.
func TestMain(m *testing.M) {
	if os.Getenv("FAKE_RELAY") == "1" {
		fakeRelay()
		return
	}
	os.Exit(m.Run())
}

type record struct {
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	ShardMap string   `json:"shardMap"`
}

func fakeRelay() {
	var rec record
	rec.Args, rec.Env = os.Args[1:], os.Environ()
	listen := ""
	for _, a := range rec.Args {
		if v, ok := strings.CutPrefix(a, "--listen="); ok {
			listen = v
		}
		if v, ok := strings.CutPrefix(a, "--shardmap="); ok {
			b, _ := os.ReadFile(v)
			rec.ShardMap = string(b)
		}
	}
	b, _ := json.Marshal(rec)
	if err := os.WriteFile(filepath.Join(os.Getenv("RECORD_DIR"), os.Getenv("POD_NAME")+".json"), b, 0o644); err != nil {
		os.Exit(3)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		os.Exit(4)
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}

// TestRunnerPlaysKubeletAndDeploymentController runs a relay-shaped Deployment against a real
// API server: replicas as processes with rewritten args and resolved env, status, endpoints,
// restart after a kill, ConfigMap updates, scale down, rollout, deletion, and an app Deployment
// (not managed by Herald) that is never run.
func TestRunnerPlaysKubeletAndDeploymentController(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	t.Cleanup(func() { _ = env.Stop() })
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	records := t.TempDir()
	runner := startRunner(t, ctx, cfg)
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })

	ns := "runner"
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "creds"},
		Data: map[string][]byte{"username": []byte("herald.runner.orders")}}))
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders-shardmap"},
		Data: map[string]string{shardmap.ConfigMapKey: `{"version":1}`}}
	must(t, c.Create(ctx, cm))
	podLabels := map[string]string{"app": "relay", "shard": "0"}
	must(t, c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders-shard-0"},
		Spec: corev1.ServiceSpec{Selector: podLabels, Ports: []corev1.ServicePort{{Port: 7070}}}}))
	dep := relayDeployment(ns, "orders-shard-0", podLabels, records, 2)
	must(t, c.Create(ctx, dep))
	app := relayDeployment(ns, "orders-app", map[string]string{"app": "orders-app"}, records, 1)
	delete(app.Labels, LabelManagedBy)
	must(t, c.Create(ctx, app))

	// Two replicas run, are ready, and the status and endpoints say so.
	awaitT(t, 30*time.Second, "2 ready replicas in the status and the endpoints file", func() error {
		return wantState(ctx, c, runner, ns, "orders-shard-0", 2)
	})
	reps := runner.Replicas()
	for _, r := range reps {
		rec := readRecord(t, records, r.Name)
		dir := filepath.Join(runner.opt.Dir, "volumes", ns, "orders-shard-0", "shardmap")
		for _, want := range []string{"relay", "--shardmap=" + dir + "/shardmap.json", "--redis-username=herald.runner.orders", "--listen=" + r.Addr} {
			if !slices.Contains(rec.Args, want) {
				t.Errorf("replica %s args %q lack %q", r.Name, rec.Args, want)
			}
		}
		if rec.ShardMap != `{"version":1}` {
			t.Errorf("replica %s read shard map %q", r.Name, rec.ShardMap)
		}
		if !slices.Contains(rec.Env, "HERALD_REDIS_USERNAME=herald.runner.orders") || !slices.Contains(rec.Env, "POD_NAME="+r.Name) {
			t.Errorf("replica %s env %q", r.Name, rec.Env)
		}
		for _, e := range rec.Env {
			if strings.HasPrefix(e, "KUBEBUILDER_ASSETS=") {
				t.Errorf("the runner's environment leaked into replica %s: %s", r.Name, e)
			}
		}
	}

	// The ConfigMap changes: the file follows.
	cm.Data[shardmap.ConfigMapKey] = `{"version":2}`
	must(t, c.Update(ctx, cm))
	awaitT(t, 10*time.Second, "the shard map file updated", func() error {
		b, _ := os.ReadFile(filepath.Join(runner.opt.Dir, "volumes", ns, "orders-shard-0", "shardmap", shardmap.ConfigMapKey))
		if string(b) != `{"version":2}` {
			return fmt.Errorf("file holds %q", b)
		}
		return nil
	})

	// A replica killed with SIGKILL is restarted, with a new process on the same address.
	victim := reps[0]
	must(t, syscall.Kill(victim.PID, syscall.SIGKILL))
	awaitT(t, 20*time.Second, "the killed replica restarted", func() error {
		for _, r := range runner.Replicas() {
			if r.Name == victim.Name && r.Restarts >= 1 && r.Ready && r.PID != victim.PID && r.Addr == victim.Addr {
				return wantState(ctx, c, runner, ns, "orders-shard-0", 2)
			}
		}
		return fmt.Errorf("replicas %v", runner.Replicas())
	})

	// Scale down to 1: one process stops.
	setReplicas(t, ctx, c, ns, "orders-shard-0", 1)
	awaitT(t, 20*time.Second, "scaled down to 1", func() error { return wantState(ctx, c, runner, ns, "orders-shard-0", 1) })
	before := runner.Replicas()

	// A template change rolls the replica: a new one starts, the old one stops after it.
	var d appsv1.Deployment
	must(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders-shard-0"}, &d))
	d.Spec.Template.Spec.Containers[0].Args = append(d.Spec.Template.Spec.Containers[0].Args, "--log-level=debug")
	must(t, c.Update(ctx, &d))
	awaitT(t, 20*time.Second, "rolled to the new template", func() error {
		reps := runner.Replicas()
		if len(reps) != 1 || reps[0].Name == before[0].Name {
			return fmt.Errorf("replicas %v", reps)
		}
		if rec := readRecord(t, records, reps[0].Name); !slices.Contains(rec.Args, "--log-level=debug") {
			return fmt.Errorf("new replica args %q", rec.Args)
		}
		return wantState(ctx, c, runner, ns, "orders-shard-0", 1)
	})
	awaitT(t, 15*time.Second, "the old replica's process gone", func() error { return gone(before[0].PID) })

	// Deleting the Deployment stops its replicas; the app's Deployment never ran.
	last := runner.Replicas()
	must(t, c.Delete(ctx, &d))
	awaitT(t, 15*time.Second, "replicas stopped after the delete", func() error {
		if reps := runner.Replicas(); len(reps) > 0 {
			return fmt.Errorf("replicas %v", reps)
		}
		return gone(last[0].PID)
	})
	if files, _ := filepath.Glob(filepath.Join(records, "orders-app-*")); len(files) > 0 {
		t.Errorf("the app Deployment (not managed by Herald) was run: %v", files)
	}
}

func startRunner(t *testing.T, ctx context.Context, cfg *rest.Config) *Runner {
	t.Helper()
	r, err := NewRunner(RunnerOptions{Config: cfg, Herald: os.Args[0], Dir: t.TempDir(), Resync: 100 * time.Millisecond,
		ProbeInterval: 100 * time.Millisecond, StopGrace: 5 * time.Second, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// relayDeployment is shaped like the operator's relay Deployments (controllers/workloads).
func relayDeployment(ns, name string, podLabels map[string]string, records string, replicas int32) *appsv1.Deployment {
	optional := false
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelManagedBy: ManagedBy}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "relay", Image: "herald",
						Args: []string{"relay", "--role=shard", "--shardmap=/etc/herald/shardmap.json", "--listen=:7070",
							"--redis-username=$(HERALD_REDIS_USERNAME)"},
						Env: []corev1.EnvVar{
							{Name: "FAKE_RELAY", Value: "1"},
							{Name: "RECORD_DIR", Value: records},
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "HERALD_REDIS_USERNAME", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "username", Optional: &optional}}},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}}},
						Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 7070}},
						VolumeMounts:   []corev1.VolumeMount{{Name: "shardmap", MountPath: "/etc/herald", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "shardmap", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: "orders-shardmap"}}}}},
				},
			},
		},
	}
}

// wantState checks the Deployment's status and the endpoints file for n ready replicas.
func wantState(ctx context.Context, c client.Client, r *Runner, ns, name string, n int32) error {
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
		return err
	}
	s := d.Status
	if s.ObservedGeneration != d.Generation || s.Replicas != n || s.ReadyReplicas != n || s.AvailableReplicas != n || s.UpdatedReplicas != n {
		return fmt.Errorf("status %+v, generation %d", s, d.Generation)
	}
	b, err := os.ReadFile(r.EndpointsFile())
	if err != nil {
		return err
	}
	var eps shardmap.Endpoints
	if err := json.Unmarshal(b, &eps); err != nil {
		return err
	}
	if got := eps[ServiceHost(ns, name)]; len(got) != int(n) {
		return fmt.Errorf("endpoints of %s: %v", name, got)
	}
	return nil
}

func setReplicas(t *testing.T, ctx context.Context, c client.Client, ns, name string, n int32) {
	t.Helper()
	var d appsv1.Deployment
	must(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d))
	d.Spec.Replicas = &n
	must(t, c.Update(ctx, &d))
}

func readRecord(t *testing.T, dir, pod string) record {
	t.Helper()
	var rec record
	b, err := os.ReadFile(filepath.Join(dir, pod+".json"))
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		t.Fatalf("record of %s: %v", pod, err)
	}
	return rec
}

// gone reports whether pid no longer runs (a zombie counts as gone: it was waited for by the
// runner or will be).
func gone(pid int) error {
	if err := syscall.Kill(pid, 0); err != nil {
		return nil
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(b), ") Z ") {
		return nil
	}
	return fmt.Errorf("pid %d still runs", pid)
}

func awaitT(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
