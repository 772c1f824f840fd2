// Package workloads builds the Kubernetes objects a NotificationChannel owns: the shard map
// ConfigMap, the relay credentials Secret, one relay Deployment and Service per shard, the
// channel-wide Service, PodDisruptionBudgets and a NetworkPolicy. The builders are pure: the same
// channel and parameters always give the same objects, so the reconciler can compare them with
// what the cluster holds and write only on drift.
package workloads
