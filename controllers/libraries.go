package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/relay/shardmap"
)

// libraryJanitor removes the publish function libraries of earlier Herald versions from a Redis
// once no relay can call them any more. Each version loads its own library beside the others
// (an upgrade drops no publish), so without it they would pile up, one per upgrade.
//
// A library is removed when, for PruneLibrariesAfter on end, every channel on that Redis had its
// relay Deployments fully rolled out to the manager's own image (OwnImage): every relay pod then
// runs this build and calls this build's function, and relays of a version being rolled back to
// get theirs loaded by their own operator's first pass. Only the image the manager itself runs
// says which library its relays call: a relay image of its own (the chart's relay.image, a
// channel's spec.relay.image), a channel not yet seen on this run of the operator or a rollout
// in progress keeps every library and starts the clock again. Redis is told apart by its nodes'
// addresses as the cluster announces them, so channels that reach it by other addresses or
// with other credentials count too; relays that this operator does not manage (another Herald
// installation sharing the Redis) cannot be seen: such installations turn pruning off.
type libraryJanitor struct {
	mu          sync.Mutex
	nodesOf     map[types.NamespacedName][]string // the Redis nodes each channel's last pass found
	unusedSince map[string]map[string]time.Time   // by Redis (its sorted node addresses), by library
	lastPass    map[string]time.Time              // by Redis
}

// saw records the Redis nodes of a channel's pass.
func (j *libraryJanitor) saw(ch types.NamespacedName, nodes []redisconf.Node) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.nodesOf == nil {
		j.nodesOf = map[types.NamespacedName][]string{}
	}
	j.nodesOf[ch] = addrsOf(nodes)
}

// forget drops a deleted channel.
func (j *libraryJanitor) forget(ch types.NamespacedName) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.nodesOf, ch)
}

func addrsOf(nodes []redisconf.Node) []string {
	addrs := make([]string, 0, len(nodes))
	for _, n := range nodes {
		addrs = append(addrs, n.Addr)
	}
	slices.Sort(addrs)
	return addrs
}

// sharing are the channels whose last pass found one of addrs, and whether every channel of
// all has been seen at all.
func (j *libraryJanitor) sharing(all []heraldv1.NotificationChannel, addrs []string) (on []types.NamespacedName, unseen string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := range all {
		nn := client.ObjectKeyFromObject(&all[i])
		seen, ok := j.nodesOf[nn]
		if !ok {
			return nil, nn.String()
		}
		if slices.ContainsFunc(seen, func(a string) bool { return slices.Contains(addrs, a) }) {
			on = append(on, nn)
		}
	}
	return on, ""
}

// due says whether the Redis of id is due for a pass (at most one every interval), and
// records one.
func (j *libraryJanitor) due(id string, now time.Time, interval time.Duration) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lastPass == nil {
		j.lastPass = map[string]time.Time{}
	}
	if now.Sub(j.lastPass[id]) < interval {
		return false
	}
	j.lastPass[id] = now
	return true
}

// unused starts (or keeps) the clock of each library of libs on the Redis of id and returns
// those unused for at least after; reset stops every clock of that Redis.
func (j *libraryJanitor) unused(id string, libs []string, now time.Time, after time.Duration) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.unusedSince == nil {
		j.unusedSince = map[string]map[string]time.Time{}
	}
	since := map[string]time.Time{}
	var due []string
	for _, lib := range libs {
		t, ok := j.unusedSince[id][lib]
		if !ok {
			t = now
		}
		since[lib] = t
		if now.Sub(t) >= after {
			due = append(due, lib)
		}
	}
	j.unusedSince[id] = since
	return due
}

func (j *libraryJanitor) reset(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.unusedSince, id)
}

// earlierLibraries are the Herald libraries of libs other than this version's.
func earlierLibraries(libs map[string]bool) []string {
	var out []string
	for name := range libs {
		if name != shardmap.PublishLibraryName && (name == shardmap.LegacyLibraryName || strings.HasPrefix(name, shardmap.LibraryPrefix)) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// rolledOut says why the relay Deployment d may still run pods of another version than image,
// or "" when every one of its pods runs image.
func rolledOut(d *appsv1.Deployment, image string) string {
	if c := d.Spec.Template.Spec.Containers; len(c) == 0 || c[0].Image != image {
		return "its relays run another image"
	}
	if s := d.Status; s.ObservedGeneration < d.Generation || s.UpdatedReplicas != s.Replicas {
		return "its relays are rolling out"
	}
	return ""
}

// pruneLibraries is the janitor's pass over the Redis of a channel's pass (conn, nodes).
func (r *NotificationChannelReconciler) pruneLibraries(ctx context.Context, conn *redisconf.Conn, nodes []redisconf.Node) {
	if r.PruneLibrariesAfter <= 0 || r.OwnImage == "" || r.RelayImage != r.OwnImage {
		return
	}
	addrs := addrsOf(nodes)
	id := strings.Join(addrs, ",")
	now := r.now()
	if !r.libraries.due(id, now, min(r.PruneLibrariesAfter/2, 30*time.Second)) {
		return
	}
	logger := log.FromContext(ctx).WithValues("redis", id)
	if why, err := r.otherVersionsMayRun(ctx, addrs); err != nil || why != "" {
		r.libraries.reset(id)
		if err != nil {
			logger.Error(err, "Could not tell which relays run on the Redis; keeping every function library")
		} else {
			logger.V(1).Info("Keeping the function libraries of earlier versions", "because", why)
		}
		return
	}
	libs, err := conn.FunctionLibraries(ctx, nodes)
	if err != nil {
		r.libraries.reset(id)
		logger.V(1).Info("Keeping the function libraries of earlier versions", "because", err.Error())
		return
	}
	for _, lib := range r.libraries.unused(id, earlierLibraries(libs), now, r.PruneLibrariesAfter) {
		if err := conn.DeleteFunctionLibrary(ctx, nodes, lib); err != nil {
			logger.Error(err, "Could not remove an earlier version's function library", "library", lib)
			continue
		}
		logger.Info("Removed the publish function library of an earlier Herald version: no relay calls it any more", "library", lib, "unusedFor", r.PruneLibrariesAfter.String())
	}
}

// otherVersionsMayRun says why a relay of another version may still call its function on the
// Redis whose nodes are addrs, or "" when every relay there runs this operator's image.
func (r *NotificationChannelReconciler) otherVersionsMayRun(ctx context.Context, addrs []string) (string, error) {
	var all heraldv1.NotificationChannelList
	if err := r.List(ctx, &all); err != nil {
		return "", err
	}
	on, unseen := r.libraries.sharing(all.Items, addrs)
	if unseen != "" {
		return fmt.Sprintf("channel %s has not been provisioned by this operator yet", unseen), nil
	}
	for _, ch := range all.Items {
		if ch.Spec.Relay.Image != "" && ch.Spec.Relay.Image != r.OwnImage && slices.Contains(on, client.ObjectKeyFromObject(&ch)) {
			return fmt.Sprintf("channel %s/%s runs a relay image of its own", ch.Namespace, ch.Name), nil
		}
	}
	for _, nn := range on {
		var deps appsv1.DeploymentList
		if err := r.List(ctx, &deps, client.InNamespace(nn.Namespace),
			client.MatchingLabels{workloads.LabelChannel: nn.Name, workloads.LabelComponent: "relay"}); err != nil {
			return "", err
		}
		for i := range deps.Items {
			if why := rolledOut(&deps.Items[i], r.OwnImage); why != "" {
				return fmt.Sprintf("channel %s: %s: %s", nn, deps.Items[i].Name, why), nil
			}
		}
	}
	return "", nil
}
