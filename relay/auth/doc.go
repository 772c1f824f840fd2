// Package auth authenticates the callers of a shard relay: sidecars presenting a projected
// ServiceAccount token for the channel (audience "herald.dev/<namespace>/<channel>") as `Authorization: Bearer <token>`.
//
// TokenReviewer asks the API server (TokenReview, with the audience) who a token belongs to and
// remembers the answer briefly; the namespace comes from the service account username
// `system:serviceaccount:<namespace>:<name>`. Checker turns that into the HTTP answer the relay
// gives: no or bad token 401, a namespace the channel does not admit (shardmap.Map.Allows) 403,
// the API server unreachable 503. The relay's pod needs permission to create TokenReviews
// (the built-in ClusterRole system:auth-delegator grants it).
package auth
