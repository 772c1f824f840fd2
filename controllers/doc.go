// Package controllers holds the NotificationChannel reconciler: it turns each channel into Redis
// Cluster configuration and relay workloads, and reports what it found in the channel's status.
//
// The reconciler reads like a pipeline: get -> (deleting? finalize) -> gather -> decide -> apply
// -> compute status -> write status only if it changed. Status is rebuilt from the world on every
// pass, never read back as input.
package controllers
