package controllers

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/relay/shardmap"
)

// verdict is one condition's value.
type verdict struct {
	status  metav1.ConditionStatus
	reason  string
	message string
}

// computeStatus rebuilds the status from one observation. Conditions keep their
// lastTransitionTime when their status does not change.
func computeStatus(ch *heraldv1.NotificationChannel, o *observation) heraldv1.NotificationChannelStatus {
	status := heraldv1.NotificationChannelStatus{
		ObservedGeneration: ch.Generation,
		Conditions:         append([]metav1.Condition(nil), ch.Status.Conditions...),
		Shards:             shardStatuses(ch, o),
	}
	meta.RemoveStatusCondition(&status.Conditions, heraldv1.ConditionPaused) // reconciling again
	if o.placed() {
		status.Endpoint = fmt.Sprintf("http://%s.%s.svc:%d", shardmap.ChannelServiceName(ch.Name), ch.Namespace, shardmap.RelayPort)
	}
	redis := redisConfigured(o)
	relays := relaysAvailable(ch, o)
	edge := verdict{status: metav1.ConditionTrue} // no spec.edge: nothing to wait for
	if ch.Spec.Edge != nil {
		edge = edgeAvailable(ch, o)
		if o.edge != nil {
			status.Edge = &heraldv1.EdgeStatus{Endpoint: fmt.Sprintf("http://%s.%s.svc:%d", workloads.EdgeName(ch), ch.Namespace, shardmap.RelayPort),
				URLs: workloads.EdgeURLs(ch), ReadyReplicas: o.edge.ready}
		}
	} else {
		meta.RemoveStatusCondition(&status.Conditions, heraldv1.ConditionEdgeAvailable)
	}
	type condition struct {
		typ string
		v   verdict
	}
	conditions := []condition{
		{heraldv1.ConditionReady, ready(redis, relays, edge)},
		{heraldv1.ConditionRedisConfigured, redis},
		{heraldv1.ConditionRelaysAvailable, relays},
		{heraldv1.ConditionDegraded, degraded(ch, o)},
	}
	if ch.Spec.Edge != nil {
		conditions = append(conditions, condition{heraldv1.ConditionEdgeAvailable, edge})
	}
	for _, c := range conditions {
		typ, v := c.typ, c.v
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: typ, Status: v.status, Reason: v.reason, Message: v.message, ObservedGeneration: ch.Generation,
		})
	}
	return status
}

func shardStatuses(ch *heraldv1.NotificationChannel, o *observation) []heraldv1.ShardStatus {
	if !o.placed() {
		return nil
	}
	shards := make([]heraldv1.ShardStatus, len(o.tags))
	for i, tag := range o.tags {
		s := heraldv1.ShardStatus{
			Index:       int32(i),
			HashTag:     tag,
			Slot:        int32(shardmap.Slot(tag)),
			LiveChannel: shardmap.LiveChannel(tag),
			Workload:    shardmap.ShardDeploymentName(ch.Name, i),
		}
		if !o.topo.Cluster && len(o.topo.Masters) > 0 {
			s.Slot = 0
		}
		if ch.Spec.Delivery == heraldv1.DeliveryDurable {
			s.Stream = shardmap.StreamKey(tag)
		}
		if m, ok := o.topo.Owner(shardmap.Slot(tag)); ok {
			s.Node = m.Addr
		} else if i < len(ch.Status.Shards) {
			s.Node = ch.Status.Shards[i].Node // Redis unreachable: the last node seen
		}
		if i < len(o.relays) {
			s.ReadyReplicas = o.relays[i].ready
		}
		shards[i] = s
	}
	return shards
}

// redisConfigured: True when placement, streams and ACL users are in place on every node.
func redisConfigured(o *observation) verdict {
	if o.redisErr != nil {
		return verdict{metav1.ConditionFalse, o.redisReason, sentence(o.redisErr.Error())}
	}
	if o.childErr != nil && o.password == "" {
		return verdict{metav1.ConditionUnknown, heraldv1.ReasonProvisioning, sentence(o.childErr.Error())}
	}
	if len(o.lagging) > 0 {
		lags := make([]string, len(o.lagging))
		for i, l := range o.lagging {
			lags[i] = l.String()
		}
		return verdict{metav1.ConditionFalse, heraldv1.ReasonNodesLagging,
			fmt.Sprintf("%d Redis nodes lack the ACL user or the publish function: %s.", len(o.lagging), strings.Join(lags, "; "))}
	}
	return verdict{metav1.ConditionTrue, heraldv1.ReasonAclApplied,
		fmt.Sprintf("%d shards placed on %s; streams and the ACL user are in place on every node.", len(o.tags), o.topo)}
}

// relaysAvailable: True when every shard's Deployment has an available relay.
func relaysAvailable(ch *heraldv1.NotificationChannel, o *observation) verdict {
	if o.childErr != nil {
		return verdict{metav1.ConditionFalse, heraldv1.ReasonWorkloadsFailed, sentence(o.childErr.Error())}
	}
	if len(o.relays) == 0 {
		return verdict{metav1.ConditionUnknown, heraldv1.ReasonProvisioning, "The relay Deployments have not been created yet."}
	}
	var missing []string
	var ready int32
	for i, rs := range o.relays {
		ready += rs.ready
		if rs.available < 1 {
			missing = append(missing, fmt.Sprintf("shard %d (%s)", i, rs.workload))
		}
	}
	want := workloads.Replicas(ch) * int32(len(o.relays))
	if len(missing) > 0 {
		return verdict{metav1.ConditionFalse, heraldv1.ReasonRelaysUnavailable,
			fmt.Sprintf("No relay is available for %s; %d of %d relays are ready.", strings.Join(missing, ", "), ready, want)}
	}
	return verdict{metav1.ConditionTrue, heraldv1.ReasonRelaysAvailable,
		fmt.Sprintf("Every shard has an available relay; %d of %d relays are ready.", ready, want)}
}

// edgeAvailable: True when spec.edge's Deployment has an available pod and its route exists.
func edgeAvailable(ch *heraldv1.NotificationChannel, o *observation) verdict {
	switch {
	case o.childErr != nil:
		return verdict{metav1.ConditionFalse, heraldv1.ReasonWorkloadsFailed, sentence(o.childErr.Error())}
	case o.edge == nil:
		return verdict{metav1.ConditionUnknown, heraldv1.ReasonProvisioning, "The edge Deployment has not been created yet."}
	case o.edge.noGatewayAPI:
		return verdict{metav1.ConditionFalse, heraldv1.ReasonGatewayAPIMissing,
			"spec.edge.httpRoute asks for an HTTPRoute, and this cluster serves no gateway.networking.k8s.io/v1 HTTPRoutes: install the Gateway API, or use spec.edge.ingress. The edge runs behind its Service " + workloads.EdgeName(ch) + "."}
	case o.edge.available < 1:
		return verdict{metav1.ConditionFalse, heraldv1.ReasonEdgeUnavailable,
			fmt.Sprintf("No edge pod of Deployment %s is available yet; %d are ready.", workloads.EdgeName(ch), o.edge.ready)}
	}
	return verdict{metav1.ConditionTrue, heraldv1.ReasonEdgeAvailable,
		fmt.Sprintf("%d edge pods are ready behind Service %s.", o.edge.ready, workloads.EdgeName(ch))}
}

// degraded: True when the channel works with less than it asked for.
func degraded(ch *heraldv1.NotificationChannel, o *observation) verdict {
	// Shards share masters: one master's failure stops several shards at once.
	if o.topo.Cluster && len(o.topo.Masters) < len(o.tags) {
		return verdict{metav1.ConditionTrue, heraldv1.ReasonFewerMastersThanShards,
			fmt.Sprintf("%d shards share %d masters.", len(o.tags), len(o.topo.Masters))}
	}
	if len(o.lagging) > 0 {
		return verdict{metav1.ConditionTrue, heraldv1.ReasonNodesLagging,
			fmt.Sprintf("%d Redis nodes lack the ACL user or the publish function: a failover to one of them stops its shard until it has them.", len(o.lagging))}
	}
	// The channel's own memory limit leaves too little room for its largest messages.
	if res := ch.Spec.Relay.Resources; res != nil {
		if limit, ok := res.Limits[corev1.ResourceMemory]; ok {
			if floor := workloads.RelayMemoryFloor(ch); limit.Cmp(floor) < 0 {
				return verdict{metav1.ConditionTrue, heraldv1.ReasonMemoryBelowMessageSize,
					fmt.Sprintf("spec.relay.resources.limits.memory %s is below the %s that messages of up to %d bytes (spec.maxMessageBytes) need: a few large messages at once can get the relays OOM-killed.",
						limit.String(), floor.String(), maxMessageBytes(ch))}
			}
		}
	}
	// Some shard runs with fewer relays than asked for.
	for i, rs := range o.relays {
		if rs.ready < workloads.Replicas(ch) {
			return verdict{metav1.ConditionTrue, heraldv1.ReasonReplicasUnavailable,
				fmt.Sprintf("Shard %d has %d of %d relays ready.", i, rs.ready, workloads.Replicas(ch))}
		}
	}
	return verdict{metav1.ConditionFalse, heraldv1.ReasonAsExpected, "Nothing is degraded."}
}

// ready: True when Redis is configured and every shard has a relay; otherwise the first reason.
// Lagging nodes do not count: the masters serve the channel (Degraded says so).
func ready(redis, relays, edge verdict) verdict {
	switch {
	case redis.status != metav1.ConditionTrue && redis.reason != heraldv1.ReasonNodesLagging:
		return verdict{metav1.ConditionFalse, redis.reason, redis.message}
	case relays.status != metav1.ConditionTrue:
		return verdict{metav1.ConditionFalse, relays.reason, relays.message}
	case edge.status != metav1.ConditionTrue:
		return verdict{metav1.ConditionFalse, edge.reason, edge.message}
	}
	return verdict{metav1.ConditionTrue, heraldv1.ReasonReconciled, "The channel is ready: publish and subscribe through its relays."}
}

// recordTransitions emits one event per condition whose status changed.
func (r *NotificationChannelReconciler) recordTransitions(ch *heraldv1.NotificationChannel, before, after []metav1.Condition) {
	if r.Recorder == nil {
		return
	}
	for _, c := range after {
		old := meta.FindStatusCondition(before, c.Type)
		if old != nil && old.Status == c.Status && old.Reason == c.Reason {
			continue
		}
		typ := corev1.EventTypeNormal
		if (c.Type == heraldv1.ConditionDegraded) == (c.Status == metav1.ConditionTrue) {
			typ = corev1.EventTypeWarning
		}
		if c.Status == metav1.ConditionUnknown {
			continue
		}
		r.Recorder.Eventf(ch, nil, typ, c.Reason, c.Type, "%s=%s: %s", c.Type, c.Status, c.Message)
	}
}

// sentence makes an error message read as a sentence in kubectl output.
func sentence(s string) string {
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// maxMessageBytes is the channel's message size limit, its default included.
func maxMessageBytes(ch *heraldv1.NotificationChannel) int64 {
	if ch.Spec.MaxMessageBytes > 0 {
		return int64(ch.Spec.MaxMessageBytes)
	}
	return shardmap.DefaultMaxMessageBytes
}
