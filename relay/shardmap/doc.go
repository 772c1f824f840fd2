// Package shardmap is the contract between the operator and the relay: the shard map the
// operator publishes for each channel, and how keys, live channels, workloads and ACL users are
// named and hashed. Both sides import this package and nothing else of each other, so a name is
// spelled in exactly one place.
package shardmap
