package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/heraldhq/herald/internal/testing/testenv"
)

const (
	chartDir   = "charts/herald"     // relative to the repository root
	fieldOwner = "herald-chart-test" // server-side apply field manager of this suite
)

var (
	root       string   // the repository root
	helmBin    string   // bin/helm of the repository
	helmEnv    []string // environment of every helm and kubectl run: no user state, no KUBECONFIG
	kubeconfig string   // an admin kubeconfig of the envtest API server, for helm install
	scheme     = runtime.NewScheme()
	k8s        client.Client         // talks to the API server directly (no cache)
	restConfig *rest.Config          // k8s's, for clients that impersonate another user
	warnings   = &testenv.Warnings{} // API server warnings of every request k8s makes
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	var err error
	root = testenv.Root()
	if _, err := exec.LookPath("kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, "kubectl is not on PATH: it renders config/default (kubectl kustomize)")
		return 1
	}
	if helmBin, err = ensureHelm(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "herald-chart-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	helmEnv = cleanEnv(tmp)

	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))

	testEnv := &envtest.Environment{}
	cfg, err := testenv.Start(testEnv)
	defer func() { _ = testEnv.Stop() }() // also after a failed start, which may leave processes
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	admin, err := testEnv.AddUser(envtest.User{Name: "herald-chart-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "adding the admin user:", err)
		return 1
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "writing a kubeconfig:", err)
		return 1
	}
	kubeconfig = filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = warnings
	restConfig = cfg
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "creating client:", err)
		return 1
	}
	return m.Run()
}

// ensureHelm returns bin/helm, building it with the Makefile's own rule (the pinned version,
// ~70 s once) when it is missing.
func ensureHelm() (string, error) {
	bin := filepath.Join(root, "bin", "helm")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Fprintln(os.Stderr, "bin/helm is missing: building it with the Makefile's rule (about 70 s, once)")
	cmd := exec.Command("make", "-C", root, bin)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building bin/helm: %w", err)
	}
	return bin, nil
}

// cleanEnv is the environment without the user's kubeconfig and helm settings, with helm's
// cache, config and data directories under dir.
func cleanEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "HELM_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HELM_CACHE_HOME="+filepath.Join(dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(dir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(dir, "helm", "data"),
	)
}

// run runs a command from the repository root and returns its stdout; an error carries stderr.
func run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = helmEnv
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// kubeVersion is what offline renders assume: the Kubernetes the tests run (envtest's).
const kubeVersion = "1.37.2"

// helmTemplate renders the chart with --include-crds into namespace ns, with extra helm flags
// (e.g. "--set", "k=v"); it returns the objects or helm's error.
func helmTemplate(ns string, flags ...string) ([]*unstructured.Unstructured, error) {
	args := append([]string{"template", "herald", chartDir, "--namespace", ns, "--include-crds", "--kube-version", kubeVersion}, flags...)
	out, err := run(helmBin, args...)
	if err != nil {
		return nil, err
	}
	return decodeAll(out)
}

// mustHelmTemplate is helmTemplate that fails the test on an error.
func mustHelmTemplate(t *testing.T, ns string, flags ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := helmTemplate(ns, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// kustomize renders a kustomization directory (relative to the root) with kubectl.
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	out, err := run("kubectl", "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(out)
	if err != nil {
		t.Fatalf("decoding kubectl kustomize %s: %v", dir, err)
	}
	return objs
}

// decodeAll splits a multi-document YAML stream into objects, skipping empty documents.
func decodeAll(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// find returns the one object of kind and name in objs, failing the test if there is none.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	t.Fatalf("no %s %q among the %d rendered objects: %s", kind, name, len(objs), describeAll(objs))
	return nil
}

// convert turns an unstructured object into a typed one.
func convert(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("converting %s: %v", describe(u), err)
	}
}

func describe(u *unstructured.Unstructured) string {
	if u.GetNamespace() != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	}
	return fmt.Sprintf("%s %s", u.GetKind(), u.GetName())
}

func describeAll(objs []*unstructured.Unstructured) string {
	names := make([]string, 0, len(objs))
	for _, u := range objs {
		names = append(names, describe(u))
	}
	return strings.Join(names, ", ")
}

// apply server-side applies every object, as a dry run (the API server validates and admits it
// but stores nothing) or for real, and returns the warnings the API server sent for each.
func apply(t *testing.T, objs []*unstructured.Unstructured, dryRun bool) map[string][]string {
	t.Helper()
	ctx := context.Background()
	got := map[string][]string{}
	for _, u := range objs {
		opts := []client.ApplyOption{client.FieldOwner(fieldOwner), client.ForceOwnership}
		if dryRun {
			opts = append(opts, client.DryRunAll)
		}
		mark := warnings.Mark()
		if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), opts...); err != nil {
			t.Errorf("applying %s (dry run %t): %v", describe(u), dryRun, err)
			continue
		}
		if w := warnings.Since(mark); len(w) > 0 {
			got[describe(u)] = w
		}
	}
	return got
}

// eventually polls cond until it returns nil or the timeout passes.
var eventually = testenv.Eventually
