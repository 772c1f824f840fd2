// Package v1alpha1 holds the NotificationChannel API (group notifications.herald.dev).
//
// A NotificationChannel says what a team wants from a real-time channel: how many shards, whether
// delivery is Live (pub/sub, at-most-once) or Durable (stream + pub/sub, gapless resume within
// retention), how big a message may be and who may use it. The operator owns how: placement on
// Redis Cluster masters, ACL users and relay workloads. Validation lives in the CRD itself
// (OpenAPI and CEL), so the API server rejects a bad object with a message that names the field.
//
// +kubebuilder:object:generate=true
// +groupName=notifications.herald.dev
package v1alpha1
