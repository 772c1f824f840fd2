package localstack

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldhq/herald/relay/shardmap"
)

// ExpandVars expands $(NAME) references in s the way the kubelet does for a container's command,
// args and env values: $(NAME) becomes NAME's value when lookup knows it and stays as written when
// it does not; $$ is an escaped $ (so $$(NAME) gives the literal "$(NAME)"); any other $ stays.
//
//	"--user=$(HERALD_REDIS_USERNAME)" -> "--user=herald.default.orders"
//	"--user=$(UNDEFINED)"             -> "--user=$(UNDEFINED)"   (not an empty string)
//	"price=$$(5)"                     -> "price=$(5)"
func ExpandVars(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	checkpoint := 0
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			continue
		}
		b.WriteString(s[checkpoint:i])
		rest := s[i+1:]
		advance := 1
		switch rest[0] {
		case '$': // escaped operator
			b.WriteByte('$')
		case '(':
			end := strings.IndexByte(rest, ')')
			if end < 0 { // unterminated: keep "$(" and go on after it
				b.WriteString("$(")
				break
			}
			name := rest[1:end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			advance = end + 1
		default:
			b.WriteByte('$')
			b.WriteByte(rest[0])
		}
		i += advance
		checkpoint = i + 1
	}
	return b.String() + s[checkpoint:]
}

// ObjectSource reads the objects a container's env refers to. The Runner reads them from the
// API server at every start of a replica, as the kubelet does at every container start.
type ObjectSource interface {
	Secret(namespace, name string) (map[string][]byte, error)
	ConfigMap(namespace, name string) (map[string]string, error)
}

// PodInfo is what a fieldRef can read of the pod a replica stands for.
type PodInfo struct {
	Name, Namespace, ServiceAccount string
	IP                              string // 127.0.0.1: replicas share the host's loopback
	Labels, Annotations             map[string]string
}

// Env is a container's resolved environment: values in definition order, later definitions of a
// name replacing earlier ones (env overrides envFrom, as in a pod).
type Env struct {
	names  []string
	values map[string]string
}

// Lookup is ExpandVars's lookup over the variables defined so far.
func (e *Env) Lookup(name string) (string, bool) {
	v, ok := e.values[name]
	return v, ok
}

func (e *Env) set(name, value string) {
	if e.values == nil {
		e.values = map[string]string{}
	}
	if _, ok := e.values[name]; !ok {
		e.names = append(e.names, name)
	}
	e.values[name] = value
}

// List is the environment as NAME=VALUE strings for exec.
func (e *Env) List() []string {
	out := make([]string, 0, len(e.names))
	for _, n := range e.names {
		out = append(out, n+"="+e.values[n])
	}
	return out
}

// ResolveEnv builds a container's environment as the kubelet does: envFrom first (with its
// prefix), then env in order, each literal value expanded against the variables defined before
// it. A missing Secret, ConfigMap or key is an error unless the reference is optional, in which
// case the variable is left out. Every path under a volume mount in a value is rewritten to its
// local directory.
func ResolveEnv(c *corev1.Container, pod PodInfo, src ObjectSource, mounts []Mount) (*Env, error) {
	env := &Env{}
	for _, from := range c.EnvFrom {
		switch {
		case from.SecretRef != nil:
			data, err := src.Secret(pod.Namespace, from.SecretRef.Name)
			if err != nil {
				if isTrue(from.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
			}
			for _, k := range sortedKeys(data) {
				env.set(from.Prefix+k, string(data[k]))
			}
		case from.ConfigMapRef != nil:
			data, err := src.ConfigMap(pod.Namespace, from.ConfigMapRef.Name)
			if err != nil {
				if isTrue(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom configMap %s: %w", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(data) {
				env.set(from.Prefix+k, data[k])
			}
		}
	}
	for _, v := range c.Env {
		if v.ValueFrom == nil {
			env.set(v.Name, RewritePaths(ExpandVars(v.Value, env.Lookup), mounts))
			continue
		}
		value, skip, err := valueFrom(v.ValueFrom, pod, src)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", v.Name, err)
		}
		if !skip {
			env.set(v.Name, value)
		}
	}
	return env, nil
}

// valueFrom resolves one env source; skip reports an optional reference that is missing.
func valueFrom(from *corev1.EnvVarSource, pod PodInfo, src ObjectSource) (value string, skip bool, err error) {
	switch {
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		data, err := src.Secret(pod.Namespace, ref.Name)
		if err == nil {
			if b, ok := data[ref.Key]; ok {
				return string(b), false, nil
			}
			err = fmt.Errorf("secret %s has no key %q", ref.Name, ref.Key)
		}
		if isTrue(ref.Optional) {
			return "", true, nil
		}
		return "", false, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		data, err := src.ConfigMap(pod.Namespace, ref.Name)
		if err == nil {
			if v, ok := data[ref.Key]; ok {
				return v, false, nil
			}
			err = fmt.Errorf("configMap %s has no key %q", ref.Name, ref.Key)
		}
		if isTrue(ref.Optional) {
			return "", true, nil
		}
		return "", false, err
	case from.FieldRef != nil:
		return fieldValue(from.FieldRef.FieldPath, pod)
	}
	return "", false, fmt.Errorf("unsupported value source (only secretKeyRef, configMapKeyRef and fieldRef run locally)")
}

func fieldValue(path string, pod PodInfo) (string, bool, error) {
	switch path {
	case "metadata.name":
		return pod.Name, false, nil
	case "metadata.namespace":
		return pod.Namespace, false, nil
	case "spec.serviceAccountName":
		return pod.ServiceAccount, false, nil
	case "status.podIP", "status.hostIP":
		return pod.IP, false, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if k, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(k, "']") {
			return m[strings.TrimSuffix(k, "']")], false, nil
		}
	}
	return "", false, fmt.Errorf("fieldRef %q does not run locally", path)
}

// Mount maps a container path (a volumeMount's mountPath) to the local directory that holds the
// volume's files.
type Mount struct {
	ContainerPath string // e.g. /etc/herald
	LocalPath     string // e.g. <runner dir>/volumes/default/orders-shard-0/shardmap
}

// RewritePaths replaces every container path under a mount in s with the local path. A path
// matches at the start of s or after '=', ':' or ',' and ends at the end of s or at '/':
//
//	"--shardmap=/etc/herald/shardmap.json" -> "--shardmap=/tmp/run/.../shardmap.json"
//	"--shardmap=/etc/heraldry"             -> unchanged (a different directory)
func RewritePaths(s string, mounts []Mount) string {
	ms := append([]Mount(nil), mounts...)
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].ContainerPath) > len(ms[j].ContainerPath) }) // deepest first
	for _, m := range ms {
		p := strings.TrimSuffix(m.ContainerPath, "/")
		if p == "" {
			continue
		}
		var b strings.Builder
		for i := 0; i < len(s); {
			startOK := i == 0 || strings.ContainsRune("=:,", rune(s[i-1]))
			end := i + len(p)
			if startOK && strings.HasPrefix(s[i:], p) && (end == len(s) || s[end] == '/') {
				b.WriteString(m.LocalPath)
				i = end
				continue
			}
			b.WriteByte(s[i])
			i++
		}
		s = b.String()
	}
	return s
}

// SetFlag returns args with flag name (without dashes) set to value: "--name=v", "-name=v" and
// "--name v" forms are replaced in place, and "--name=value" is appended when args lack it.
func SetFlag(args []string, name, value string) []string {
	out := make([]string, 0, len(args)+1)
	found := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		bare := strings.TrimLeft(a, "-")
		if a == bare || len(a)-len(bare) > 2 { // not a flag, or "---x"
			out = append(out, a)
			continue
		}
		if a == "--" { // end of flags
			out = append(out, args[i:]...)
			break
		}
		switch {
		case bare == name:
			found = true
			out = append(out, "--"+name+"="+value)
			i++ // skip the separate value
		case strings.HasPrefix(bare, name+"="):
			found = true
			out = append(out, "--"+name+"="+value)
		default:
			out = append(out, a)
		}
	}
	if !found {
		out = append(out, "--"+name+"="+value)
	}
	return out
}

// ContainerArgs is what the runner passes to the herald binary for a container: command[1:]
// (command[0] is the image's program, here the herald binary itself) then args, each expanded
// against env and with container paths rewritten to local mounts, and --listen set to listen.
func ContainerArgs(c *corev1.Container, env *Env, mounts []Mount, listen string) []string {
	var args []string
	if len(c.Command) > 1 {
		args = append(args, c.Command[1:]...)
	}
	args = append(args, c.Args...)
	for i, a := range args {
		args[i] = RewritePaths(ExpandVars(a, env.Lookup), mounts)
	}
	return SetFlag(args, "listen", listen)
}

// ReplicaView is what ComputeEndpoints needs of a replica.
type ReplicaView struct {
	Namespace string
	Labels    map[string]string // the pod template's labels
	Addr      string            // 127.0.0.1:port
	Ready     bool
}

// ComputeEndpoints is the local stand-in for cluster DNS: for every Service with a selector,
// "<name>.<namespace>.svc" maps to the sorted addresses of the ready replicas in the Service's
// namespace whose labels its selector matches (an empty list when none is ready).
func ComputeEndpoints(services []corev1.Service, replicas []ReplicaView) shardmap.Endpoints {
	eps := shardmap.Endpoints{}
	for _, svc := range services {
		if len(svc.Spec.Selector) == 0 {
			continue // no selector: endpoints are managed by hand, nothing to run
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		addrs := []string{}
		for _, r := range replicas {
			if r.Ready && r.Namespace == svc.Namespace && sel.Matches(labels.Set(r.Labels)) {
				addrs = append(addrs, r.Addr)
			}
		}
		sort.Strings(addrs)
		eps[ServiceHost(svc.Namespace, svc.Name)] = addrs
	}
	return eps
}

// ServiceHost is a Service's host name as written in shard map endpoints, without the cluster
// domain: "orders-shard-0.default.svc".
func ServiceHost(namespace, name string) string { return name + "." + namespace + ".svc" }

func isTrue(b *bool) bool { return b != nil && *b }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
