package injection

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/internal/testing/testenv"
)

var (
	scheme   = runtime.NewScheme()
	cfg      *rest.Config
	k8s      client.Client         // sees the webhook's warnings through warnings below
	warnings = &testenv.Warnings{} // admission warnings arrive as Warning headers
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(heraldv1.AddToScheme(scheme))
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	env := &envtest.Environment{
		WebhookInstallOptions: envtest.WebhookInstallOptions{
			// The same selector and failure policy the chart installs.
			MutatingWebhooks: []*admissionv1.MutatingWebhookConfiguration{injectorConfiguration("herald-sidecar-injector")},
		},
	}
	var err error
	cfg, err = testenv.Start(env)
	defer func() { _ = env.Stop() }()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	withWarnings := rest.CopyConfig(cfg)
	withWarnings.WarningHandler = warnings
	if k8s, err = client.New(withWarnings, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	wo := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:        scheme,
		Metrics:       metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(webhook.Options{Host: wo.LocalServingHost, Port: wo.LocalServingPort, CertDir: wo.LocalServingCertDir}),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := Setup(mgr, Options{Image: "herald:test", CertDir: wo.LocalServingCertDir, MetricsPort: 7071}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()
	// Wait until the webhook answers, or every pod create below would fail closed.
	addr := net.JoinHostPort(wo.LocalServingHost, fmt.Sprint(wo.LocalServingPort))
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "the webhook server did not start")
			return 1
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m.Run()
}

func injectorConfiguration(name string) *admissionv1.MutatingWebhookConfiguration {
	fail := admissionv1.Fail
	none := admissionv1.SideEffectClassNone
	ifNeeded := admissionv1.IfNeededReinvocationPolicy
	path := Path
	return &admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		Webhooks: []admissionv1.MutatingWebhook{{
			Name:                    "sidecar-injector.notifications.herald.dev",
			ClientConfig:            admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Name: "herald-webhook", Namespace: "herald-system", Path: &path}},
			Rules:                   []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create}, Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{heraldv1.InjectLabel: "true"}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			ReinvocationPolicy:      &ifNeeded,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}

func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "inject-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// pod builds an app pod with two containers; mods label or annotate it.
func pod(ns string, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app", Annotations: map[string]string{}, Labels: map[string]string{}},
		// envtest runs without the ServiceAccount admission plugin, which sets this in a real cluster.
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{
			{Name: "app", Image: "app:1"},
			{Name: "helper", Image: "helper:1", Env: []corev1.EnvVar{{Name: URLEnv, Value: "http://custom:1"}}},
		}},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func labelled(p *corev1.Pod) { p.Labels[heraldv1.InjectLabel] = "true" }

func channels(list string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Annotations[heraldv1.ChannelsAnnotation] = list }
}

func sidecars(p *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, c := range p.Spec.InitContainers {
		if c.Name == ContainerName {
			out = append(out, c)
		}
	}
	return out
}

func TestLabelledPodGetsOneRestrictedSidecar(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	if err := k8s.Create(ctx, &heraldv1.NotificationChannel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders"},
		Spec: heraldv1.NotificationChannelSpec{Retention: &heraldv1.Retention{MaxLength: ptr(int64(10))}}}); err != nil {
		t.Fatal(err)
	}
	mark := warnings.Mark()
	p := pod(ns, labelled, channels("orders"))
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if w := warnings.Since(mark); len(w) != 0 {
		t.Fatalf("an existing channel must not warn: %v", w)
	}
	got := sidecars(p)
	if len(got) != 1 {
		t.Fatalf("want exactly one sidecar, got %d: %+v", len(got), p.Spec.InitContainers)
	}
	sc := got[0]
	sec := sc.SecurityContext
	switch {
	case sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways:
		t.Fatal("the sidecar must be a native sidecar (restartPolicy Always)")
	case sc.Image != "herald:test" || !slices.Contains(sc.Args, "--role=sidecar") || !slices.Contains(sc.Args, "--channels=orders") ||
		!slices.Contains(sc.Args, "--listen=127.0.0.1:7070"):
		t.Fatalf("unexpected sidecar command: %s %v", sc.Image, sc.Args)
	case !*sec.RunAsNonRoot || *sec.AllowPrivilegeEscalation || !*sec.ReadOnlyRootFilesystem ||
		len(sec.Capabilities.Drop) != 1 || sec.Capabilities.Drop[0] != "ALL" || sec.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Fatalf("the sidecar is not restricted: %+v", sec)
	case sc.ReadinessProbe == nil || sc.LivenessProbe == nil || sc.StartupProbe == nil ||
		!strings.HasSuffix(sc.ReadinessProbe.Exec.Command[2], "/readyz"):
		t.Fatalf("the sidecar lacks probes: %+v", sc)
	case sc.Resources.Limits.Memory().String() != "128Mi":
		t.Fatalf("default resources not applied: %+v", sc.Resources)
	}
	var token *corev1.ServiceAccountTokenProjection
	for _, v := range p.Spec.Volumes {
		if v.Name == TokenVolume && len(v.Projected.Sources) == 1 {
			token = v.Projected.Sources[0].ServiceAccountToken
		}
	}
	// The channel's own audience, at the path the sidecar reads for it.
	if want := "herald.dev/" + ns + "/orders"; token == nil || token.Audience != want || token.Path != ns+".orders" ||
		!slices.Contains(sc.Args, "--token-dir="+TokenDir) {
		t.Fatalf("want one projected token with audience %q at %s.orders, read from --token-dir: %+v %v", want, ns, p.Spec.Volumes, sc.Args)
	}
	// Metrics on the pod IP, with the scrape annotations; the API stays on loopback.
	if !slices.Contains(sc.Args, "--metrics-listen=:7071") || len(sc.Ports) != 1 || sc.Ports[0].Name != MetricsPortName ||
		p.Annotations["prometheus.io/scrape"] != "true" || p.Annotations["prometheus.io/port"] != "7071" {
		t.Fatalf("the sidecar's metrics are not scrapeable: args %v ports %+v annotations %v", sc.Args, sc.Ports, p.Annotations)
	}
	env := func(c corev1.Container) string {
		for _, e := range c.Env {
			if e.Name == URLEnv {
				return e.Value
			}
		}
		return ""
	}
	if env(p.Spec.Containers[0]) != URL || env(p.Spec.Containers[1]) != "http://custom:1" {
		t.Fatalf("HERALD_URL must be set in every app container without overriding the app's own: %+v", p.Spec.Containers)
	}

	// The same pod again (delete, create): still one sidecar.
	if err := k8s.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventuallyGone(t, p)
	again := pod(ns, labelled, channels("orders"))
	if err := k8s.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	if n := len(sidecars(again)); n != 1 {
		t.Fatalf("re-creating the pod gave %d sidecars", n)
	}
	// Re-invocation on an injected pod changes nothing.
	before := again.DeepCopy()
	if Inject(again, Sidecar{Namespace: ns, Image: "herald:test", Channels: []string{"orders"}, Resources: sc.Resources}) {
		t.Fatal("Inject on an injected pod must report no change")
	}
	if len(again.Spec.InitContainers) != len(before.Spec.InitContainers) || len(again.Spec.Volumes) != len(before.Spec.Volumes) {
		t.Fatal("Inject on an injected pod changed it")
	}
	// ... except for a container another webhook added since, which gets HERALD_URL.
	again.Spec.Containers = append(again.Spec.Containers, corev1.Container{Name: "late", Image: "late:1"})
	if !Inject(again, Sidecar{Namespace: ns, Image: "herald:test", Channels: []string{"orders"}, Resources: sc.Resources}) || env(again.Spec.Containers[2]) != URL ||
		len(sidecars(again)) != 1 {
		t.Fatal("re-invocation must add HERALD_URL to a new container and nothing else")
	}
}

func eventuallyGone(t *testing.T, p *corev1.Pod) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			// envtest has no kubelet: a pod without a node is deleted at once; force it otherwise.
			t.Fatalf("pod %s not gone: %v", p.Name, err)
		}
	}
}

func TestUnlabelledPodIsUntouched(t *testing.T) {
	p := pod(namespace(t), channels("orders"))
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.InitContainers) != 0 || len(p.Spec.Volumes) != 0 || len(p.Spec.Containers[0].Env) != 0 {
		t.Fatalf("an unlabelled pod was changed: %+v", p.Spec)
	}
}

func TestWarningsAndAnnotations(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	// A channel of 16 MiB messages: its sidecar needs room for them.
	if err := k8s.Create(ctx, &heraldv1.NotificationChannel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big"},
		Spec: heraldv1.NotificationChannelSpec{MaxMessageBytes: 16 << 20, Retention: &heraldv1.Retention{MaxLength: ptr(int64(10))}}}); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		pod          *corev1.Pod
		wantSidecar  bool
		wantWarning  string // a warning must contain this ("" = no warning)
		wantDenied   string // the create must fail with this ("" = allowed)
		wantMemLimit string
		wantArg      string // the sidecar's args must hold this ("" = no check)
	}{
		"missing channel": {pod: pod(ns, labelled, channels("nope")), wantSidecar: true,
			wantWarning: "NotificationChannel " + ns + "/nope does not exist", wantMemLimit: "128Mi"},
		"no channels listed": {pod: pod(ns, labelled), wantWarning: "lists no channels"},
		// No existence oracle for namespaces the pod's creator may not read: a channel of another
		// namespace, there or not, draws no warning.
		"another namespace's channel": {pod: pod(ns, labelled, channels("elsewhere/nope")), wantSidecar: true, wantMemLimit: "128Mi"},
		"resource override": {pod: pod(ns, labelled, channels("nope"), func(p *corev1.Pod) {
			p.Annotations[MemoryLimitAnnotation] = "300Mi"
		}), wantSidecar: true, wantWarning: "does not exist", wantMemLimit: "300Mi"},
		// 32Mi + 4 x (6 x 16 MiB + 64 KiB), to whole MiB.
		"a channel of large messages": {pod: pod(ns, labelled, channels("big")), wantSidecar: true, wantMemLimit: "417Mi"},
		"a limit too small for them": {pod: pod(ns, labelled, channels("big"), func(p *corev1.Pod) {
			p.Annotations[MemoryLimitAnnotation] = "128Mi"
		}), wantSidecar: true, wantWarning: "below the 417Mi the sidecar needs", wantMemLimit: "128Mi"},
		"sidecar log level": {pod: pod(ns, labelled, channels("elsewhere/orders"), func(p *corev1.Pod) {
			p.Annotations[heraldv1.SidecarLogLevelAnnotation] = "debug"
		}), wantSidecar: true, wantMemLimit: "128Mi", wantArg: "--log-level=debug"},
		"websocket origins": {pod: pod(ns, labelled, channels("elsewhere/orders"), func(p *corev1.Pod) {
			p.Annotations[heraldv1.SidecarWSOriginPatternsAnnotation] = "app.example.com,*.example.org"
		}), wantSidecar: true, wantMemLimit: "128Mi", wantArg: "--ws-origin-patterns=app.example.com,*.example.org"},
		"bad websocket origin": {pod: pod(ns, labelled, channels("orders"), func(p *corev1.Pod) {
			p.Annotations[heraldv1.SidecarWSOriginPatternsAnnotation] = "app.[example.com"
		}), wantDenied: heraldv1.SidecarWSOriginPatternsAnnotation},
		"bad log level": {pod: pod(ns, labelled, channels("orders"), func(p *corev1.Pod) {
			p.Annotations[heraldv1.SidecarLogLevelAnnotation] = "chatty"
		}), wantDenied: heraldv1.SidecarLogLevelAnnotation},
		"bad resource annotation": {pod: pod(ns, labelled, channels("orders"), func(p *corev1.Pod) {
			p.Annotations[CPURequestAnnotation] = "lots"
		}), wantDenied: CPURequestAnnotation},
	}
	i := 0
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			i++
			tc.pod.Name = fmt.Sprintf("p%d", i)
			mark := warnings.Mark()
			err := k8s.Create(ctx, tc.pod)
			if tc.wantDenied != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantDenied) {
					t.Fatalf("want a denial naming %q, got %v", tc.wantDenied, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w := strings.Join(warnings.Since(mark), "\n")
			if (tc.wantWarning == "") != (w == "") || !strings.Contains(w, tc.wantWarning) {
				t.Fatalf("warnings %q, want one containing %q", w, tc.wantWarning)
			}
			got := sidecars(tc.pod)
			if (len(got) == 1) != tc.wantSidecar {
				t.Fatalf("sidecar injected: %v, want %v", len(got) == 1, tc.wantSidecar)
			}
			if tc.wantSidecar && got[0].Resources.Limits.Memory().String() != tc.wantMemLimit {
				t.Fatalf("memory limit %s, want %s", got[0].Resources.Limits.Memory(), tc.wantMemLimit)
			}
			if tc.wantArg != "" && !slices.Contains(got[0].Args, tc.wantArg) {
				t.Fatalf("sidecar args %v lack %s", got[0].Args, tc.wantArg)
			}
		})
	}
}

// TestSelfManagedCertificates runs a second manager that issues its own certificates: the Secret
// is filled, the files appear in the cert dir, the webhook configuration's caBundle is patched with
// a CA that verifies the serving certificate for the Service's DNS name, and readiness waits for it.
func TestSelfManagedCertificates(t *testing.T) {
	ctx := context.Background()
	const ns, confName = "herald-system", "herald-rotator-test"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "herald-webhook-certs"}}); err != nil {
		t.Fatal(err)
	}
	conf := injectorConfiguration(confName)
	conf.Webhooks[0].ObjectSelector.MatchLabels = map[string]string{"never": "matches"} // do not disturb other tests
	if err := k8s.Create(ctx, conf); err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "127.0.0.1:0",
		WebhookServer:          webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := Setup(mgr, Options{Namespace: ns, ConfigurationName: confName, CertDir: certDir, SelfManagedCerts: true, Image: "x"}); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var caBundle []byte
	var secret corev1.Secret
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var got admissionv1.MutatingWebhookConfiguration
		if err := k8s.Get(ctx, client.ObjectKey{Name: confName}, &got); err != nil {
			t.Fatal(err)
		}
		caBundle = got.Webhooks[0].ClientConfig.CABundle
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "herald-webhook-certs"}, &secret); err != nil {
			t.Fatal(err)
		}
		if len(caBundle) > 0 && len(secret.Data["tls.crt"]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificates not issued: caBundle %d bytes, Secret keys %v", len(caBundle), slices.Collect(maps.Keys(secret.Data)))
		}
	}
	// Play the kubelet, which projects the Secret into the cert dir of a real manager pod.
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(certDir, k), secret.Data[k], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	block, _ := pem.Decode(secret.Data["tls.crt"])
	if block == nil {
		t.Fatal("the Secret holds no serving certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatal("caBundle holds no certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "herald-webhook." + ns + ".svc"}); err != nil {
		t.Fatalf("the patched caBundle does not verify the serving certificate: %v", err)
	}
	// The webhook server came up with those certificates.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the webhook server did not start once certificates were ready")
		}
	}
}

// The sidecar is pulled as the operator says, with its pull Secrets added to the pod once.
func TestInjectPullSettings(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "app-regcred"}, {Name: "regcred"}}}}
	Inject(pod, Sidecar{Namespace: "shop", Image: "herald:test", Channels: []string{"orders"},
		PullPolicy: corev1.PullAlways, PullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "herald-regcred"}}})
	if got := pod.Spec.InitContainers[0].ImagePullPolicy; got != corev1.PullAlways {
		t.Fatalf("sidecar pull policy %q", got)
	}
	var names []string
	for _, s := range pod.Spec.ImagePullSecrets {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"app-regcred", "regcred", "herald-regcred"}) {
		t.Fatalf("pod pull secrets %v, want the app's and the operator's, each once", names)
	}
}
