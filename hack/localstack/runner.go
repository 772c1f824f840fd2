package localstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Only Deployments with this label are run: the operator's relay Deployments.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "herald-operator"
)

// RunnerOptions configure a Runner.
type RunnerOptions struct {
	Config    *rest.Config // the API server; required
	Herald    string       // the herald binary replicas run; required
	Dir       string       // logs, volumes and the endpoints file go here; required
	ExtraArgs []string     // appended to every replica's args; none by default
	// ServiceAccountKubeconfig, when set, gives a replica whose pod mounts a service account
	// token (automountServiceAccountToken not false) "--kubeconfig=<path>": a kubeconfig that
	// reaches the API server as the pod's service account, as the in-cluster config would. It
	// is called at every start and on every pass, so that it can renew the token.
	ServiceAccountKubeconfig func(ctx context.Context, namespace, serviceAccount string) (string, error)
	Resync                   time.Duration // period of the converging pass. Defaults to 500ms.
	ProbeInterval            time.Duration // period of readiness probes. Defaults to 500ms (pods say 5s; locally faster is kinder).
	StopGrace                time.Duration // SIGTERM to SIGKILL when a replica is stopped. Defaults to 10s.
	Logf                     func(format string, args ...any)
}

// Runner plays the kubelet and the Deployment controller for the operator's Deployments. See
// the package documentation for what it does and does not do.
type Runner struct {
	opt      RunnerOptions
	client   client.Client
	wake     chan struct{}
	stopping sync.WaitGroup // replicas being stopped

	mu          sync.Mutex
	deployments map[types.NamespacedName]*deploymentState
	endpoints   []byte    // last written endpoints file
	lastGC      time.Time // of the last garbage collection (only Run's goroutine uses it)
}

// gcPeriod is how often the runner looks for objects whose channel is gone.
const gcPeriod = 2 * time.Second

type deploymentState struct {
	replicas []*replica
}

// NewRunner checks the options and connects to the API server; Run starts the work.
func NewRunner(opt RunnerOptions) (*Runner, error) {
	if opt.Config == nil || opt.Herald == "" || opt.Dir == "" {
		return nil, errors.New("localstack: RunnerOptions need Config, Herald and Dir")
	}
	if opt.Resync <= 0 {
		opt.Resync = 500 * time.Millisecond
	}
	if opt.ProbeInterval <= 0 {
		opt.ProbeInterval = 500 * time.Millisecond
	}
	if opt.StopGrace <= 0 {
		opt.StopGrace = 10 * time.Second
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	herald, err := filepath.Abs(opt.Herald)
	if err != nil {
		return nil, err
	}
	opt.Herald = herald
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	c, err := client.New(opt.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &Runner{opt: opt, client: c, wake: make(chan struct{}, 1), deployments: map[types.NamespacedName]*deploymentState{}}, nil
}

// EndpointsFile is the shardmap.Endpoints JSON the runner keeps up to date (for --endpoints-file).
func (r *Runner) EndpointsFile() string { return filepath.Join(r.opt.Dir, "endpoints.json") }

// Replicas returns a snapshot of every replica, ordered by namespace and name.
func (r *Runner) Replicas() []ReplicaInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ReplicaInfo
	for _, d := range r.deployments {
		for _, rep := range d.replicas {
			out = append(out, rep.info())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

// Run converges until ctx ends, then stops every replica it started and waits for them.
func (r *Runner) Run(ctx context.Context) error {
	defer r.stopAll()
	tick := time.NewTicker(r.opt.Resync)
	defer tick.Stop()
	var lastErr string
	for {
		if err := r.pass(ctx); err != nil && ctx.Err() == nil && err.Error() != lastErr {
			r.opt.Logf("runner pass: %v (retrying)", err)
			lastErr = err.Error()
		} else if err == nil {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.wake:
		}
	}
}

func (r *Runner) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// pass is one level-based convergence: processes to Deployments, then status and endpoints.
func (r *Runner) pass(ctx context.Context) error {
	var deps appsv1.DeploymentList
	if err := r.client.List(ctx, &deps, client.MatchingLabels{LabelManagedBy: ManagedBy}); err != nil {
		return fmt.Errorf("listing Deployments: %w", err)
	}
	seen := map[types.NamespacedName]bool{}
	var errs []error
	for i := range deps.Items {
		d := &deps.Items[i]
		if d.DeletionTimestamp != nil {
			continue // being deleted: its replicas go, as its pods would
		}
		key := types.NamespacedName{Namespace: d.Namespace, Name: d.Name}
		seen[key] = true
		if err := r.converge(ctx, d); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	r.mu.Lock()
	for key, st := range r.deployments {
		if !seen[key] {
			r.stopReplicas(st.replicas...)
			delete(r.deployments, key)
			_ = os.RemoveAll(r.volumeDir(key))
		}
	}
	r.mu.Unlock()
	if err := r.writeEndpoints(ctx); err != nil {
		errs = append(errs, err)
	}
	if time.Since(r.lastGC) >= gcPeriod {
		r.lastGC = time.Now()
		if err := r.collectGarbage(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// converge starts and stops replicas of d (rolling, never below spec.replicas available),
// refreshes its volumes and writes its status.
func (r *Runner) converge(ctx context.Context, d *appsv1.Deployment) error {
	key := types.NamespacedName{Namespace: d.Namespace, Name: d.Name}
	if len(d.Spec.Template.Spec.Containers) == 0 {
		return errors.New("the pod template has no container")
	}
	if err := r.materializeVolumes(ctx, key, &d.Spec.Template.Spec); err != nil {
		return err // replicas that run keep their files; new ones wait in prepare
	}
	if sa, ok := r.podServiceAccount(&d.Spec.Template.Spec); ok {
		if _, err := r.opt.ServiceAccountKubeconfig(ctx, d.Namespace, sa); err != nil {
			return err // renewing the token; running replicas keep the current one
		}
	}
	desired := 1
	if d.Spec.Replicas != nil {
		desired = int(*d.Spec.Replicas)
	}
	hash := templateHash(&d.Spec.Template)

	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.deployments[key]
	if st == nil {
		st = &deploymentState{}
		r.deployments[key] = st
	}
	var current, old []*replica
	for _, rep := range st.replicas {
		if rep.hash == hash {
			current = append(current, rep)
		} else {
			old = append(old, rep)
		}
	}
	// Scale up or roll: one surge replica above spec.replicas at most.
	for len(current) < desired && len(current)+len(old) < desired+1 {
		rep, err := r.newReplica(d, hash)
		if err != nil {
			return err
		}
		current = append(current, rep)
	}
	// Scale down: not-ready replicas go first, then the newest.
	sort.SliceStable(current, func(i, j int) bool { return current[i].ready.Load() && !current[j].ready.Load() })
	for len(current) > desired {
		r.stopReplicas(current[len(current)-1])
		current = current[:len(current)-1]
	}
	// Old replicas go when they are not ready or when the rest keep spec.replicas available.
	available := countReady(current) + countReady(old)
	var keep []*replica
	for _, rep := range old {
		switch {
		case !rep.ready.Load():
			r.stopReplicas(rep)
		case available-1 >= desired:
			r.stopReplicas(rep)
			available--
		default:
			keep = append(keep, rep)
		}
	}
	st.replicas = append(current, keep...)
	return r.writeStatus(ctx, d, st, hash)
}

func countReady(reps []*replica) int {
	n := 0
	for _, rep := range reps {
		if rep.ready.Load() {
			n++
		}
	}
	return n
}

// writeStatus writes what a Deployment controller would, only when it changed.
func (r *Runner) writeStatus(ctx context.Context, d *appsv1.Deployment, st *deploymentState, hash string) error {
	want := d.Status
	want.ObservedGeneration = d.Generation
	want.Replicas = int32(len(st.replicas))
	want.UpdatedReplicas, want.ReadyReplicas = 0, 0
	for _, rep := range st.replicas {
		if rep.hash == hash {
			want.UpdatedReplicas++
		}
		if rep.ready.Load() {
			want.ReadyReplicas++
		}
	}
	want.AvailableReplicas = want.ReadyReplicas // minReadySeconds is 0
	desired := int32(1)
	if d.Spec.Replicas != nil {
		desired = *d.Spec.Replicas
	}
	want.UnavailableReplicas = max(0, desired-want.AvailableReplicas)
	if want.ObservedGeneration == d.Status.ObservedGeneration && want.Replicas == d.Status.Replicas &&
		want.UpdatedReplicas == d.Status.UpdatedReplicas && want.ReadyReplicas == d.Status.ReadyReplicas &&
		want.AvailableReplicas == d.Status.AvailableReplicas && want.UnavailableReplicas == d.Status.UnavailableReplicas {
		return nil
	}
	d = d.DeepCopy()
	d.Status = want
	if err := r.client.Status().Update(ctx, d); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil // a conflict is retried by the next pass
}

// newReplica creates and starts a replica of d's current template. Called with r.mu held.
func (r *Runner) newReplica(d *appsv1.Deployment, hash string) (*replica, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := d.Name + "-" + hash[:8] + "-" + hex.EncodeToString(suffix)
	tmpl := d.Spec.Template.DeepCopy()
	lbls := map[string]string{"pod-template-hash": hash[:8]}
	for k, v := range tmpl.Labels {
		lbls[k] = v
	}
	c := &tmpl.Spec.Containers[0]
	probePath, probeTimeout, failureThreshold := "/readyz", 2*time.Second, 3
	if p := c.ReadinessProbe; p != nil && p.HTTPGet != nil {
		probePath = p.HTTPGet.Path
		if p.TimeoutSeconds > 0 {
			probeTimeout = time.Duration(p.TimeoutSeconds) * time.Second
		}
		if p.FailureThreshold > 0 {
			failureThreshold = int(p.FailureThreshold)
		}
	}
	key := types.NamespacedName{Namespace: d.Namespace, Name: d.Name}
	pod := PodInfo{Name: name, Namespace: d.Namespace, ServiceAccount: tmpl.Spec.ServiceAccountName, IP: "127.0.0.1",
		Labels: lbls, Annotations: tmpl.Annotations}
	rep := &replica{
		name: name, namespace: d.Namespace, deployment: d.Name, hash: hash, labels: lbls, addr: addr,
		logPath: filepath.Join(r.opt.Dir, "logs", d.Namespace+"_"+name+".log"), herald: r.opt.Herald,
		probePath: probePath, probeTimeout: probeTimeout, probeInterval: r.opt.ProbeInterval, failureThreshold: failureThreshold,
		grace: r.opt.StopGrace, notify: r.notify, logf: r.opt.Logf,
		stopCh: make(chan struct{}), done: make(chan struct{}),
	}
	rep.prepare = func(ctx context.Context) ([]string, []string, error) {
		if err := r.materializeVolumes(ctx, key, &tmpl.Spec); err != nil {
			return nil, nil, err
		}
		mounts := r.mounts(key, c)
		env, err := ResolveEnv(c, pod, apiSource{ctx: ctx, c: r.client}, mounts)
		if err != nil {
			return nil, nil, err
		}
		args := append(ContainerArgs(c, env, mounts, addr), r.opt.ExtraArgs...)
		if sa, ok := r.podServiceAccount(&tmpl.Spec); ok {
			kc, err := r.opt.ServiceAccountKubeconfig(ctx, d.Namespace, sa)
			if err != nil {
				return nil, nil, err
			}
			args = append(args, "--kubeconfig="+kc)
		}
		return args, env.List(), nil
	}
	if err := os.MkdirAll(filepath.Dir(rep.logPath), 0o755); err != nil {
		return nil, err
	}
	go rep.supervise()
	return rep, nil
}

// podServiceAccount is the service account whose kubeconfig a pod gets, if it gets one.
func (r *Runner) podServiceAccount(spec *corev1.PodSpec) (string, bool) {
	if r.opt.ServiceAccountKubeconfig == nil || (spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken) {
		return "", false
	}
	if spec.ServiceAccountName == "" {
		return "default", true
	}
	return spec.ServiceAccountName, true
}

// stopReplicas stops replicas in the background (the pass goes on); Run waits for them.
func (r *Runner) stopReplicas(reps ...*replica) {
	for _, rep := range reps {
		r.opt.Logf("replica %s/%s stopping", rep.namespace, rep.name)
		r.stopping.Add(1)
		go func() {
			defer r.stopping.Done()
			rep.stop()
		}()
	}
}

func (r *Runner) stopAll() {
	r.mu.Lock()
	for key, st := range r.deployments {
		r.stopReplicas(st.replicas...)
		delete(r.deployments, key)
	}
	r.mu.Unlock()
	r.stopping.Wait()
}

func (r *Runner) volumeDir(key types.NamespacedName) string {
	return filepath.Join(r.opt.Dir, "volumes", key.Namespace, key.Name)
}

// mounts maps the container's volume mounts to local directories.
func (r *Runner) mounts(key types.NamespacedName, c *corev1.Container) []Mount {
	var ms []Mount
	for _, vm := range c.VolumeMounts {
		ms = append(ms, Mount{ContainerPath: vm.MountPath, LocalPath: filepath.Join(r.volumeDir(key), vm.Name, vm.SubPath)})
	}
	return ms
}

// materializeVolumes writes ConfigMap and Secret volumes as files (only the files whose content
// changed, each replaced atomically) and creates emptyDir volumes.
func (r *Runner) materializeVolumes(ctx context.Context, key types.NamespacedName, spec *corev1.PodSpec) error {
	src := apiSource{ctx: ctx, c: r.client}
	for _, v := range spec.Volumes {
		dir := filepath.Join(r.volumeDir(key), v.Name)
		files := map[string][]byte{}
		var items []corev1.KeyToPath
		switch {
		case v.ConfigMap != nil:
			data, err := src.ConfigMap(key.Namespace, v.ConfigMap.Name)
			if err != nil {
				if isTrue(v.ConfigMap.Optional) {
					continue
				}
				return fmt.Errorf("volume %s: configMap %s: %w", v.Name, v.ConfigMap.Name, err)
			}
			for k, val := range data {
				files[k] = []byte(val)
			}
			items = v.ConfigMap.Items
		case v.Secret != nil:
			data, err := src.Secret(key.Namespace, v.Secret.SecretName)
			if err != nil {
				if isTrue(v.Secret.Optional) {
					continue
				}
				return fmt.Errorf("volume %s: secret %s: %w", v.Name, v.Secret.SecretName, err)
			}
			files = data
			items = v.Secret.Items
		case v.EmptyDir != nil:
		default:
			return fmt.Errorf("volume %s: only configMap, secret and emptyDir volumes run locally", v.Name)
		}
		if len(items) > 0 {
			picked := map[string][]byte{}
			for _, it := range items {
				if b, ok := files[it.Key]; ok {
					picked[it.Path] = b
				}
			}
			files = picked
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for name, b := range files {
			if err := writeFileIfChanged(filepath.Join(dir, name), b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeEndpoints rewrites the endpoints file when the ready replicas behind a Service changed.
func (r *Runner) writeEndpoints(ctx context.Context) error {
	var svcs corev1.ServiceList
	if err := r.client.List(ctx, &svcs); err != nil {
		return fmt.Errorf("listing Services: %w", err)
	}
	var views []ReplicaView
	for _, info := range r.Replicas() {
		views = append(views, ReplicaView{Namespace: info.Namespace, Labels: info.Labels, Addr: info.Addr, Ready: info.Ready})
	}
	b, err := json.MarshalIndent(ComputeEndpoints(svcs.Items, views), "", "  ")
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if bytes.Equal(b, r.endpoints) {
		return nil
	}
	if err := writeFileIfChanged(r.EndpointsFile(), b, 0o644); err != nil {
		return err
	}
	r.endpoints = b
	return nil
}

// writeFileIfChanged replaces path atomically (write, then rename) unless it holds b already.
func writeFileIfChanged(path string, b []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), mode)); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

// templateHash names a pod template's version, as pod-template-hash does.
func templateHash(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t)
	h := fnv.New64a()
	h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64())
}

// apiSource reads Secrets and ConfigMaps from the API server.
type apiSource struct {
	ctx context.Context
	c   client.Client
}

func (s apiSource) Secret(namespace, name string) (map[string][]byte, error) {
	var sec corev1.Secret
	if err := s.c.Get(s.ctx, types.NamespacedName{Namespace: namespace, Name: name}, &sec); err != nil {
		return nil, err
	}
	return sec.Data, nil
}

func (s apiSource) ConfigMap(namespace, name string) (map[string]string, error) {
	var cm corev1.ConfigMap
	if err := s.c.Get(s.ctx, types.NamespacedName{Namespace: namespace, Name: name}, &cm); err != nil {
		return nil, err
	}
	return cm.Data, nil
}
