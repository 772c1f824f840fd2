package localstack

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldhq/herald/relay/shardmap"
)

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"USER": "herald.default.orders", "EMPTY": "", "A": "$(B)"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := map[string]struct{ in, want string }{
		"defined":                 {"--redis-username=$(USER)", "--redis-username=herald.default.orders"},
		"undefined stays":         {"--x=$(NOPE)", "--x=$(NOPE)"},
		"defined as empty":        {"[$(EMPTY)]", "[]"},
		"escaped":                 {"$$(USER)", "$(USER)"},
		"double dollar alone":     {"a$$b", "a$b"},
		"lone dollar":             {"cost $5", "cost $5"},
		"trailing dollar":         {"end$", "end$"},
		"unterminated":            {"$(USER", "$(USER"},
		"two references":          {"$(USER)/$(USER)", "herald.default.orders/herald.default.orders"},
		"no recursion":            {"$(A)", "$(B)"},
		"empty name":              {"$()", "$()"},
		"no references":           {"plain", "plain"},
		"escaped then reference":  {"$$$(USER)", "$herald.default.orders"},
		"reference inside parens": {"($(USER))", "(herald.default.orders)"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ExpandVars(tc.in, lookup); got != tc.want {
				t.Errorf("ExpandVars(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// fakeSource serves Secrets and ConfigMaps from maps; a missing object is an error.
type fakeSource struct {
	secrets    map[string]map[string][]byte
	configMaps map[string]map[string]string
}

func (f fakeSource) Secret(ns, name string) (map[string][]byte, error) {
	if d, ok := f.secrets[ns+"/"+name]; ok {
		return d, nil
	}
	return nil, errors.New("secrets \"" + name + "\" not found")
}

func (f fakeSource) ConfigMap(ns, name string) (map[string]string, error) {
	if d, ok := f.configMaps[ns+"/"+name]; ok {
		return d, nil
	}
	return nil, errors.New("configmaps \"" + name + "\" not found")
}

func secretEnv(name, secret, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key, Optional: &optional}}}
}

func TestResolveEnv(t *testing.T) {
	src := fakeSource{
		secrets:    map[string]map[string][]byte{"ns/creds": {"username": []byte("herald.ns.orders"), "password": []byte("s3cret")}},
		configMaps: map[string]map[string]string{"ns/settings": {"LEVEL": "debug", "MAP": "/etc/herald/shardmap.json"}},
	}
	pod := PodInfo{Name: "orders-shard-0-abc", Namespace: "ns", IP: "127.0.0.1", Labels: map[string]string{"shard": "0"}}
	mounts := []Mount{{ContainerPath: "/etc/herald", LocalPath: "/tmp/v/shardmap"}}
	tests := map[string]struct {
		env     []corev1.EnvVar
		envFrom []corev1.EnvFromSource
		want    []string
		wantErr string
	}{
		"secret keys, as the relay Deployment has them": {
			env:  []corev1.EnvVar{secretEnv("HERALD_REDIS_USERNAME", "creds", "username", false), secretEnv("HERALD_REDIS_PASSWORD", "creds", "password", false)},
			want: []string{"HERALD_REDIS_USERNAME=herald.ns.orders", "HERALD_REDIS_PASSWORD=s3cret"},
		},
		"configMap key": {
			env: []corev1.EnvVar{{Name: "HERALD_LOG_LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "LEVEL"}}}},
			want: []string{"HERALD_LOG_LEVEL=debug"},
		},
		"literal expands earlier variables only": {
			env: []corev1.EnvVar{{Name: "GREETING", Value: "hi $(WHO) $(LATER)"}, {Name: "WHO", Value: "x"}, {Name: "LATER", Value: "y"},
				{Name: "AFTER", Value: "$(WHO)"}},
			want: []string{"GREETING=hi $(WHO) $(LATER)", "WHO=x", "LATER=y", "AFTER=x"},
		},
		"fieldRefs": {
			env: []corev1.EnvVar{
				{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
				{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "SHARD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['shard']"}}},
			},
			want: []string{"POD=orders-shard-0-abc", "NS=ns", "IP=127.0.0.1", "SHARD=0"},
		},
		"envFrom with prefix, env overrides": {
			envFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
			env:     []corev1.EnvVar{{Name: "CFG_LEVEL", Value: "info"}},
			want:    []string{"CFG_LEVEL=info", "CFG_MAP=/etc/herald/shardmap.json"},
		},
		"literal paths under a mount are rewritten": {
			env:  []corev1.EnvVar{{Name: "HERALD_SHARDMAP", Value: "/etc/herald/shardmap.json"}},
			want: []string{"HERALD_SHARDMAP=/tmp/v/shardmap/shardmap.json"},
		},
		"missing secret": {
			env:     []corev1.EnvVar{secretEnv("P", "nope", "password", false)},
			wantErr: `env P: secrets "nope" not found`,
		},
		"missing key": {
			env:     []corev1.EnvVar{secretEnv("P", "creds", "token", false)},
			wantErr: `env P: secret creds has no key "token"`,
		},
		"optional missing secret is left out": {
			env:  []corev1.EnvVar{secretEnv("P", "nope", "password", true), {Name: "Q", Value: "q"}},
			want: []string{"Q=q"},
		},
		"unsupported fieldRef": {
			env:     []corev1.EnvVar{{Name: "N", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
			wantErr: `env N: fieldRef "spec.nodeName" does not run locally`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := &corev1.Container{Env: tc.env, EnvFrom: tc.envFrom}
			env, err := ResolveEnv(c, pod, src, mounts)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := env.List(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("env = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRewritePaths(t *testing.T) {
	mounts := []Mount{
		{ContainerPath: "/etc/herald", LocalPath: "/run/v/shardmap"},
		{ContainerPath: "/etc/herald/tls/", LocalPath: "/run/v/tls"},
	}
	tests := map[string]struct{ in, want string }{
		"flag value":                  {"--shardmap=/etc/herald/shardmap.json", "--shardmap=/run/v/shardmap/shardmap.json"},
		"whole argument":              {"/etc/herald/shardmap.json", "/run/v/shardmap/shardmap.json"},
		"the directory itself":        {"--dir=/etc/herald", "--dir=/run/v/shardmap"},
		"deeper mount wins":           {"--ca=/etc/herald/tls/ca.crt", "--ca=/run/v/tls/ca.crt"},
		"sibling directory untouched": {"--x=/etc/heraldry/file", "--x=/etc/heraldry/file"},
		"not at a boundary":           {"--x=/opt/etc/herald/file", "--x=/opt/etc/herald/file"},
		"list of paths":               {"--files=/etc/herald/a,/etc/herald/b", "--files=/run/v/shardmap/a,/run/v/shardmap/b"},
		"no path":                     {"--shard=0", "--shard=0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := RewritePaths(tc.in, mounts); got != tc.want {
				t.Errorf("RewritePaths(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSetFlag(t *testing.T) {
	tests := map[string]struct{ in, want []string }{
		"equals form":                {[]string{"relay", "--listen=:7070", "--shard=0"}, []string{"relay", "--listen=127.0.0.1:9", "--shard=0"}},
		"single dash":                {[]string{"-listen=:7070"}, []string{"--listen=127.0.0.1:9"}},
		"separate value":             {[]string{"--listen", ":7070", "--shard=0"}, []string{"--listen=127.0.0.1:9", "--shard=0"}},
		"absent: appended":           {[]string{"relay", "--shard=0"}, []string{"relay", "--shard=0", "--listen=127.0.0.1:9"}},
		"prefix is not it":           {[]string{"--listen-backlog=5"}, []string{"--listen-backlog=5", "--listen=127.0.0.1:9"}},
		"after -- untouched":         {[]string{"--", "--listen=:1"}, []string{"--", "--listen=:1", "--listen=127.0.0.1:9"}},
		"repeated: all set":          {[]string{"--listen=:1", "--listen=:2"}, []string{"--listen=127.0.0.1:9", "--listen=127.0.0.1:9"}},
		"a value that looks like it": {[]string{"--name", "listen"}, []string{"--name", "listen", "--listen=127.0.0.1:9"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := SetFlag(tc.in, "listen", "127.0.0.1:9"); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SetFlag(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestContainerArgsOfARelayDeployment runs the args the operator writes (controllers/workloads)
// through the rewriting: user from the Secret, shard map from the local volume, loopback listen.
func TestContainerArgsOfARelayDeployment(t *testing.T) {
	c := &corev1.Container{
		Args: []string{"relay", "--role=shard", "--shardmap=/etc/herald/shardmap.json", "--shard=1", "--listen=:7070",
			"--redis-addresses=127.0.0.1:7001", "--redis-username=$(HERALD_REDIS_USERNAME)"},
		Env: []corev1.EnvVar{secretEnv("HERALD_REDIS_USERNAME", "orders-redis-acl", "username", false)},
	}
	src := fakeSource{secrets: map[string]map[string][]byte{"default/orders-redis-acl": {"username": []byte("herald.default.orders")}}}
	mounts := []Mount{{ContainerPath: "/etc/herald", LocalPath: "/state/volumes/default/orders-shard-1/shardmap"}}
	env, err := ResolveEnv(c, PodInfo{Namespace: "default"}, src, mounts)
	if err != nil {
		t.Fatal(err)
	}
	got := ContainerArgs(c, env, mounts, "127.0.0.1:40001")
	want := []string{"relay", "--role=shard", "--shardmap=/state/volumes/default/orders-shard-1/shardmap/shardmap.json", "--shard=1",
		"--listen=127.0.0.1:40001", "--redis-addresses=127.0.0.1:7001", "--redis-username=herald.default.orders"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("args =\n %q\nwant\n %q", got, want)
	}
	if c.Args[3] != "--shard=1" || strings.Contains(strings.Join(c.Args, " "), "40001") {
		t.Errorf("the container's own args were modified: %q", c.Args)
	}
}

func svc(ns, name string, sel map[string]string) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
}

func TestComputeEndpoints(t *testing.T) {
	shard := func(ch, i string) map[string]string {
		return map[string]string{"notifications.herald.dev/channel": ch, "app.kubernetes.io/component": "relay", "notifications.herald.dev/shard": i}
	}
	relay := func(ch string) map[string]string {
		return map[string]string{"notifications.herald.dev/channel": ch, "app.kubernetes.io/component": "relay"}
	}
	services := []corev1.Service{
		svc("default", "orders-shard-0", shard("orders", "0")),
		svc("default", "orders-shard-1", shard("orders", "1")),
		svc("default", "orders-relay", relay("orders")),
		svc("default", "kubernetes", nil), // no selector: not ours to fill
		svc("other", "orders-shard-0", shard("orders", "0")),
	}
	replicas := []ReplicaView{
		{Namespace: "default", Labels: shard("orders", "0"), Addr: "127.0.0.1:4002", Ready: true},
		{Namespace: "default", Labels: shard("orders", "0"), Addr: "127.0.0.1:4001", Ready: true},
		{Namespace: "default", Labels: shard("orders", "1"), Addr: "127.0.0.1:4003", Ready: false},
		{Namespace: "default", Labels: shard("presence", "0"), Addr: "127.0.0.1:4004", Ready: true},
	}
	tests := map[string]struct {
		services []corev1.Service
		replicas []ReplicaView
		want     shardmap.Endpoints
	}{
		"shard and channel Services, ready replicas only, sorted, namespaces apart": {
			services: services, replicas: replicas,
			want: shardmap.Endpoints{
				"orders-shard-0.default.svc": {"127.0.0.1:4001", "127.0.0.1:4002"},
				"orders-shard-1.default.svc": {},
				"orders-relay.default.svc":   {"127.0.0.1:4001", "127.0.0.1:4002"},
				"orders-shard-0.other.svc":   {},
			},
		},
		"no replicas": {
			services: services[:1],
			want:     shardmap.Endpoints{"orders-shard-0.default.svc": {}},
		},
		"no services": {replicas: replicas, want: shardmap.Endpoints{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := ComputeEndpoints(tc.services, tc.replicas)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("endpoints = %v, want %v", got, tc.want)
			}
		})
	}
}

// The shard map's endpoint URLs name the hosts ComputeEndpoints writes.
func TestServiceHostMatchesShardMapEndpoint(t *testing.T) {
	m := shardmap.New("default", "orders", shardmap.DeliveryDurable, []string{"a", "b"})
	for i, s := range m.Shards {
		want := ServiceHost("default", shardmap.ShardServiceName("orders", i))
		if !strings.Contains(s.Endpoint, "://"+want+":") {
			t.Errorf("shard %d endpoint %q does not name host %q", i, s.Endpoint, want)
		}
	}
}
