#!/usr/bin/env bash
# Starts, checks and stops a local Redis Cluster for tests and the local stack: 3 masters and
# 3 replicas of Debian's redis-server on one address of this machine (127.0.0.1 unless
# REDIS_CLUSTER_HOST says otherwise, e.g. the local node's bridge, which pods reach), ports
# BASE..BASE+5 (default 7001..7006).
#
#   hack/redis-cluster.sh up       install redis-server if missing, start, wait until healthy
#   hack/redis-cluster.sh down     stop the nodes this script started (by PID) and remove data
#   hack/redis-cluster.sh status   print each node's role and cluster state
#
# Environment: REDIS_CLUSTER_BASE_PORT (7001), REDIS_CLUSTER_DIR (a directory under the cache),
# REDIS_CLUSTER_NODE_TIMEOUT (2000 ms; a replica takes over whatever the age of its data,
# cluster-replica-validity-factor 0, so a failover test never depends on how long a replica
# lagged on a busy machine), REDIS_CLUSTER_TLS (1: the nodes speak only TLS, to
# clients, to each other and to their replicas, and ask clients for a certificate; `up` makes a
# CA, a server certificate for the host address and a client certificate with openssl in
# $REDIS_CLUSTER_DIR/tls; clients trust tls/ca.crt and present tls/client.crt + tls/client.key;
# a second CA, tls/relay-ca.crt + .key, is for the certificates an operator issues its relays,
# and the nodes trust both, tls/trusted.crt),
# REDIS_CLUSTER_PASSWORD (the default user's password, and the one replicas give their master;
# written to $REDIS_CLUSTER_DIR/auth.conf, mode 600, never on a command line; empty: none).
set -euo pipefail

BASE=${REDIS_CLUSTER_BASE_PORT:-7001}
HOST=${REDIS_CLUSTER_HOST:-127.0.0.1}
# Protected mode only lets loopback clients in; an address of the local node's bridge is for
# its pods, which are on this machine too.
PROTECTED=yes
[ "$HOST" = 127.0.0.1 ] || PROTECTED=no
DIR=${REDIS_CLUSTER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herald/redis-cluster-$BASE}
NODE_TIMEOUT=${REDIS_CLUSTER_NODE_TIMEOUT:-2000}
PORTS=$(seq "$BASE" $((BASE + 5)))
TLS_DIR=$DIR/tls
TLS_CLI=()
if [ "${REDIS_CLUSTER_TLS:-}" = 1 ]; then
	TLS_CLI=(--tls --cacert "$TLS_DIR/ca.crt" --cert "$TLS_DIR/client.crt" --key "$TLS_DIR/client.key")
fi

# redis-cli reads the password from the environment, not from its command line. It goes into
# a quoted config line, so it may not hold a quote, a backslash or a line break.
case "${REDIS_CLUSTER_PASSWORD:-}" in
*'"'* | *'\'* | *$'\n'*) echo "redis-cluster: REDIS_CLUSTER_PASSWORD may not hold \", \\ or a line break" >&2; exit 2 ;;
esac
[ -z "${REDIS_CLUSTER_PASSWORD:-}" ] || export REDISCLI_AUTH=$REDIS_CLUSTER_PASSWORD
AUTH_CONF=$DIR/auth.conf

log() { echo "redis-cluster: $*" >&2; }
cli() { redis-cli "${TLS_CLI[@]}" -h "$HOST" -p "$1" "${@:2}"; }

# listen_args PORT: how a node listens, in plain TCP or TLS only.
listen_args() {
	if [ ${#TLS_CLI[@]} -eq 0 ]; then
		echo --port "$1"
	else
		echo --port 0 --tls-port "$1" --tls-cluster yes --tls-replication yes --tls-auth-clients yes \
			--tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/trusted.crt"
	fi
}

# make_certs: a throw-away CA, and a server certificate for $HOST (nodes also present it to
# each other) and a client certificate signed by it; and a CA of the relays' own.
make_certs() {
	mkdir -p "$TLS_DIR"
	(
		cd "$TLS_DIR"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
			-subj /CN=herald-test-ca -keyout ca.key -out ca.crt
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
			-keyout server.key -out server.csr
		printf 'subjectAltName=IP:%s\n' "$HOST" >server.ext
		openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
			-extfile server.ext -out server.crt
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=herald-test-client \
			-keyout client.key -out client.csr
		openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -out client.crt
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
			-subj /CN=herald-test-relay-ca -keyout relay-ca.key -out relay-ca.crt
		cat ca.crt relay-ca.crt >trusted.crt
	) >"$DIR/certs.log" 2>&1 || { cat "$DIR/certs.log" >&2; return 1; }
}

# await DESCRIPTION SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds.
await() {
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "timed out waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

install() {
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v openssl >/dev/null && return
	log "installing Debian's redis-server and openssl"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq redis-server openssl >&2
	# The package starts a system-wide server on 6379; this project never uses it.
	if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
		systemctl stop redis-server || true
	fi
}

node_ok() { [ "$(cli "$1" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')" = ok ]; }
all_ok() { for p in $PORTS; do node_ok "$p" || return 1; done; }
replicas_synced() {
	local n=0 p
	for p in $PORTS; do
		if cli "$p" info replication | tr -d '\r' | grep -q '^role:slave'; then
			cli "$p" info replication | tr -d '\r' | grep -q '^master_link_status:up' || return 1
			cli "$p" info replication | tr -d '\r' | grep -q '^master_sync_in_progress:0' || return 1
			n=$((n + 1))
		fi
	done
	[ "$n" -eq 3 ]
}

up() {
	install
	if all_ok 2>/dev/null; then
		log "already up on $HOST:$BASE-$((BASE + 5))"
		return
	fi
	down_quiet
	mkdir -p "$DIR"
	[ ${#TLS_CLI[@]} -eq 0 ] || make_certs
	# A config file every node starts from: the password, when there is one.
	(
		umask 077
		: >"$AUTH_CONF"
		if [ -n "${REDIS_CLUSTER_PASSWORD:-}" ]; then
			printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDIS_CLUSTER_PASSWORD" "$REDIS_CLUSTER_PASSWORD" >"$AUTH_CONF"
		fi
	)
	for p in $PORTS; do
		mkdir -p "$DIR/$p"
		# shellcheck disable=SC2046 # listen_args is a list of words
		redis-server "$AUTH_CONF" $(listen_args "$p") --bind "$HOST" --protected-mode "$PROTECTED" --cluster-enabled yes \
			--cluster-config-file "nodes-$p.conf" --cluster-node-timeout "$NODE_TIMEOUT" \
			--cluster-replica-validity-factor 0 \
			--appendonly yes --save "" --dir "$DIR/$p" --daemonize yes \
			--pidfile "$DIR/$p/redis.pid" --logfile "$DIR/$p/redis.log"
	done
	for p in $PORTS; do await "node $p" 20 cli "$p" ping; done
	local addrs=()
	for p in $PORTS; do addrs+=("$HOST:$p"); done
	redis-cli "${TLS_CLI[@]}" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
		{ cat "$DIR/create.log" >&2; return 1; }
	await "cluster_state:ok on every node" 60 all_ok
	await "replicas in sync" 60 replicas_synced
	log "up on $HOST:$BASE-$((BASE + 5)) (data in $DIR)"
}

# down_quiet stops only the servers whose pid files this script wrote: all of them at once,
# then waits up to 5 s for each before SIGKILL.
down_quiet() {
	local p pid pids=()
	for p in $PORTS; do
		[ -f "$DIR/$p/redis.pid" ] || continue
		pid=$(cat "$DIR/$p/redis.pid")
		if kill -0 "$pid" 2>/dev/null && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	done
	rm -rf "$DIR"
}

down() {
	down_quiet
	log "down"
}

status() {
	local p
	for p in $PORTS; do
		printf '%s:%s ' "$HOST" "$p"
		if cli "$p" ping >/dev/null 2>&1; then
			echo "$(cli "$p" info replication | tr -d '\r' | sed -n 's/^role://p') $(cli "$p" cluster info | tr -d '\r' | grep '^cluster_state')"
		else
			echo "down"
		fi
	done
	all_ok
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
