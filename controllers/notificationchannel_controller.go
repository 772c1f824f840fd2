package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/source"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/controllers/workloads"
)

// NotificationChannelReconciler reconciles NotificationChannel objects.
type NotificationChannelReconciler struct {
	client.Client
	APIReader client.Reader        // uncached reads: Secrets the operator does not own
	Recorder  events.EventRecorder // events on condition transitions
	Redis     *redisconf.Pool      // one connection set per distinct Redis

	DefaultRedis   DefaultRedis                // the operator's Redis, used unless spec.redis is set
	RelayImage     string                      // relay image unless spec.relay.image is set
	RelayResources corev1.ResourceRequirements // relay resources unless spec.relay.resources is set
	RelayLogLevel  string                      // relay log level unless spec.relay.logLevel is set; "" leaves the relay's default
	RelayNodeLost  time.Duration               // workloads.Params.NodeLostToleration
	// RelayPullPolicy and RelayPullSecrets apply unless spec.relay sets its own.
	RelayPullPolicy  corev1.PullPolicy
	RelayPullSecrets []corev1.LocalObjectReference
	// RelayClusterRole grants TokenReview create; each channel's relay ServiceAccount is bound to
	// it so relays can authenticate sidecars. Empty: no binding is made.
	RelayClusterRole string
	// SecretsClusterRole (Secrets: get, create, update, patch, delete) is bound to the manager's
	// own ServiceAccount, ManagerServiceAccount, in each namespace with a channel, before the
	// channel's Secrets are read or written: the manager needs no right on Secrets across the
	// cluster. Empty: no binding is made, and the manager's RBAC must cover Secrets.
	SecretsClusterRole    string
	ManagerServiceAccount types.NamespacedName
	// MetricsScrapers selects the namespaces (Prometheus's) that each channel's NetworkPolicy
	// lets reach the relays' /metrics; nil: none besides the channel's own and spec.access.
	MetricsScrapers *metav1.LabelSelector
	ResyncPeriod    time.Duration    // how often a healthy channel is checked again. Defaults to 60s.
	CleanupTimeout  time.Duration    // how long Redis cleanup is retried on delete. Defaults to 10m.
	Now             func() time.Time // the clock; defaults to time.Now
	Workers         int              // channels reconciled at once. Defaults to 1.
	// RedisWatchInterval is how often every Redis in use is checked for restarted, new or
	// recovered nodes, whose channels then get a pass at once. Defaults to 3s.
	RedisWatchInterval time.Duration
	Policy             Policy        // what a channel may ask for beyond the defaults
	MaxRedisNodes      int           // cap on the nodes a Redis may list; 0: redisconf.DefaultMaxNodes
	ReconcileTimeout   time.Duration // deadline of one pass over a channel. Defaults to 2m.
	// AdoptRetainedStreams lets a channel take up the data a deleted channel of its name left
	// in Redis even when a namespace of its name that was deleted since wrote it; without it
	// such a channel is RetainedByAnotherNamespace until the data is deleted.
	AdoptRetainedStreams bool
	// PruneLibrariesAfter is how long a Redis must have had no relay of another version before
	// the function libraries of earlier versions are removed from it (libraryJanitor); 0: never.
	PruneLibrariesAfter time.Duration
	// OwnImage is the image the manager runs; only relays of that image are known to call this
	// build's function library. Empty: no library is removed.
	OwnImage string

	redisUsers  redisUsers              // which channels use which Redis, for the watch
	libraries   libraryJanitor          // earlier versions' function libraries, removed once unused
	redisEvents chan event.GenericEvent // channels the watch wants reconciled

	reconciled func(types.NamespacedName) // called after each reconcile of a live channel; for tests
}

// +kubebuilder:rbac:groups=notifications.herald.dev,resources=notificationchannels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=notifications.herald.dev,resources=notificationchannels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=notifications.herald.dev,resources=notificationchannels/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get
// +kubebuilder:rbac:groups="",resources=configmaps;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies;ingresses,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterrolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=bind,resourceNames=herald-relay;herald-manager-secrets
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=get;create;update;delete
// Secrets: none here. The manager binds herald-manager-secrets to itself in each namespace with a
// channel (grantSecrets); the chart and config/rbac hold that ClusterRole.

// Reconcile brings one channel closer to its spec and reports what it sees:
// get -> (deleting? finalize) -> provision Redis -> apply children -> compute status -> write if changed.
func (r *NotificationChannelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ch heraldv1.NotificationChannel
	if err := r.Get(ctx, req.NamespacedName, &ch); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("generation", ch.Generation))

	if !ch.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &ch)
	}
	if !controllerutil.ContainsFinalizer(&ch, heraldv1.Finalizer) {
		orig := ch.DeepCopy()
		controllerutil.AddFinalizer(&ch, heraldv1.Finalizer)
		if err := r.Patch(ctx, &ch, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	if r.reconciled != nil {
		defer r.reconciled(req.NamespacedName)
	}
	if ch.Annotations[heraldv1.PausedAnnotation] == "true" {
		// Nothing changes in Redis or Kubernetes; the last status stays, with Paused on top.
		// Removing the annotation is an edit, which brings the channel back here.
		status := *ch.Status.DeepCopy()
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: heraldv1.ConditionPaused, Status: metav1.ConditionTrue,
			Reason: heraldv1.ReasonPausedByAnnotation, ObservedGeneration: ch.Generation,
			Message: "The operator leaves this channel as it is until the annotation " + heraldv1.PausedAnnotation + " is removed."})
		recordConditions(&ch, status.Conditions)
		return ctrl.Result{RequeueAfter: r.resyncPeriod()}, r.writeStatus(ctx, &ch, status)
	}
	// A deadline for the work on Redis and the children: a Redis that accepts connections and
	// never answers must not hold a worker forever. Status is still written after it.
	work, cancel := context.WithTimeout(ctx, r.reconcileTimeout())
	defer cancel()
	obs := r.provision(work, &ch)
	if obs.placed() {
		if err := r.applyChildren(work, &ch, &obs); err != nil {
			obs.childErr = err
		}
	}
	status := computeStatus(&ch, &obs)
	recordConditions(&ch, status.Conditions)
	if err := r.writeStatus(ctx, &ch, status); err != nil {
		reconcileErrors.WithLabelValues("StatusWriteFailed").Inc()
		return ctrl.Result{}, err
	}
	switch {
	case obs.childErr != nil:
		reconcileErrors.WithLabelValues(heraldv1.ReasonWorkloadsFailed).Inc()
		return ctrl.Result{}, obs.childErr
	case obs.redisErr != nil && obs.redisReason != heraldv1.ReasonInvalidSpec && obs.redisReason != heraldv1.ReasonNotAllowed:
		reconcileErrors.WithLabelValues(obs.redisReason).Inc()
		return ctrl.Result{}, obs.redisErr // transient: back off and retry
	case lagsReachable(obs.lagging):
		// Soon, without the growing backoff of an error: a replica in the middle of its sync
		// is usually done within seconds. Failed nodes are left to the watch.
		return ctrl.Result{RequeueAfter: lagRetry}, nil
	}
	return ctrl.Result{RequeueAfter: r.resyncPeriod()}, nil
}

// writeStatus writes status only when it changed, and records an event for each condition
// whose status changed.
func (r *NotificationChannelReconciler) writeStatus(ctx context.Context, ch *heraldv1.NotificationChannel, status heraldv1.NotificationChannelStatus) error {
	if equality.Semantic.DeepEqual(status, ch.Status) {
		return nil
	}
	orig := ch.DeepCopy()
	ch.Status = status
	if err := r.Status().Patch(ctx, ch, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	r.recordTransitions(ch, orig.Status.Conditions, status.Conditions)
	return nil
}

// lagRetry is how soon a channel with a lagging node that still answers is tried again.
const lagRetry = 2 * time.Second

func lagsReachable(lags []redisconf.Lag) bool {
	for _, l := range lags {
		if !l.Node.Failed() {
			return true
		}
	}
	return false
}

func (r *NotificationChannelReconciler) reconcileTimeout() time.Duration {
	if r.ReconcileTimeout > 0 {
		return r.ReconcileTimeout
	}
	return 2 * time.Minute
}

func (r *NotificationChannelReconciler) resyncPeriod() time.Duration {
	if r.ResyncPeriod > 0 {
		return r.ResyncPeriod
	}
	return 60 * time.Second
}

func (r *NotificationChannelReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the reconciler; it also wakes on changes to the objects it owns, so
// a hand-edited or deleted child is restored at once, and on changes the Redis watch sees.
func (r *NotificationChannelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.redisEvents = make(chan event.GenericEvent, 1024)
	interval := r.RedisWatchInterval
	if interval <= 0 {
		interval = 3 * time.Second
	}
	// A connection set no channel touched for a few resyncs belongs to a Redis nobody uses now.
	idle := max(10*time.Minute, 3*r.resyncPeriod())
	watch := manager.RunnableFunc(func(ctx context.Context) error {
		r.Redis.Watch(ctx, interval, idle, func(key string) {
			chans := r.redisUsers.of(key)
			log.FromContext(ctx).Info("A Redis node restarted, joined or recovered: reconciling its channels", "channels", len(chans))
			for _, c := range chans {
				ch := &heraldv1.NotificationChannel{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Name}}
				select {
				case r.redisEvents <- event.GenericEvent{Object: ch}:
				case <-ctx.Done():
					return
				}
			}
		})
		return nil
	})
	if err := mgr.Add(watch); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&heraldv1.NotificationChannel{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.Service{}).
		Owns(&appsv1.Deployment{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&networkingv1.Ingress{}).
		WatchesRawSource(source.Channel(r.redisEvents, &handler.EnqueueRequestForObject{})).
		Named("notificationchannel").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Complete(r)
}

// CacheOptions keeps the manager's cache to the objects Herald owns: without it the operator
// would hold every ConfigMap and Deployment of the cluster in memory. Their label is the
// manager's mark, which the chart's admission policy herald-managed-objects lets nobody else
// set, so a tenant cannot fill the cache with objects of its own. Managed fields, which the
// manager never reads, are dropped from what it keeps. Secrets are not cached at all (the
// manager may not list them: see grantSecrets and ClientOptions).
func CacheOptions() cache.Options {
	owned := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{workloads.LabelManagedBy: workloads.ManagedBy})}
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.ConfigMap{}:             owned,
		&corev1.ServiceAccount{}:        owned,
		&rbacv1.ClusterRoleBinding{}:    owned,
		&corev1.Service{}:               owned,
		&appsv1.Deployment{}:            owned,
		&policyv1.PodDisruptionBudget{}: owned,
		&networkingv1.NetworkPolicy{}:   owned,
		&networkingv1.Ingress{}:         owned,
	}}
}

// ClientOptions reads Secrets straight from the API server: the manager may read them only in
// namespaces with channels, one at a time, so it cannot cache them.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}}
}

// redisUsers records which channels use which Redis (by redisconf.Options.Key), so that a change
// the watch sees reaches exactly those channels.
type redisUsers struct {
	mu    sync.Mutex
	byKey map[string]map[types.NamespacedName]struct{}
	keyOf map[types.NamespacedName]string
}

// use records that ch uses the Redis of key, and no other.
func (u *redisUsers) use(ch types.NamespacedName, key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byKey == nil {
		u.byKey, u.keyOf = map[string]map[types.NamespacedName]struct{}{}, map[types.NamespacedName]string{}
	}
	if old, ok := u.keyOf[ch]; ok && old != key {
		delete(u.byKey[old], ch)
	}
	if u.byKey[key] == nil {
		u.byKey[key] = map[types.NamespacedName]struct{}{}
	}
	u.byKey[key][ch], u.keyOf[ch] = struct{}{}, key
}

// forget drops a deleted channel.
func (u *redisUsers) forget(ch types.NamespacedName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if key, ok := u.keyOf[ch]; ok {
		delete(u.byKey[key], ch)
		delete(u.keyOf, ch)
	}
}

func (u *redisUsers) of(key string) []types.NamespacedName {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Collect(maps.Keys(u.byKey[key]))
}
