#!/usr/bin/env bash
# Drains and restarts every node of a `scripts/cluster.sh` cluster in turn, under
# traffic, without a failed request: before each node goes, every node is ready and
# HAProxy sends to all of them; the node is stopped with SIGTERM (it drains: HAProxy
# takes it out, requests and streams in flight finish, a leader hands leadership over,
# charges are applied, leases given back) and started again with its data; the next
# node goes only once this one is ready (caught up with the leader, hearing the cluster
# in gossip) and HAProxy sends to it again.
#
# Usage: scripts/rolling-restart.sh [--dir DIR] [--nodes "1 2 3"]
#
# DIR defaults to ./tollgate-cluster, as for cluster.sh. To upgrade, set TOLLGATE_BIN to
# the new binary: each node restarts with it (cluster.sh start N). Environment meant for
# the nodes (e.g. TOLLGATE_PROTOCOL_VERSION) reaches the restarted ones. Exits 1 when a
# node does not come back within cluster.sh's limits, leaving the rest as they are, and
# at the end when a node had to be killed before its drain finished.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

# Seconds to wait for every node to be ready and in HAProxy before a node goes.
HEALTHY_TIMEOUT_S=60

die() {
	echo "rolling-restart.sh: $*" >&2
	exit 1
}

DIR=./tollgate-cluster
NODES="1 2 3"
while (($#)); do
	case "$1" in
	--dir)
		(($# >= 2)) || die "--dir needs a value"
		DIR=$2
		shift 2
		;;
	--dir=*)
		DIR=${1#--dir=}
		shift
		;;
	--nodes)
		(($# >= 2)) || die "--nodes needs a value"
		NODES=$2
		shift 2
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unexpected argument $1"
		;;
	esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=$ROOT/scripts/cluster.sh
[[ -f $DIR/env ]] || die "no cluster in $DIR (run scripts/cluster.sh up --dir $DIR first)"
BASE=$(awk -F= '$1 == "base_port" { print $2 }' "$DIR/env")
[[ $BASE =~ ^[0-9]+$ ]] || die "$DIR/env has no base_port"
for n in $NODES; do
	[[ $n =~ ^[1-3]$ ]] || die "no node $n: nodes are numbered 1-3"
done

http_code() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null || true
}

# HAProxy's status of server nodeN ("UP", "DOWN", "UP 1/2", ...) from its stats CSV.
haproxy_status() {
	curl -s --max-time 1 "http://127.0.0.1:$((BASE + 10))/;csv" 2>/dev/null |
		awk -F, -v s="node$1" '$1 == "nodes" && $2 == s { print $18 }'
}

# Waits until every node answers ready and HAProxy has all of them UP.
wait_healthy() {
	local n ok deadline=$((SECONDS + HEALTHY_TIMEOUT_S))
	while :; do
		ok=1
		for n in 1 2 3; do
			[[ $(http_code "http://127.0.0.1:$((BASE + n))/health/ready") == 200 ]] || ok=0
			[[ $(haproxy_status "$n") == UP ]] || ok=0
		done
		((ok)) && return 0
		((SECONDS < deadline)) || die "the cluster in $DIR is not healthy after ${HEALTHY_TIMEOUT_S}s; see scripts/cluster.sh status --dir $DIR"
		sleep 0.25
	done
}

started=$SECONDS
unfinished=()
for n in $NODES; do
	wait_healthy
	echo "node $n: draining"
	"$CLUSTER" stop "$n" --dir "$DIR"
	# The node's last words after a complete drain, since cluster.sh last started it
	# (the log is appended to across starts).
	if awk '/ cluster\.sh starts node /{s=0} /tollgate_node::http::server: stopped$/{s=1} END{exit !s}' "$DIR/node$n/log"; then
		echo "node $n: drained and exited"
	else
		echo "node $n: exited without finishing its drain; last lines of its log:" >&2
		tail -n 5 "$DIR/node$n/log" >&2
		unfinished+=("$n")
	fi
	"$CLUSTER" start "$n" --dir "$DIR"
done
wait_healthy
echo "rolling restart of nodes $NODES done in $((SECONDS - started))s"
((${#unfinished[@]} == 0)) || die "node(s) ${unfinished[*]} did not finish their drain (see their logs)"
