package injection

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/relay/shardmap"
)

// Path is where the webhook server serves the injector.
const Path = "/mutate-v1-pod"

// Names and values the injector writes into a pod.
const (
	ContainerName = "herald-relay"
	TokenVolume   = "herald-token"
	TokenDir      = "/var/run/secrets/herald" // one token per channel: shardmap.TokenFileName
	URLEnv        = "HERALD_URL"
	// MetricsPortName is the sidecar's container port of /metrics (a PodMonitor can select it).
	MetricsPortName = "herald-metrics"
	URL             = "http://127.0.0.1:7070"
)

// Annotations that override the sidecar's resources, e.g. notifications.herald.dev/sidecar-memory-limit: 256Mi.
const (
	CPURequestAnnotation    = "notifications.herald.dev/sidecar-cpu-request"
	CPULimitAnnotation      = "notifications.herald.dev/sidecar-cpu-limit"
	MemoryRequestAnnotation = "notifications.herald.dev/sidecar-memory-request"
	MemoryLimitAnnotation   = "notifications.herald.dev/sidecar-memory-limit"
)

// Injector adds the relay sidecar to pods.
type Injector struct {
	Client      client.Reader // looks up the channels a pod names, for warnings
	Decoder     admission.Decoder
	Image       string // the relay image
	LogLevel    string // of the sidecar unless the pod's annotation sets one; "" leaves the relay's
	MetricsPort int32  // see Sidecar.MetricsPort
	PullPolicy  corev1.PullPolicy
	PullSecrets []corev1.LocalObjectReference
	// Resources of the sidecar unless the pod's annotations say otherwise.
	// Defaults to requests 10m CPU / 32Mi memory and a 128Mi memory limit.
	Resources *corev1.ResourceRequirements
}

// Handle mutates one pod. Re-invocation (reinvocationPolicy, a retried create) changes nothing,
// because a pod that already has the sidecar is returned as it is.
func (in *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	var pod corev1.Pod
	if err := in.Decoder.Decode(req, &pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	namespace := req.Namespace
	channels := channelsOf(pod.Annotations[heraldv1.ChannelsAnnotation])
	if len(channels) == 0 {
		return admission.Allowed("no channels listed").WithWarnings(fmt.Sprintf(
			"pod is labelled %s=true but lists no channels in annotation %s: no Herald sidecar was added",
			heraldv1.InjectLabel, heraldv1.ChannelsAnnotation))
	}
	warnings, largest := in.lookUpChannels(ctx, namespace, channels)
	resources, err := in.resources(pod.Annotations)
	if err != nil {
		return admission.Denied(err.Error())
	}
	// Room for the largest messages of the channels it can see (those of the pod's namespace).
	if floor := workloads.SidecarMemoryFloor(largest); resources.Limits.Memory().Cmp(floor) < 0 && !resources.Limits.Memory().IsZero() {
		if _, set := pod.Annotations[MemoryLimitAnnotation]; set {
			warnings = append(warnings, fmt.Sprintf("annotation %s is below the %s the sidecar needs for messages of up to %d bytes (the channels' maxMessageBytes): large messages can get it OOM-killed",
				MemoryLimitAnnotation, floor.String(), largest))
		} else {
			resources.Limits[corev1.ResourceMemory] = floor
		}
	}
	level := pod.Annotations[heraldv1.SidecarLogLevelAnnotation]
	if level != "" && !slices.Contains([]string{"debug", "info", "warn", "error"}, level) {
		return admission.Denied(fmt.Sprintf("annotation %s: %q is not a log level: want debug, info, warn or error", heraldv1.SidecarLogLevelAnnotation, level))
	}
	if level == "" {
		level = in.LogLevel
	}
	origins := pod.Annotations[heraldv1.SidecarWSOriginPatternsAnnotation]
	for _, p := range strings.Split(origins, ",") {
		if _, err := path.Match(strings.TrimSpace(p), ""); err != nil {
			return admission.Denied(fmt.Sprintf("annotation %s: %q is not a host pattern (path.Match): %v", heraldv1.SidecarWSOriginPatternsAnnotation, p, err))
		}
	}
	if !Inject(&pod, Sidecar{Namespace: namespace, Image: in.Image, Channels: channels, Resources: resources, LogLevel: level, WSOriginPatterns: origins, MetricsPort: in.MetricsPort,
		PullPolicy: in.PullPolicy, PullSecrets: in.PullSecrets}) {
		return admission.Allowed("sidecar already present").WithWarnings(warnings...)
	}
	mutated, err := json.Marshal(&pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, mutated).WithWarnings(warnings...)
}

// Sidecar is what Inject adds to a pod.
type Sidecar struct {
	Namespace string   // the pod's: channels without a namespace are in it
	Image     string   // the relay image
	Channels  []string // "name" or "namespace/name", as the channels annotation lists them
	Resources corev1.ResourceRequirements
	LogLevel  string // "" leaves the relay's default
	// WSOriginPatterns: comma-separated Origin hosts the sidecar accepts WebSockets from ("": its own Host only)
	WSOriginPatterns string
	PullPolicy       corev1.PullPolicy             // of the sidecar container; "": Kubernetes' default
	PullSecrets      []corev1.LocalObjectReference // added to the pod's imagePullSecrets (Secrets of the pod's namespace)
	// MetricsPort serves the sidecar's /metrics on the pod's IP (port herald-metrics), with the
	// usual prometheus.io annotations unless the pod has its own; 0: loopback only.
	MetricsPort int32
}

// Inject adds the sidecar, and HERALD_URL to every app container that lacks it. The sidecar
// gets one projected token per channel, each with that channel's audience
// (shardmap.TokenAudience): a token one relay receives is good at no other channel's relays.
// It reports whether it changed anything: re-invoked on an injected pod it adds nothing twice,
// only the variable to containers another webhook added since.
func Inject(pod *corev1.Pod, sc Sidecar) bool {
	changed := false
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == URLEnv }) {
			c.Env = append(c.Env, corev1.EnvVar{Name: URLEnv, Value: URL})
			changed = true
		}
	}
	if slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == ContainerName }) {
		return changed
	}
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = "default" // the projected token below needs one
	}
	var tokens []corev1.VolumeProjection
	for _, c := range sc.Channels {
		ns, name := sc.Namespace, c
		if before, after, ok := strings.Cut(c, "/"); ok {
			ns, name = before, after
		}
		tokens = append(tokens, corev1.VolumeProjection{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: shardmap.TokenAudience(ns, name), ExpirationSeconds: ptr(int64(3600)), Path: shardmap.TokenFileName(ns, name)}})
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: tokens},
	}})
	probe := func(path string) *corev1.Probe {
		// The sidecar listens on loopback only, out of the kubelet's reach: probe from inside.
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/herald", "probe", URL + path}}},
			PeriodSeconds: 10, TimeoutSeconds: 2, FailureThreshold: 3, SuccessThreshold: 1,
		}
	}
	startup := probe("/healthz")
	startup.PeriodSeconds, startup.FailureThreshold = 1, 30
	args := []string{"relay", "--role=sidecar", "--listen=127.0.0.1:" + fmt.Sprint(shardmap.RelayPort),
		"--channels=" + strings.Join(sc.Channels, ","), "--token-dir=" + TokenDir}
	if sc.LogLevel != "" {
		args = append(args, "--log-level="+sc.LogLevel)
	}
	if sc.WSOriginPatterns != "" {
		args = append(args, "--ws-origin-patterns="+sc.WSOriginPatterns)
	}
	var ports []corev1.ContainerPort
	if sc.MetricsPort != 0 {
		args = append(args, fmt.Sprintf("--metrics-listen=:%d", sc.MetricsPort))
		ports = []corev1.ContainerPort{{Name: MetricsPortName, ContainerPort: sc.MetricsPort, Protocol: corev1.ProtocolTCP}}
		if _, own := pod.Annotations["prometheus.io/scrape"]; !own {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations["prometheus.io/scrape"] = "true"
			pod.Annotations["prometheus.io/port"] = fmt.Sprint(sc.MetricsPort)
			pod.Annotations["prometheus.io/path"] = "/metrics"
		}
	}
	sidecar := corev1.Container{
		Name:            ContainerName,
		Image:           sc.Image,
		ImagePullPolicy: sc.PullPolicy,
		RestartPolicy:   ptr(corev1.ContainerRestartPolicyAlways), // a native sidecar: starts first, never blocks a Job
		Args:            args,
		Ports:           ports,
		Env: []corev1.EnvVar{{Name: cli.EnvName("namespace"), ValueFrom: &corev1.EnvVarSource{ // --namespace
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
		Resources:      sc.Resources,
		StartupProbe:   startup,
		LivenessProbe:  probe("/healthz"),
		ReadinessProbe: probe("/readyz"),
		VolumeMounts:   []corev1.VolumeMount{{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(true),
			RunAsUser:                ptr(int64(65532)),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	for _, s := range sc.PullSecrets {
		if !slices.Contains(pod.Spec.ImagePullSecrets, s) {
			pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, s)
		}
	}
	return true
}

// channelsOf splits the channels annotation: "orders, billing" or "other-ns/orders".
func channelsOf(annotation string) []string {
	var out []string
	for _, c := range strings.Split(annotation, ",") {
		if c = strings.TrimSpace(c); c != "" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// lookUpChannels warns about channels of the pod's own namespace that do not exist (the pod
// still starts, but its sidecar will not become ready until they do) and returns the largest
// maxMessageBytes of those that do. Channels of other namespaces are not looked up: whoever
// creates pods here must not learn from the webhook what exists in namespaces they may not read.
func (in *Injector) lookUpChannels(ctx context.Context, namespace string, channels []string) (warnings []string, largest int64) {
	for _, c := range channels {
		ns, name := namespace, c
		if before, after, ok := strings.Cut(c, "/"); ok {
			ns, name = before, after
		}
		if ns != namespace {
			continue
		}
		var ch heraldv1.NotificationChannel
		err := in.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &ch)
		switch {
		case err == nil:
			largest = max(largest, int64(ch.Spec.MaxMessageBytes))
		case apierrors.IsNotFound(err):
			warnings = append(warnings, fmt.Sprintf("NotificationChannel %s/%s does not exist: the Herald sidecar will not be ready until it does", ns, name))
		case err != nil:
			warnings = append(warnings, fmt.Sprintf("could not check NotificationChannel %s/%s: %v", ns, name, err))
		}
	}
	return warnings, largest
}

// resources are the defaults, overridden by the pod's sidecar-* annotations.
func (in *Injector) resources(annotations map[string]string) (corev1.ResourceRequirements, error) {
	r := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	if in.Resources != nil {
		r = *in.Resources.DeepCopy()
	}
	for ann, set := range map[string]struct {
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		CPURequestAnnotation:    {&r.Requests, corev1.ResourceCPU},
		CPULimitAnnotation:      {&r.Limits, corev1.ResourceCPU},
		MemoryRequestAnnotation: {&r.Requests, corev1.ResourceMemory},
		MemoryLimitAnnotation:   {&r.Limits, corev1.ResourceMemory},
	} {
		v, ok := annotations[ann]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return r, fmt.Errorf("annotation %s: %q is not a quantity: %v", ann, v, err)
		}
		if *set.list == nil {
			*set.list = corev1.ResourceList{}
		}
		(*set.list)[set.name] = q
	}
	return r, nil
}

func ptr[T any](v T) *T { return &v }
