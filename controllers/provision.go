package controllers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/controllers/workloads"
	"github.com/heraldhq/herald/relay/shardmap"
)

// observation is what one reconcile learned about the world; status is computed from it alone.
type observation struct {
	redisAddrs  []string           // the Redis the channel uses
	redisCA     []byte             // the CA bundle of spec.redis.tls.caSecretRef, if any
	topo        redisconf.Topology // masters and their slots; empty when Redis was unreachable
	tags        []string           // one hash tag per shard; nil until placed
	redisErr    error              // why Redis is not configured, if it is not
	redisReason string             // the condition reason for redisErr
	childErr    error              // why the Kubernetes children could not be applied
	password    string             // the relay user's password
	lagging     []redisconf.Lag    // nodes without the user or the function yet; the rest are fine
	relays      []relayState       // one per shard, once the Deployments exist
	edge        *edgeState         // spec.edge's Deployment, once it exists
}

// relayState is what a shard's relay Deployment reports.
type relayState struct {
	workload  string
	ready     int32
	available int32
}

func (o *observation) placed() bool { return len(o.tags) > 0 }

func (o *observation) fail(reason string, err error) {
	o.redisReason, o.redisErr = reason, err
}

// checkOwner makes sure the channel's data in Redis is its namespace's: the owner record
// (shardmap.OwnerKey) names the UID of the namespace that wrote it, and is written for a
// channel that has none. The channel's user may read every key of its name, retained ones
// included, so data a namespace of this name left before it was deleted and created again (by
// another team, perhaps) is refused unless the platform team lets channels adopt it. A channel
// that placed its shards itself (placed: they are in its status) wrote what is there; its
// pass costs one read of the record. It returns the reason to fail with, or "" and an error to
// retry.
func (r *NotificationChannelReconciler) checkOwner(ctx context.Context, conn *redisconf.Conn, topo redisconf.Topology, ch *heraldv1.NotificationChannel, placed bool) (string, error) {
	key := shardmap.OwnerKey(ch.Namespace, ch.Name)
	m, ok := topo.Owner(shardmap.Slot(key))
	if !ok {
		return heraldv1.ReasonPlacementFailed, fmt.Errorf("slot %d of the channel's owner record has no master", shardmap.Slot(key))
	}
	owner, err := conn.Owner(ctx, m.Addr, key)
	if err != nil {
		return heraldv1.ReasonRedisCommandFailed, fmt.Errorf("reading %s: %w", key, err)
	}
	if placed && owner != "" {
		return "", nil
	}
	var ns corev1.Namespace
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: ch.Namespace}, &ns); err != nil {
		return "", fmt.Errorf("reading namespace %s: %w", ch.Namespace, err)
	}
	switch {
	case owner == string(ns.UID):
		return "", nil
	case owner != "" && !r.AdoptRetainedStreams:
		return heraldv1.ReasonRetainedByAnotherNamespace, fmt.Errorf("Redis holds data a channel %s/%s left before namespace %s was deleted "+
			"and created again (its owner %s is not this namespace's UID %s); delete its keys (%s) or start the operator with --adopt-retained-streams",
			ch.Namespace, ch.Name, ch.Namespace, owner, ns.UID, shardmap.KeyPattern(ch.Namespace, ch.Name))
	}
	if err := conn.SetOwner(ctx, m.Addr, key, string(ns.UID)); err != nil {
		return heraldv1.ReasonRedisCommandFailed, fmt.Errorf("writing %s: %w", key, err)
	}
	return "", nil
}

// provision places the shards and makes Redis hold what the channel needs: streams and the ACL
// user on every node. Each step reads first and writes only what is missing.
func (r *NotificationChannelReconciler) provision(ctx context.Context, ch *heraldv1.NotificationChannel) observation {
	var o observation
	known := knownTags(ch)
	if err := r.Policy.check(ch, r.RelayImage); err != nil {
		o.fail(heraldv1.ReasonNotAllowed, fmt.Errorf("refused by the operator's policy: %w", err))
		return o
	}
	if err := r.grantSecrets(ctx, ch); err != nil {
		o.childErr = err // the Secrets of the namespace are out of reach: try again
		return o
	}
	opts, ca, err := r.redisOptions(ctx, ch)
	if err != nil {
		o.fail(heraldv1.ReasonInvalidSpec, err)
		return o
	}
	o.redisAddrs, o.redisCA = opts.Addrs, ca
	r.redisUsers.use(client.ObjectKeyFromObject(ch), opts.Key())
	conn := r.Redis.Get(opts)
	topo, nodes, err := conn.Discover(ctx)
	if err != nil {
		o.fail(heraldv1.ReasonRedisUnreachable, fmt.Errorf("cannot reach Redis at %s: %w", strings.Join(opts.Addrs, ", "), err))
		if complete(known) {
			o.tags = known // the workloads do not depend on Redis being up
		}
		return o
	}
	o.topo = topo
	r.libraries.saw(client.ObjectKeyFromObject(ch), nodes)
	if reason, err := r.checkOwner(ctx, conn, topo, ch, complete(known)); err != nil {
		if reason == "" {
			o.childErr = err // reading the namespace failed: try again
		} else {
			o.fail(reason, err)
		}
		return o
	}
	if !complete(known) && ch.Spec.Delivery == heraldv1.DeliveryDurable {
		retained, err := conn.RetainedTags(ctx, nodes, ch.Namespace, ch.Name)
		if err != nil {
			o.fail(heraldv1.ReasonRedisCommandFailed, err)
			return o
		}
		for i, tag := range retained {
			if i < len(known) && known[i] == "" {
				known[i] = tag
				log.FromContext(ctx).Info("Adopted a retained stream", "shard", i, "stream", shardmap.StreamKey(tag))
			}
		}
	}
	tags, err := redisconf.Place(ch.Namespace, ch.Name, known, topo)
	if err != nil {
		o.fail(heraldv1.ReasonPlacementFailed, fmt.Errorf("placing shards on %s: %w", topo, err))
		return o
	}
	o.tags = tags

	if o.password, err = r.ensureCredentials(ctx, ch); err != nil {
		o.childErr = err
		return o
	}
	user := redisconf.User{
		Name:       shardmap.ACLUser(ch.Namespace, ch.Name),
		Password:   o.password,
		KeyPattern: shardmap.KeyPattern(ch.Namespace, ch.Name),
		Commands:   shardmap.RelayCommands,
	}
	// A node that cannot be written now does not hold up the others: it is shown as lagging and
	// tried again soon. A master that answers but refuses is a plain failure.
	written, lagging := conn.EnsureUser(ctx, nodes, user)
	if len(written) > 0 {
		log.FromContext(ctx).Info("Wrote ACL user", "user", user.Name, "nodes", written)
	}
	// The publish function the user calls instead of running Lua of its own.
	written, libLagging := conn.EnsureFunction(ctx, nodes, shardmap.PublishFunction, shardmap.PublishLibraryName, shardmap.PublishLibrary)
	if len(written) > 0 {
		log.FromContext(ctx).Info("Loaded the publish function library", "nodes", written)
	}
	o.lagging = append(lagging, libLagging...)
	for _, l := range o.lagging {
		if l.Node.Master && !l.Node.Failed() {
			o.fail(heraldv1.ReasonRedisCommandFailed, fmt.Errorf("%s: %w", l.Node.Addr, l.Err))
			return o
		}
	}
	if len(libLagging) == 0 {
		r.pruneLibraries(ctx, conn, nodes)
	}
	if ch.Spec.Delivery == heraldv1.DeliveryDurable {
		for i, tag := range tags {
			m, ok := topo.Owner(shardmap.Slot(tag))
			if !ok {
				o.fail(heraldv1.ReasonPlacementFailed, fmt.Errorf("slot %d of shard %d has no master", shardmap.Slot(tag), i))
				return o
			}
			created, err := conn.EnsureStream(ctx, m.Addr, shardmap.StreamKey(tag))
			if err != nil {
				o.fail(heraldv1.ReasonRedisCommandFailed, err)
				return o
			}
			if created {
				log.FromContext(ctx).Info("Created stream", "shard", i, "stream", shardmap.StreamKey(tag), "node", m.Addr)
			}
		}
	}
	return o
}

// knownTags are the hash tags chosen earlier, from status (where they are recorded once chosen).
// A tag is never chosen again: moving a shard would orphan its stream.
func knownTags(ch *heraldv1.NotificationChannel) []string {
	tags := make([]string, ch.Spec.ShardCount())
	for _, s := range ch.Status.Shards {
		if int(s.Index) < len(tags) {
			tags[s.Index] = s.HashTag
		}
	}
	return tags
}

func complete(tags []string) bool {
	for _, t := range tags {
		if t == "" {
			return false
		}
	}
	return len(tags) > 0
}

// ensureCredentials returns the relay user's password, creating the Secret that holds it on
// first use. The Secret is the source of truth: Redis is made to match it, never the reverse.
func (r *NotificationChannelReconciler) ensureCredentials(ctx context.Context, ch *heraldv1.NotificationChannel) (string, error) {
	var s corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: ch.Namespace, Name: shardmap.CredentialsSecretName(ch.Name)}, &s)
	// A Secret of an earlier channel of the same name (the garbage collector has not removed it
	// yet) holds a password that channel's namespace knew: this channel gets a new one.
	if err == nil && len(s.Data[workloads.SecretPasswordKey]) > 0 && metav1.IsControlledBy(&s, ch) {
		return string(s.Data[workloads.SecretPasswordKey]), nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("reading the relay credentials: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	password := base64.RawURLEncoding.EncodeToString(b)
	desired := workloads.Secret(ch, password)
	if err == nil { // exists without a password, or an earlier channel's: repair it
		s.Data, s.OwnerReferences = desired.Data, desired.OwnerReferences
		return password, r.Update(ctx, &s)
	}
	if err := r.Create(ctx, desired); err != nil {
		return "", fmt.Errorf("creating the relay credentials: %w", err)
	}
	return password, nil
}

// redisOptions says how to reach the channel's Redis: the operator's default, or spec.redis with
// credentials from a Secret in the channel's namespace. It also returns the CA bundle of
// spec.redis.tls.caSecretRef (nil without one): relays read it only at start, so a new one must
// roll them.
func (r *NotificationChannelReconciler) redisOptions(ctx context.Context, ch *heraldv1.NotificationChannel) (opts redisconf.Options, ca []byte, err error) {
	spec := ch.Spec.Redis
	if spec == nil {
		if len(r.DefaultRedis.Options.Addrs) == 0 {
			return opts, nil, errors.New("spec.redis is not set and the operator has no default Redis (--redis-addresses)")
		}
		opts = r.DefaultRedis.Options
		opts.MaxNodes = r.MaxRedisNodes
		return opts, nil, nil
	}
	allowed := r.Policy.RedisAddresses
	opts = redisconf.Options{Addrs: spec.Addresses, MaxNodes: r.MaxRedisNodes,
		AllowNode: addressList(allowed).allows}
	if ref := spec.CredentialsSecretRef; ref != nil {
		data, err := r.secretData(ctx, ch.Namespace, ref.Name)
		if err != nil {
			return opts, nil, fmt.Errorf("spec.redis.credentialsSecretRef: %w", err)
		}
		opts.Username = string(data[ref.UsernameKey])
		opts.Password = string(data[ref.PasswordKey])
		if opts.Password == "" {
			return opts, nil, fmt.Errorf("spec.redis.credentialsSecretRef: Secret %s has no key %q", ref.Name, ref.PasswordKey)
		}
	}
	if t := spec.TLS; t != nil {
		cfg := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in, documented as for testing only
		id := sha256.New()
		fmt.Fprintf(id, "%s|%t|", t.ServerName, t.InsecureSkipVerify)
		if ref := t.CASecretRef; ref != nil {
			data, err := r.secretData(ctx, ch.Namespace, ref.Name)
			if err != nil {
				return opts, nil, fmt.Errorf("spec.redis.tls.caSecretRef: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(data[ref.Key]) {
				return opts, nil, fmt.Errorf("spec.redis.tls.caSecretRef: key %q of Secret %s holds no PEM certificate", ref.Key, ref.Name)
			}
			cfg.RootCAs = pool
			ca = data[ref.Key]
			id.Write(ca)
		}
		if ref := t.ClientCertSecretRef; ref != nil {
			data, err := r.secretData(ctx, ch.Namespace, ref.Name)
			if err != nil {
				return opts, nil, fmt.Errorf("spec.redis.tls.clientCertSecretRef: %w", err)
			}
			pair, err := tls.X509KeyPair(data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey])
			if err != nil {
				return opts, nil, fmt.Errorf("spec.redis.tls.clientCertSecretRef: keys %s and %s of Secret %s: %w", corev1.TLSCertKey, corev1.TLSPrivateKeyKey, ref.Name, err)
			}
			cfg.Certificates = []tls.Certificate{pair}
			id.Write(data[corev1.TLSCertKey])
		}
		opts.TLS, opts.TLSID = cfg, hex.EncodeToString(id.Sum(nil)[:8])
	}
	return opts, ca, nil
}

func (r *NotificationChannelReconciler) secretData(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	var s corev1.Secret
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("Secret %s/%s not found", namespace, name)
		}
		return nil, err
	}
	return s.Data, nil
}
