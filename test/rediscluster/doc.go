// Package rediscluster tests hack/redis-cluster.sh, the script that starts the Redis Cluster every
// other Redis test and the local stack rely on.
package rediscluster
