package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/relay/shardmap"
)

// The chart renders the generated CRD (config/crd/bases, which `make manifests` writes) from a
// template, so helm upgrade updates it; crds.keep keeps it on uninstall, crds.enabled=false
// leaves it out.
func TestChartRendersTheGeneratedCRD(t *testing.T) {
	generated, _ := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if len(generated) == 0 {
		t.Fatal("config/crd/bases holds no CRD: run `make manifests`")
	}
	objs := mustHelmTemplate(t, "herald-system")
	for _, f := range generated {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want, err := decodeAll(b)
		if err != nil || len(want) != 1 {
			t.Fatalf("%s: %v", f, err)
		}
		got := find(t, objs, "CustomResourceDefinition", want[0].GetName())
		if !reflect.DeepEqual(got.Object["spec"], want[0].Object["spec"]) {
			t.Errorf("the chart's CRD %s differs from the generated %s: run `make manifests`", got.GetName(), filepath.Base(f))
		}
		if got.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s: crds.keep (default true) must keep it on uninstall: annotations %v", got.GetName(), got.GetAnnotations())
		}
	}
	if crd := mustHelmTemplate(t, "herald-system", "--set", "crds.keep=false"); len(kinds(crd, "CustomResourceDefinition")) != 1 ||
		kinds(crd, "CustomResourceDefinition")[0].GetAnnotations()["helm.sh/resource-policy"] != "" {
		t.Error("crds.keep=false must render the CRD without helm.sh/resource-policy")
	}
	if n := len(kinds(mustHelmTemplate(t, "herald-system", "--set", "crds.enabled=false"), "CustomResourceDefinition")); n != 0 {
		t.Errorf("crds.enabled=false rendered %d CRDs", n)
	}
}

// kinds are the objects of one kind.
func kinds(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// The schema's descriptions are the comments of values.yaml (hack/schemadoc writes them), so
// editors reading the schema and readers of values.yaml see the same words.
func TestSchemaDescriptionsAreTheValuesComments(t *testing.T) {
	cmd := exec.Command("go", "run", "./hack/schemadoc", "-check")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// Every value the schema declares has a comment right above it in values.yaml, and values.yaml
// sets no value the schema does not declare (helm would reject the defaults).
func TestValuesYAMLDocumentsEveryValue(t *testing.T) {
	var schema map[string]any
	b, err := os.ReadFile(filepath.Join(root, chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("values.schema.json is not JSON: %v", err)
	}
	declared := map[string]bool{} // dotted paths of the properties, not descending into $refs
	var walk func(prefix string, node map[string]any)
	walk = func(prefix string, node map[string]any) {
		props, _ := node["properties"].(map[string]any)
		for name, p := range props {
			child, _ := p.(map[string]any)
			key := strings.TrimPrefix(prefix+"."+name, ".")
			if key == "global" { // Helm's, not Herald's
				continue
			}
			declared[key] = true
			if _, isRef := child["$ref"]; !isRef {
				walk(key, child)
			}
		}
	}
	walk("", schema)

	values, err := os.ReadFile(filepath.Join(root, chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`^( *)([A-Za-z][A-Za-z0-9]*):( |$)`)
	type level struct {
		indent int
		key    string
	}
	var stack []level
	prev := ""                      // previous non-blank line
	seen := map[string]bool{}       // keys values.yaml sets
	comments := map[string]string{} // the comment block above each key
	var block []string              // the comment lines since the last key
	for i, line := range strings.Split(string(values), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			block = append(block, line)
		}
		if m := keyLine.FindStringSubmatch(line); m != nil {
			indent := len(m[1])
			for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
				stack = stack[:len(stack)-1]
			}
			stack = append(stack, level{indent, m[2]})
			var parts []string
			for _, l := range stack {
				parts = append(parts, l.key)
			}
			key := strings.Join(parts, ".")
			seen[key] = true
			comments[key] = strings.Join(block, "\n")
			block = nil
			if declared[key] && !strings.HasPrefix(strings.TrimSpace(prev), "#") {
				t.Errorf("values.yaml line %d: %s has no comment above it", i+1, key)
			}
		}
		prev = line
	}
	for key := range declared {
		if seen[key] {
			continue
		}
		// A key of an object that is empty by default (e.g. issuerRef: {}) is documented in the
		// object's comment.
		parent, child := key[:max(strings.LastIndex(key, "."), 0)], key[strings.LastIndex(key, ".")+1:]
		if !seen[parent] || !strings.Contains(comments[parent], child+":") {
			t.Errorf("values.schema.json declares %s but values.yaml neither sets it nor documents it above %s", key, parent)
		}
	}
}

// A bad value makes `helm template` fail, and the message names the value.
func TestValuesSchemaRejectsBadValues(t *testing.T) {
	tests := map[string]struct {
		flags []string
		want  string // in helm's error
	}{
		"unknown certificate mode": {
			flags: []string{"--set", "webhook.certificates.mode=certmanager"},
			want:  "/webhook/certificates/mode': value must be one of 'selfManaged', 'certManager'",
		},
		"misspelt key": {
			flags: []string{"--set", "webhook.certificate.mode=certManager"},
			want:  "additional properties 'certificate' not allowed",
		},
		"no manager replica": {
			flags: []string{"--set", "manager.replicas=0"},
			want:  "/manager/replicas': minimum",
		},
		"replicas as a string": {
			flags: []string{"--set-string", "manager.replicas=two"},
			want:  "/manager/replicas': got string, want integer",
		},
		"Redis address without a port": {
			flags: []string{"--set", "redis.addresses={redis-0:6379,redis-1}"},
			want:  "/redis/addresses/1': 'redis-1' does not match pattern",
		},
		"allowed Redis address without a port": {
			flags: []string{"--set", "manager.allowed.redisAddresses={redis-*.data.svc}"},
			want:  "/manager/allowed/redisAddresses/0'",
		},
		"resync period in words": {
			flags: []string{"--set", "manager.resyncPeriod=one minute"},
			want:  "/manager/resyncPeriod'",
		},
		"relay memory that is no quantity": {
			flags: []string{"--set", "relay.resources.requests.memory=lots"},
			want:  "/relay/resources/requests/memory'",
		},
		"unknown resource section": {
			flags: []string{"--set", "relay.resources.request.cpu=1"},
			want:  "additional properties 'request' not allowed",
		},
		"unknown pull policy": {
			flags: []string{"--set", "image.pullPolicy=Sometimes"},
			want:  "/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
		},
		"a digest given as the tag": {
			flags: []string{"--set", "image.tag=sha256:" + strings.Repeat("ab", 32)},
			want:  "/image/tag'",
		},
		"a Kubernetes without ValidatingAdmissionPolicy v1": {
			flags: []string{"--kube-version", "1.29.9"},
			want:  "chart requires kubeVersion: >=1.30.0-0",
		},
		"a webhook timeout past the API server's 30 s": {
			flags: []string{"--set", "webhook.timeoutSeconds=31"},
			want:  "/webhook/timeoutSeconds'",
		},
		"an unknown relay log level": {
			flags: []string{"--set", "relay.logLevel=chatty"},
			want:  "/relay/logLevel'",
		},
		"a digest that is no sha256": {
			flags: []string{"--set", "image.digest=latest"},
			want:  "/image/digest'",
		},
		"image tag with a colon": {
			flags: []string{"--set", "image.tag=:latest"},
			want:  "/image/tag'",
		},
		"ServiceMonitor switch as a string": {
			flags: []string{"--set-string", "metrics.serviceMonitor.enabled=true"},
			want:  "/metrics/serviceMonitor/enabled': got string, want boolean",
		},
		"unknown log level": {
			flags: []string{"--set", "manager.logLevel=verbose"},
			want:  "/manager/logLevel': value must be one of 'debug', 'info', 'warn', 'error'",
		},
		"issuer of an unknown kind": {
			flags: []string{"--set", "webhook.certificates.mode=certManager",
				"--set", "webhook.certificates.certManager.issuerRef.name=ca",
				"--set", "webhook.certificates.certManager.issuerRef.kind=Vault"},
			want: "/webhook/certificates/certManager/issuerRef/kind'",
		},
		"issuer kind without a name": {
			flags: []string{"--set", "webhook.certificates.mode=certManager",
				"--set", "webhook.certificates.certManager.issuerRef.kind=ClusterIssuer"},
			want: "/webhook/certificates/certManager/issuerRef': properties 'name' required, if 'kind' exists",
		},
		"Redis CA without TLS": {
			flags: []string{"--set", "redis.tls.caSecret.name=redis-ca"},
			want:  "redis.tls.caSecret.name is set but redis.tls.enabled is false",
		},
		"Redis client certificate without TLS": {
			flags: []string{"--set", "redis.tls.clientSecret.name=redis-client"},
			want:  "redis.tls.clientSecret.name is set but redis.tls.enabled is false",
		},
		"Redis client CA without TLS": {
			flags: []string{"--set", "redis.tls.clientCASecret.name=redis-client-ca"},
			want:  "redis.tls.clientCASecret.name is set but redis.tls.enabled is false",
		},
		"Redis server name without TLS": {
			flags: []string{"--set", "redis.tls.serverName=redis.example"},
			want:  "redis.tls.serverName is set but redis.tls.enabled is false",
		},
		"issuerRef in selfManaged mode": {
			flags: []string{"--set", "webhook.certificates.certManager.issuerRef.name=ca"},
			want:  "webhook.certificates.certManager.issuerRef is set but webhook.certificates.mode is not certManager",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := helmTemplate("herald-system", tc.flags...)
			if err == nil {
				t.Fatalf("helm template %v succeeded; want an error containing %q", tc.flags, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template %v failed with\n%v\nwant a message containing %q", tc.flags, err, tc.want)
			}
		})
	}
}

// The values switch on what they say and nothing else.
func TestChartRendersWhatValuesAsk(t *testing.T) {
	const ns = "herald-system"
	redisFull := []string{
		"--set", "redis.addresses={redis-0.redis:6379,redis-1.redis:6379}",
		"--set", "redis.existingSecret.name=redis-admin",
		"--set", "redis.tls.enabled=true",
		"--set", "redis.tls.caSecret.name=redis-ca",
		"--set", "redis.tls.caSecret.key=bundle.pem",
		"--set", "redis.tls.serverName=redis.example",
		"--set", "redis.tls.clientSecret.name=redis-client",
		"--set", "redis.tls.clientCASecret.name=redis-client-ca",
	}
	tests := map[string]struct {
		flags []string
		check func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		"defaults": {
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := managerContainer(t, objs)
				wantArgs(t, c, "--leader-elect", "--metrics-bind-address=:8443", "--metrics-secure=true", "--health-probe-bind-address=:8081",
					"--resync-period=60s", "--cleanup-timeout=10m", "--webhook-port=9443", "--webhook-cert-mode=selfManaged",
					"--webhook-cert-dir=/tmp/k8s-webhook-server/serving-certs",
					"--relay-image=ghcr.io/heraldhq/herald:v0.1.0")
				if c.Image != "ghcr.io/heraldhq/herald:v0.1.0" {
					t.Errorf("manager image %q, want ghcr.io/heraldhq/herald:v0.1.0 (v + appVersion)", c.Image)
				}
				for _, a := range c.Args {
					if strings.HasPrefix(a, "--redis-") {
						t.Errorf("default values pass %s; want no Redis flag without redis values", a)
					}
				}
				var relay corev1.ResourceRequirements
				if err := json.Unmarshal([]byte(argValue(t, c, "--relay-resources")), &relay); err != nil {
					t.Fatalf("--relay-resources is no corev1.ResourceRequirements: %v", err)
				}
				if q := relay.Requests[corev1.ResourceCPU]; q.Cmp(resource.MustParse("50m")) != 0 {
					t.Errorf("--relay-resources requests cpu %s, want the values.yaml 50m", q.String())
				}
				if v := webhookCertVolume(t, objs); v.Secret == nil || v.Secret.SecretName != "herald-webhook-certs" {
					t.Errorf("selfManaged: webhook-certs volume %+v, want the Secret herald-webhook-certs the manager writes", v.VolumeSource)
				}
				if s := find(t, objs, "Secret", "herald-webhook-certs"); s.Object["data"] != nil {
					t.Error("selfManaged: the chart's herald-webhook-certs must carry no data, or an upgrade would wipe the manager's certificate")
				}
				assertNoKind(t, objs, "ServiceMonitor", "PodMonitor", "Issuer", "Certificate", "PodDisruptionBudget") // one replica: no PDB to block drains
				if l := managerPodSpec(t, objs).EnableServiceLinks; l == nil || *l {
					t.Error("the manager must not get HERALD_WEBHOOK_PORT=tcp://... from the Service herald-webhook: enableServiceLinks: false")
				}
				mwc := find(t, objs, "MutatingWebhookConfiguration", "herald-sidecar-injector")
				if _, ok := mwc.GetAnnotations()["cert-manager.io/inject-ca-from"]; ok {
					t.Error("selfManaged: the injector carries cert-manager.io/inject-ca-from")
				}
				if !grants(clusterRoleRules(t, objs), perm{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", "herald-sidecar-injector"}) {
					t.Error("selfManaged: the manager may not patch the caBundle of herald-sidecar-injector")
				}
			},
		},
		"escape hatches": {
			flags: []string{"--set", "serviceAccount.create=false", "--set", "serviceAccount.name=platform-sa",
				"--set", "manager.workers=8", "--set", "manager.extraArgs={--resync-period=2m}",
				"--set", "manager.extraEnv[0].name=GOMEMLIMIT", "--set", "manager.extraEnv[0].value=200MiB",
				"--set", "relay.image.pullPolicy=Always", "--set", "relay.imagePullSecrets[0].name=regcred",
				"--set", "sidecar.image.tag=v9", "--set", "sidecar.resources.limits.memory=300Mi"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := managerContainer(t, objs)
				wantArgs(t, c, "--workers=8", "--relay-image-pull-policy=Always", "--relay-image-pull-secrets=regcred",
					"--sidecar-image=ghcr.io/heraldhq/herald:v9", `--sidecar-resources={"limits":{"memory":"300Mi"}}`)
				if last := c.Args[len(c.Args)-1]; last != "--resync-period=2m" {
					t.Errorf("extraArgs must come last (the last of a repeated flag wins): %v", c.Args)
				}
				if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" && e.Value == "200MiB" }) {
					t.Errorf("extraEnv missing: %+v", c.Env)
				}
				if sa := managerPodSpec(t, objs).ServiceAccountName; sa != "platform-sa" {
					t.Errorf("serviceAccountName %q, want platform-sa", sa)
				}
				assertNoKind(t, objs, "ServiceAccount")
				for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
					for _, b := range kinds(objs, kind) {
						subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
						if s := subjects[0].(map[string]any); s["name"] != "platform-sa" {
							t.Errorf("%s %s binds %v, want platform-sa", kind, b.GetName(), s["name"])
						}
					}
				}
			},
		},
		"plain metrics": {
			flags: []string{"--set", "metrics.secure=false", "--set", "metrics.serviceMonitor.enabled=true"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				wantArgs(t, managerContainer(t, objs), "--metrics-bind-address=:8080", "--metrics-secure=false")
				eps, _, _ := unstructured.NestedSlice(find(t, objs, "ServiceMonitor", "herald-manager").Object, "spec", "endpoints")
				if _, https := eps[0].(map[string]any)["scheme"]; https {
					t.Errorf("plain metrics scraped as %v", eps[0])
				}
			},
		},
		"the oldest Kubernetes supported": {
			flags: []string{"--kube-version", "1.30.0"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) { managerContainer(t, objs) },
		},
		"webhook through drains and private clusters": {
			flags: []string{"--set", "manager.replicas=2", "--set", "webhook.port=10250", "--set", "webhook.timeoutSeconds=5",
				"--set", "webhook.hostNetwork=true", "--set", "relay.logLevel=debug"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := managerContainer(t, objs)
				wantArgs(t, c, "--webhook-port=10250", "--relay-log-level=debug")
				if c.Ports[2].Name != "webhook" || c.Ports[2].ContainerPort != 10250 {
					t.Errorf("container ports %+v, want webhook on 10250", c.Ports)
				}
				spec := managerPodSpec(t, objs)
				if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
					t.Errorf("hostNetwork %v, dnsPolicy %s; want the node's network with cluster DNS", spec.HostNetwork, spec.DNSPolicy)
				}
				if len(spec.TopologySpreadConstraints) != 1 || spec.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" {
					t.Errorf("topology spread %+v, want the replicas spread over nodes", spec.TopologySpreadConstraints)
				}
				var pdb policyv1.PodDisruptionBudget
				convert(t, find(t, objs, "PodDisruptionBudget", "herald-manager"), &pdb)
				if pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] == "" {
					t.Errorf("PodDisruptionBudget %+v, want minAvailable 1 of the manager pods", pdb.Spec)
				}
				timeout := find(t, objs, "MutatingWebhookConfiguration", "herald-sidecar-injector").Object["webhooks"].([]any)[0].(map[string]any)["timeoutSeconds"]
				if fmt.Sprint(timeout) != "5" {
					t.Errorf("webhook timeoutSeconds %v, want 5", timeout)
				}
			},
		},
		"allow-lists": {
			flags: []string{"--set", "manager.allowed.redisAddresses={redis-*.data.svc:6379,10.0.3.*:*}",
				"--set", "manager.allowed.relayImages={registry.example/herald:*}",
				"--set", "manager.allowed.priorityClasses={realtime}", "--set", "manager.maxRedisNodes=50",
				"--set", "manager.reconcileTimeout=30s"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				wantArgs(t, managerContainer(t, objs), "--allowed-redis-addresses=redis-*.data.svc:6379,10.0.3.*:*",
					"--allowed-relay-images=registry.example/herald:*", "--allowed-priority-classes=realtime",
					"--max-redis-nodes=50", "--reconcile-timeout=30s")
			},
		},
		"serviceMonitor": {
			flags: []string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prometheus"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				sm := find(t, objs, "ServiceMonitor", "herald-manager")
				if sm.GetLabels()["release"] != "prometheus" {
					t.Errorf("ServiceMonitor labels %v, want release=prometheus added", sm.GetLabels())
				}
				var svc corev1.Service
				convert(t, find(t, objs, "Service", "herald-metrics"), &svc)
				sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
				for k, v := range sel {
					if svc.Labels[k] != v {
						t.Errorf("ServiceMonitor selects %s=%s, which Service herald-metrics (labels %v) lacks", k, v, svc.Labels)
					}
				}
				eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
				if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || svc.Spec.Ports[0].Name != "metrics" {
					t.Errorf("ServiceMonitor endpoints %v, want port metrics of Service herald-metrics", eps)
				}
				if ep := eps[0].(map[string]any); ep["scheme"] != "https" || ep["bearerTokenFile"] == nil || svc.Spec.Ports[0].Port != 8443 {
					t.Errorf("ServiceMonitor endpoint %v, Service port %d: want HTTPS with Prometheus's token on 8443", ep, svc.Spec.Ports[0].Port)
				}
				var reader rbacv1.ClusterRole
				convert(t, find(t, objs, "ClusterRole", "herald-metrics-reader"), &reader)
				if len(reader.Rules) != 1 || reader.Rules[0].NonResourceURLs[0] != "/metrics" || reader.Rules[0].Verbs[0] != "get" {
					t.Errorf("herald-metrics-reader rules %+v, want GET /metrics only", reader.Rules)
				}
			},
		},
		"certManager with its own Issuer": {
			flags: []string{"--set", "webhook.certificates.mode=certManager"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				find(t, objs, "Issuer", "herald-selfsigned")
				cert := find(t, objs, "Certificate", "herald-webhook")
				if s, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName"); s != "herald-webhook-certs" {
					t.Errorf("Certificate secretName %q, want herald-webhook-certs", s)
				}
				dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
				if !slices.Contains(dns, "herald-webhook."+ns+".svc") {
					t.Errorf("Certificate dnsNames %v lack the webhook Service's name herald-webhook.%s.svc", dns, ns)
				}
				if k, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name"); k != "herald-selfsigned" {
					t.Errorf("Certificate issuerRef.name %q, want herald-selfsigned", k)
				}
				mwc := find(t, objs, "MutatingWebhookConfiguration", "herald-sidecar-injector")
				if got := mwc.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != ns+"/herald-webhook" {
					t.Errorf("inject-ca-from %q, want %s/herald-webhook", got, ns)
				}
				wantArgs(t, managerContainer(t, objs), "--webhook-cert-mode=external")
				if v := webhookCertVolume(t, objs); v.Secret == nil || v.Secret.SecretName != "herald-webhook-certs" {
					t.Errorf("certManager: webhook-certs volume %+v, want Secret herald-webhook-certs", v.VolumeSource)
				}
				for _, p := range perms(clusterRoleRules(t, objs)) {
					if p.resource == "mutatingwebhookconfigurations" {
						t.Errorf("certManager: the manager still gets %+v; cert-manager owns the caBundle", p)
					}
				}
			},
		},
		"certManager with a ClusterIssuer": {
			flags: []string{"--set", "webhook.certificates.mode=certManager",
				"--set", "webhook.certificates.certManager.issuerRef.name=corp-ca",
				"--set", "webhook.certificates.certManager.issuerRef.kind=ClusterIssuer"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				assertNoKind(t, objs, "Issuer")
				cert := find(t, objs, "Certificate", "herald-webhook")
				ref, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
				if ref["name"] != "corp-ca" || ref["kind"] != "ClusterIssuer" || ref["group"] != "cert-manager.io" {
					t.Errorf("Certificate issuerRef %v, want corp-ca ClusterIssuer cert-manager.io", ref)
				}
			},
		},
		"Redis with credentials and TLS": {
			flags: redisFull,
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := managerContainer(t, objs)
				wantArgs(t, c, "--redis-addresses=redis-0.redis:6379,redis-1.redis:6379",
					"--redis-username=$(REDIS_USERNAME)", "--redis-tls", "--redis-tls-server-name=redis.example")
				if len(c.Env) != 2 || c.Env[1].Name != "REDIS_USERNAME" || c.Env[1].ValueFrom == nil ||
					c.Env[1].ValueFrom.SecretKeyRef == nil || c.Env[1].ValueFrom.SecretKeyRef.Name != "redis-admin" ||
					c.Env[1].ValueFrom.SecretKeyRef.Key != "username" {
					t.Errorf("env %+v, want REDIS_USERNAME from key username of Secret redis-admin", c.Env)
				}
				spec := managerPodSpec(t, objs)
				wantFileFromSecret(t, spec, argValue(t, c, "--redis-password-file"), "redis-admin", "password")
				wantFileFromSecret(t, spec, argValue(t, c, "--redis-tls-ca-file"), "redis-ca", "bundle.pem")
				wantFileFromSecret(t, spec, argValue(t, c, "--redis-tls-cert-file"), "redis-client", "tls.crt")
				wantFileFromSecret(t, spec, argValue(t, c, "--redis-tls-key-file"), "redis-client", "tls.key")
				wantFileFromSecret(t, spec, argValue(t, c, "--redis-tls-client-ca-file"), "redis-client-ca", "tls.crt")
				wantFileFromSecret(t, spec, argValue(t, c, "--redis-tls-client-ca-key-file"), "redis-client-ca", "tls.key")
			},
		},
		"Redis as the default user": {
			flags: []string{"--set", "redis.addresses={redis:6379}", "--set", "redis.existingSecret.name=redis-admin",
				"--set", "redis.existingSecret.usernameKey="},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := managerContainer(t, objs)
				for _, a := range c.Args {
					if strings.HasPrefix(a, "--redis-username") {
						t.Errorf("usernameKey \"\" still passes %s", a)
					}
				}
				if len(c.Env) != 1 || c.Env[0].Name != "HERALD_NAMESPACE" {
					t.Errorf("usernameKey \"\" still sets env %+v", c.Env)
				}
				wantFileFromSecret(t, managerPodSpec(t, objs), argValue(t, c, "--redis-password-file"), "redis-admin", "password")
			},
		},
		"image and relay overrides": {
			flags: []string{"--set", "image.tag=v1.2.3", "--set", "relay.resources.limits.memory=1Gi"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := managerContainer(t, objs)
				if c.Image != "ghcr.io/heraldhq/herald:v1.2.3" {
					t.Errorf("manager image %q, want ghcr.io/heraldhq/herald:v1.2.3", c.Image)
				}
				wantArgs(t, c, "--relay-image=ghcr.io/heraldhq/herald:v1.2.3",
					`--relay-resources={"limits":{"memory":"1Gi"},"requests":{"cpu":"50m","memory":"64Mi"}}`)
			},
		},
		"relay metrics": {
			flags: []string{"--set", "metrics.relays.scrapeNamespaces={monitoring,obs}", "--set", "metrics.relays.podMonitor.enabled=true",
				"--set", "metrics.relays.podMonitor.labels.release=prometheus"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				// The selector the manager gets admits exactly the listed namespaces.
				sel, err := metav1.ParseToLabelSelector(argValue(t, managerContainer(t, objs), "--relay-metrics-namespace-selector"))
				if err != nil {
					t.Fatal(err)
				}
				s, err := metav1.LabelSelectorAsSelector(sel)
				if err != nil {
					t.Fatal(err)
				}
				for ns, want := range map[string]bool{"monitoring": true, "obs": true, "default": false} {
					if got := s.Matches(labels.Set{"kubernetes.io/metadata.name": ns}); got != want {
						t.Errorf("--relay-metrics-namespace-selector %q admits namespace %s: %v, want %v", s, ns, got, want)
					}
				}
				// The PodMonitor selects the pods of the relay Deployments the operator builds, by
				// a port they name.
				pm := find(t, objs, "PodMonitor", "herald-relays")
				if pm.GetLabels()["release"] != "prometheus" {
					t.Errorf("PodMonitor labels %v, want release=prometheus added", pm.GetLabels())
				}
				relay := workloads.Deployment(&heraldv1.NotificationChannel{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "orders"}},
					workloads.Params{Map: shardmap.New("a", "orders", shardmap.DeliveryDurable, []string{"a/orders/0.0"})}, 0)
				match, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
				for k, v := range match {
					if relay.Spec.Template.Labels[k] != v {
						t.Errorf("PodMonitor selects %s=%s, which relay pods (labels %v) lack", k, v, relay.Spec.Template.Labels)
					}
				}
				eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
				if len(eps) != 1 || eps[0].(map[string]any)["port"] != relay.Spec.Template.Spec.Containers[0].Ports[0].Name {
					t.Errorf("PodMonitor endpoints %v, want the relay container's port %q", eps, relay.Spec.Template.Spec.Containers[0].Ports[0].Name)
				}
				if any, _, _ := unstructured.NestedBool(pm.Object, "spec", "namespaceSelector", "any"); !any {
					t.Error("the PodMonitor must look in every namespace: channels live anywhere")
				}
			},
		},
		"separate relay image": {
			flags: []string{"--set", "relay.image.repository=registry.example/herald-relay", "--set", "relay.image.tag=v9"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				wantArgs(t, managerContainer(t, objs), "--relay-image=registry.example/herald-relay:v9")
			},
		},
		"image pinned by digest": {
			flags: []string{"--set", "image.digest=sha256:" + strings.Repeat("ab", 32), "--set", "image.tag=v1.2.3"},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				c := managerContainer(t, objs)
				want := "ghcr.io/heraldhq/herald@sha256:" + strings.Repeat("ab", 32)
				if c.Image != want {
					t.Errorf("manager image %q, want %q (the digest wins over the tag)", c.Image, want)
				}
				wantArgs(t, c, "--relay-image="+want) // the relays run the same pinned image
			},
		},
		"relay image pinned by its own digest": {
			flags: []string{"--set", "relay.image.repository=registry.example/herald-relay",
				"--set", "relay.image.digest=sha256:" + strings.Repeat("cd", 32), "--set", "image.digest=sha256:" + strings.Repeat("ab", 32)},
			check: func(t *testing.T, objs []*unstructured.Unstructured) {
				wantArgs(t, managerContainer(t, objs), "--relay-image=registry.example/herald-relay@sha256:"+strings.Repeat("cd", 32))
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.check(t, mustHelmTemplate(t, ns, tc.flags...))
		})
	}
}

// No Role or ClusterRole grants a wildcard; the manager's ClusterRole covers every rule the code
// declares (config/rbac/role.yaml, generated from the +kubebuilder:rbac markers) and nothing the
// code does not declare.
func TestRBACIsLeastPrivilege(t *testing.T) {
	renders := map[string][]*unstructured.Unstructured{
		"chart (defaults)":    mustHelmTemplate(t, "herald-system"),
		"chart (certManager)": mustHelmTemplate(t, "herald-system", "--set", "webhook.certificates.mode=certManager"),
		"kustomize":           kustomize(t, "config/default"),
	}
	for name, objs := range renders {
		roles := 0
		for _, u := range objs {
			if u.GetKind() != "Role" && u.GetKind() != "ClusterRole" {
				continue
			}
			roles++
			var r rbacv1.ClusterRole // Role has the same rules field
			convert(t, u, &r)
			for _, rule := range r.Rules {
				for _, f := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames, rule.NonResourceURLs} {
					if slices.ContainsFunc(f, func(s string) bool { return strings.Contains(s, "*") }) {
						t.Errorf("%s: %s grants a wildcard: %+v", name, describe(u), rule)
					}
				}
			}
		}
		if roles < 2 {
			t.Errorf("%s renders %d Roles and ClusterRoles; want the manager's ClusterRole and the leader election Role", name, roles)
		}
	}

	// Secrets: nothing across the cluster. The manager reaches them through herald-manager-secrets
	// (never list or watch), bound to itself per namespace, and a Role of its own namespace.
	for name, objs := range renders {
		for _, p := range perms(clusterRoleRules(t, objs)) {
			if p.resource == "secrets" {
				t.Errorf("%s: the manager's ClusterRole grants %+v on Secrets across the cluster", name, p)
			}
		}
		for _, p := range perms(clusterRoleRulesNamed(t, objs, "herald-manager-secrets")) {
			if p.resource != "secrets" || p.verb == "list" || p.verb == "watch" {
				t.Errorf("%s: herald-manager-secrets grants %+v; want Secrets one by one only", name, p)
			}
		}
	}
	generated := generatedRules(t)
	chart := clusterRoleRules(t, renders["chart (defaults)"])
	for _, p := range perms(generated) {
		if !grants(chart, p) {
			t.Errorf("the code needs %+v (config/rbac/role.yaml) but the chart's ClusterRole does not grant it", p)
		}
	}
	for _, p := range perms(chart) {
		if !grants(generated, p) {
			t.Errorf("the chart's ClusterRole grants %+v, which the code's markers (config/rbac/role.yaml) do not ask for", p)
		}
	}
}

// config/default renders the same install as the chart with its default values.
func TestKustomizeMatchesChart(t *testing.T) {
	const ns = "herald-system"
	chart := mustHelmTemplate(t, ns)
	kust := kustomize(t, "config/default")

	ids := func(objs []*unstructured.Unstructured) []string {
		var s []string
		for _, u := range objs {
			if u.GetKind() != "Namespace" { // helm install --create-namespace makes it
				s = append(s, describe(u))
			}
		}
		sort.Strings(s)
		return s
	}
	if c, k := ids(chart), ids(kust); !slices.Equal(c, k) {
		t.Fatalf("the chart renders\n  %v\nkustomize renders\n  %v", c, k)
	}

	same := func(what string, c, k any) {
		t.Helper()
		if !equality.Semantic.DeepEqual(c, k) {
			t.Errorf("%s differs between the chart and kustomize:\n  %s", what, strings.Join(jsonDiff(c, k), "\n  "))
		}
	}
	var cd, kd appsv1.Deployment
	convert(t, find(t, chart, "Deployment", "herald-manager"), &cd)
	convert(t, find(t, kust, "Deployment", "herald-manager"), &kd)
	same("Deployment herald-manager spec", cd.Spec, kd.Spec)
	for _, name := range []string{"herald-webhook", "herald-metrics"} {
		var cs, ks corev1.Service
		convert(t, find(t, chart, "Service", name), &cs)
		convert(t, find(t, kust, "Service", name), &ks)
		same("Service "+name+" spec", cs.Spec, ks.Spec)
	}
	var cm, km admissionregistrationv1.MutatingWebhookConfiguration
	convert(t, find(t, chart, "MutatingWebhookConfiguration", "herald-sidecar-injector"), &cm)
	convert(t, find(t, kust, "MutatingWebhookConfiguration", "herald-sidecar-injector"), &km)
	same("MutatingWebhookConfiguration webhooks", cm.Webhooks, km.Webhooks)
	same("ClusterRole herald-manager", permSet(clusterRoleRules(t, chart)), permSet(clusterRoleRules(t, kust)))
	same("ClusterRole herald-manager-secrets", permSet(clusterRoleRulesNamed(t, chart, "herald-manager-secrets")), permSet(clusterRoleRulesNamed(t, kust, "herald-manager-secrets")))
	var cmr, kmr rbacv1.Role
	convert(t, find(t, chart, "Role", "herald-manager"), &cmr)
	convert(t, find(t, kust, "Role", "herald-manager"), &kmr)
	same("Role herald-manager", permSet(cmr.Rules), permSet(kmr.Rules))
	var cr, kr rbacv1.Role
	convert(t, find(t, chart, "Role", "herald-leader-election"), &cr)
	convert(t, find(t, kust, "Role", "herald-leader-election"), &kr)
	same("Role herald-leader-election", permSet(cr.Rules), permSet(kr.Rules))
	var ccrb, kcrb rbacv1.ClusterRoleBinding
	convert(t, find(t, chart, "ClusterRoleBinding", "herald-manager"), &ccrb)
	convert(t, find(t, kust, "ClusterRoleBinding", "herald-manager"), &kcrb)
	same("ClusterRoleBinding herald-manager", []any{ccrb.RoleRef, ccrb.Subjects}, []any{kcrb.RoleRef, kcrb.Subjects})
	var crb, krb rbacv1.RoleBinding
	convert(t, find(t, chart, "RoleBinding", "herald-leader-election"), &crb)
	convert(t, find(t, kust, "RoleBinding", "herald-leader-election"), &krb)
	same("RoleBinding herald-leader-election", []any{crb.RoleRef, crb.Subjects}, []any{krb.RoleRef, krb.Subjects})
	for _, name := range []string{"herald-managed-objects", "herald-manager-bindings"} {
		var cp, kp admissionregistrationv1.ValidatingAdmissionPolicy
		convert(t, find(t, chart, "ValidatingAdmissionPolicy", name), &cp)
		convert(t, find(t, kust, "ValidatingAdmissionPolicy", name), &kp)
		same("ValidatingAdmissionPolicy "+name+" spec", cp.Spec, kp.Spec)
		var cb, kb admissionregistrationv1.ValidatingAdmissionPolicyBinding
		convert(t, find(t, chart, "ValidatingAdmissionPolicyBinding", name), &cb)
		convert(t, find(t, kust, "ValidatingAdmissionPolicyBinding", name), &kb)
		same("ValidatingAdmissionPolicyBinding "+name+" spec", cb.Spec, kb.Spec)
	}
	var ccrd, kcrd apiextensionsv1.CustomResourceDefinition
	convert(t, find(t, chart, "CustomResourceDefinition", "notificationchannels.notifications.herald.dev"), &ccrd)
	convert(t, find(t, kust, "CustomResourceDefinition", "notificationchannels.notifications.herald.dev"), &kcrd)
	same("CRD spec", ccrd.Spec, kcrd.Spec)
}

// perm is one grant: a verb on a resource of an API group, maybe limited to one object name.
type perm struct {
	group, resource, verb, name string
}

func perms(rules []rbacv1.PolicyRule) []perm {
	var ps []perm
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						ps = append(ps, perm{g, res, v, n})
					}
				}
			}
		}
		for _, u := range r.NonResourceURLs {
			for _, v := range r.Verbs {
				ps = append(ps, perm{"", "nonResourceURL:" + u, v, ""})
			}
		}
	}
	return ps
}

func permSet(rules []rbacv1.PolicyRule) map[perm]bool {
	s := map[perm]bool{}
	for _, p := range perms(rules) {
		s[p] = true
	}
	return s
}

// grants says whether rules allow p: exactly, or for every name when p is limited to one.
func grants(rules []rbacv1.PolicyRule, p perm) bool {
	s := permSet(rules)
	return s[p] || (p.name != "" && s[perm{p.group, p.resource, p.verb, ""}])
}

// generatedRules are the manager's rules generated from the code's markers.
func generatedRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return clusterRoleRulesNamed(t, objs, "manager")
}

func clusterRoleRules(t *testing.T, objs []*unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	return clusterRoleRulesNamed(t, objs, "herald-manager")
}

func clusterRoleRulesNamed(t *testing.T, objs []*unstructured.Unstructured, name string) []rbacv1.PolicyRule {
	t.Helper()
	var r rbacv1.ClusterRole
	convert(t, find(t, objs, "ClusterRole", name), &r)
	return r.Rules
}

func managerPodSpec(t *testing.T, objs []*unstructured.Unstructured) corev1.PodSpec {
	t.Helper()
	var d appsv1.Deployment
	convert(t, find(t, objs, "Deployment", "herald-manager"), &d)
	return d.Spec.Template.Spec
}

func managerContainer(t *testing.T, objs []*unstructured.Unstructured) corev1.Container {
	t.Helper()
	spec := managerPodSpec(t, objs)
	if len(spec.Containers) != 1 || spec.Containers[0].Name != "manager" {
		t.Fatalf("manager pod containers %+v, want one named manager", spec.Containers)
	}
	return spec.Containers[0]
}

func webhookCertVolume(t *testing.T, objs []*unstructured.Unstructured) corev1.Volume {
	t.Helper()
	spec := managerPodSpec(t, objs)
	c := spec.Containers[0]
	i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.MountPath == argValue(t, c, "--webhook-cert-dir")
	})
	if i < 0 {
		t.Fatalf("nothing is mounted at --webhook-cert-dir; mounts %+v", c.VolumeMounts)
	}
	for _, v := range spec.Volumes {
		if v.Name == c.VolumeMounts[i].Name {
			return v
		}
	}
	t.Fatalf("volume %q of the webhook certificates is not declared", c.VolumeMounts[i].Name)
	return corev1.Volume{}
}

// wantArgs fails unless every arg is among the container's args.
func wantArgs(t *testing.T, c corev1.Container, args ...string) {
	t.Helper()
	for _, a := range args {
		if !slices.Contains(c.Args, a) {
			t.Errorf("manager args lack %s:\n  %s", a, strings.Join(c.Args, "\n  "))
		}
	}
}

// argValue returns the value of --flag=value among the container's args.
func argValue(t *testing.T, c corev1.Container, flag string) string {
	t.Helper()
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	t.Fatalf("manager args lack %s=...:\n  %s", flag, strings.Join(c.Args, "\n  "))
	return ""
}

// wantFileFromSecret fails unless file is key of Secret secret, mounted read-only.
func wantFileFromSecret(t *testing.T, spec corev1.PodSpec, file, secret, key string) {
	t.Helper()
	dir, base := path.Split(file)
	for _, m := range spec.Containers[0].VolumeMounts {
		if strings.TrimSuffix(m.MountPath, "/")+"/" != dir {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != secret {
				continue
			}
			for _, item := range v.Secret.Items {
				if item.Key == key && item.Path == base {
					if !m.ReadOnly {
						t.Errorf("%s is mounted writable", dir)
					}
					return
				}
			}
		}
	}
	t.Errorf("%s is not key %q of Secret %s: mounts %+v, volumes %+v", file, key, secret,
		spec.Containers[0].VolumeMounts, spec.Volumes)
}

func assertNoKind(t *testing.T, objs []*unstructured.Unstructured, kinds ...string) {
	t.Helper()
	for _, u := range objs {
		if slices.Contains(kinds, u.GetKind()) {
			t.Errorf("renders %s; want none of %v", describe(u), kinds)
		}
	}
}

// jsonDiff lists the JSON paths where a and b differ, with both values.
func jsonDiff(a, b any) []string {
	generic := func(v any) any {
		j, _ := json.Marshal(v)
		var g any
		_ = json.Unmarshal(j, &g)
		return g
	}
	var out []string
	var walk func(p string, a, b any)
	walk = func(p string, a, b any) {
		am, aok := a.(map[string]any)
		bm, bok := b.(map[string]any)
		if aok && bok {
			keys := map[string]bool{}
			for k := range am {
				keys[k] = true
			}
			for k := range bm {
				keys[k] = true
			}
			for k := range keys {
				walk(p+"."+k, am[k], bm[k])
			}
			return
		}
		as, aok := a.([]any)
		bs, bok := b.([]any)
		if aok && bok && len(as) == len(bs) {
			for i := range as {
				walk(fmt.Sprintf("%s[%d]", p, i), as[i], bs[i])
			}
			return
		}
		if !reflect.DeepEqual(a, b) {
			aj, _ := json.Marshal(a)
			bj, _ := json.Marshal(b)
			out = append(out, fmt.Sprintf("%s: chart %s, kustomize %s", p, aj, bj))
		}
	}
	walk("", generic(a), generic(b))
	sort.Strings(out)
	return out
}
