#!/usr/bin/env bash
# Runs a three-node Tollgate cluster on loopback behind HAProxy, for trying cluster mode
# and for failure experiments.
#
# Usage: scripts/cluster.sh COMMAND [--dir DIR]
#   up [--config FILE]  make the cluster CA and node certificates if missing, start nodes
#                       1-3 with the providers of FILE (default: the one of the last up,
#                       else the embedded defaults; '' for those) and HAProxy, wait until
#                       all are ready, print the addresses. What already runs is left
#                       alone and only what does not is started, so `up` also revives.
#   down                SIGTERM every node (they drain), SIGKILL what is left after 330 s
#                       (a node waits for its streams in flight; TOLLGATE_STOP_TIMEOUT_S
#                       sets it, for a config with a longer drain), then stop HAProxy.
#   status              per node: process, /health/ready; HAProxy and its view of the
#                       nodes; /api/v1/cluster from a ready node. Exits 1 unless all is up.
#   kill N              SIGKILL node N (1-3).
#   stop N              SIGTERM node N and wait until it has exited (SIGKILL after 330 s).
#   start N             start node N again with the same flags and data (it rejoins with
#                       its log); waits until it is ready. With TOLLGATE_BIN, with that
#                       binary, which DIR/env then records for later commands (an upgrade).
#
# DIR defaults to ./tollgate-cluster. Ports: HAProxy on BASE, node N's HTTP on BASE+N and
# its Raft/QUIC (UDP) on BASE+10+N, HAProxy's stats page on BASE+10, where BASE is
# TOLLGATE_BASE_PORT (default 8080). `up` records BASE, FILE and the binary in DIR/env;
# the other commands read them there, so they need neither the variable nor the flag.
#
# The binary is TOLLGATE_BIN if set, else `up` builds target/release/tollgate. Every node
# gets TOLLGATE_ADMIN_TOKEN; when it is unset, a token is generated once into
# DIR/admin-token (mode 0600). HAProxy is installed with apt-get when missing (as root).
set -euo pipefail

# Prints the comment block above: every line from the second up to the first that is
# not a comment.
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

# Seconds `up` and `start` wait for readiness: election, catching up and HAProxy's first
# health checks take a few seconds; a minute means something is wrong.
READY_TIMEOUT_S=60
# Seconds a SIGTERMed node gets before SIGKILL: the node's own drain bounds (2 s of
# grace, 300 s for requests and streams in flight, 10 s to apply queued charges, 3 s to
# give leases back, 3 s to hand leadership over) plus some slack.
STOP_TIMEOUT_S=${TOLLGATE_STOP_TIMEOUT_S:-330}
[[ $STOP_TIMEOUT_S =~ ^[0-9]+$ ]] || { echo "cluster.sh: TOLLGATE_STOP_TIMEOUT_S must be a number of seconds" >&2; exit 1; }
# Seconds HAProxy gets to exit after SIGTERM (a hard stop, so it is quick).
HAPROXY_STOP_TIMEOUT_S=5
# Readiness polls (a quarter second apart) in a row that count as ready: about one
# HAProxy health-check cycle (rise 2 at 500 ms).
READY_STABLE_POLLS=4
N_NODES=3

die() {
	echo "cluster.sh: $*" >&2
	exit 1
}
bad_usage() {
	echo "cluster.sh: $*" >&2
	usage >&2
	exit 2
}

# ---- arguments ----

COMMAND=
NODE=
DIR=./tollgate-cluster
CONFIG=
CONFIG_GIVEN=0
while (($#)); do
	case "$1" in
	--dir)
		(($# >= 2)) || bad_usage "--dir needs a value"
		DIR=$2
		shift 2
		;;
	--dir=*)
		DIR=${1#--dir=}
		shift
		;;
	--config)
		(($# >= 2)) || bad_usage "--config needs a value"
		CONFIG=$2
		CONFIG_GIVEN=1
		shift 2
		;;
	--config=*)
		CONFIG=${1#--config=}
		CONFIG_GIVEN=1
		shift
		;;
	-h | --help | help)
		usage
		exit 0
		;;
	-*) bad_usage "unknown option $1" ;;
	*)
		if [[ -z $COMMAND ]]; then
			COMMAND=$1
		elif [[ -z $NODE && $COMMAND =~ ^(kill|stop|start)$ ]]; then
			NODE=$1
		else
			bad_usage "unexpected argument $1"
		fi
		shift
		;;
	esac
done
case "$COMMAND" in
up | down | status) [[ -z $NODE ]] || bad_usage "$COMMAND takes no node number" ;;
kill | stop | start)
	[[ -n $NODE ]] || bad_usage "$COMMAND needs a node number (1-$N_NODES)"
	if ! [[ $NODE =~ ^[0-9]+$ ]] || ((NODE < 1 || NODE > N_NODES)); then
		die "node $NODE does not exist: nodes are numbered 1-$N_NODES"
	fi
	;;
'') bad_usage "no command given" ;;
*) bad_usage "unknown command $COMMAND" ;;
esac
if [[ $CONFIG_GIVEN == 1 && $COMMAND != up ]]; then
	bad_usage "--config is only for up"
fi

command -v curl >/dev/null 2>&1 || die "curl is required"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---- settings recorded in DIR/env ----

# Absolute, so recorded paths and process command lines do not depend on the caller's
# working directory.
absolute() {
	local path=$1
	[[ $path == /* ]] || path=$PWD/$path
	printf '%s\n' "$path"
}
DIR=$(absolute "$DIR")
ENV_FILE=$DIR/env
TOKEN_FILE=$DIR/admin-token

BASE=
BIN=
TOKEN_SOURCE=
RECORDED_CONFIG=
# Reads DIR/env as key=value lines (not sourced: it is data, not a script).
load_env() {
	[[ -f $ENV_FILE ]] || return 1
	local key value
	while IFS='=' read -r key value; do
		case "$key" in
		base_port) BASE=$value ;;
		config) RECORDED_CONFIG=$value ;;
		bin) BIN=$value ;;
		admin_token_source) TOKEN_SOURCE=$value ;;
		esac
	done <"$ENV_FILE"
	[[ $BASE =~ ^[0-9]+$ ]] || die "$ENV_FILE has no valid base_port"
}
write_env() {
	local tmp=$ENV_FILE.tmp
	{
		echo "# written by scripts/cluster.sh up; read by its other commands"
		echo "base_port=$BASE"
		echo "config=$CONFIG"
		echo "bin=$BIN"
		echo "admin_token_source=$TOKEN_SOURCE"
	} >"$tmp"
	mv "$tmp" "$ENV_FILE"
}
require_cluster() {
	load_env || die "no cluster in $DIR (no $ENV_FILE): run \`scripts/cluster.sh up --dir $DIR\` first"
	CONFIG=$RECORDED_CONFIG
}

http_port() { echo $((BASE + $1)); }
raft_port() { echo $((BASE + 10 + $1)); }
stats_port() { echo $((BASE + 10)); }
node_url() { echo "http://127.0.0.1:$(http_port "$1")"; }
node_dir() { echo "$DIR/node$1"; }

# ---- processes ----

# Prints the pid in FILE if that process is alive and its command line contains MARK, so
# a stale pid file or a reused pid is never mistaken for ours (a dead child of this
# script, a zombie, has no command line either).
live_pid() {
	local file=$1 mark=$2 pid args
	[[ -f $file ]] || return 1
	pid=$(<"$file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	args=$(ps -o args= -p "$pid" 2>/dev/null) || return 1
	[[ $args == *"$mark"* ]] || return 1
	echo "$pid"
}
node_pid() { live_pid "$(node_dir "$1")/pid" "$(node_dir "$1")/data"; }
haproxy_pid() { live_pid "$DIR/haproxy.pid" "$DIR/haproxy.cfg"; }

# Prints the HTTP status of a GET (000 when nothing answers within a second).
http_code() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null || true
}

# Waits up to SECONDS for PID to exit; returns 1 if it is still there.
wait_exit() {
	local pid=$1 seconds=$2 mark=$3 deadline=$((SECONDS + $2))
	while ((SECONDS < deadline)); do
		ps -o args= -p "$pid" 2>/dev/null | grep -qF -- "$mark" || return 0
		sleep 0.2
	done
	! ps -o args= -p "$pid" 2>/dev/null | grep -qF -- "$mark"
}

# The admin token every node gets: TOLLGATE_ADMIN_TOKEN, else DIR/admin-token.
admin_token() {
	if [[ $TOKEN_SOURCE == env ]]; then
		[[ -n ${TOLLGATE_ADMIN_TOKEN:-} ]] ||
			die "this cluster was started with TOLLGATE_ADMIN_TOKEN; set it again (the other nodes use it)"
		printf '%s\n' "$TOLLGATE_ADMIN_TOKEN"
	else
		[[ -s $TOKEN_FILE ]] || die "$TOKEN_FILE is missing"
		tr -d '[:space:]' <"$TOKEN_FILE"
		echo
	fi
}

# Starts node N in its own session, detached from this script and its terminal, so it
# outlives the script; appends to its log.
start_node() {
	local n=$1 dir token peer pid i args=()
	dir=$(node_dir "$n")
	mkdir -p "$dir/data"
	token=$(admin_token)
	[[ -n $CONFIG ]] && args+=(--config "$CONFIG")
	args+=(--data-dir "$dir/data" --http-addr "127.0.0.1:$(http_port "$n")"
		--node-id "$n" --raft-addr "127.0.0.1:$(raft_port "$n")"
		--bootstrap-expect "$N_NODES" --cert-dir "$DIR/certs/node$n")
	# The same peers and bootstrap size on every start: a node with a log ignores them.
	for ((peer = 1; peer <= N_NODES; peer++)); do
		((peer == n)) || args+=(--peer "127.0.0.1:$(raft_port "$peer")")
	done
	echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) cluster.sh starts node $n" >>"$dir/log"
	# A background job of a non-interactive shell is not a process-group leader, so
	# setsid execs in place and $! is the node's own pid.
	TOLLGATE_ADMIN_TOKEN=$token setsid nohup "$BIN" serve "${args[@]}" \
		</dev/null >>"$dir/log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/pid"
	STARTED+=("$pid")
	# Until setsid has exec'd, the child still shows this script's command line; wait
	# for the node's, so the pid checks that follow see the node.
	for ((i = 0; i < 50; i++)); do
		node_pid "$n" >/dev/null && return 0
		ps -p "$pid" >/dev/null 2>&1 || break
		sleep 0.1
	done
	node_pid "$n" >/dev/null || die "node $n did not start; see $dir/log"
}

start_haproxy() {
	local cfg=$DIR/haproxy.cfg
	write_haproxy_cfg >"$cfg"
	haproxy -c -q -f "$cfg" >"$DIR/haproxy.log" 2>&1 ||
		die "HAProxy rejects $cfg: $(cat "$DIR/haproxy.log")"
	# -D daemonizes after binding, so a busy port fails here, with the reason in the log.
	haproxy -D -f "$cfg" -p "$DIR/haproxy.pid" >>"$DIR/haproxy.log" 2>&1 ||
		die "HAProxy did not start: $(cat "$DIR/haproxy.log")"
	STARTED+=("$(cat "$DIR/haproxy.pid")")
}

# What this `up` started (pids): if it fails, it stops them again, so that a failed
# `up` (a port in use, a bad config) leaves nothing running.
STARTED=()
undo_up() {
	local status=$? pid
	((status != 0)) || return 0
	((${#STARTED[@]} > 0)) || return 0
	echo "cluster.sh: up failed; stopping what it started (${#STARTED[@]} processes)" >&2
	for pid in "${STARTED[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	for pid in "${STARTED[@]}"; do
		wait_exit "$pid" 5 "" >/dev/null 2>&1 || true
	done
}

# The HAProxy configuration. Request bodies of LLM calls are buffered so that requests up
# to 64 KiB can be re-sent to another node when the first one dies under them.
write_haproxy_cfg() {
	local n servers="" template
	template=$(<"$(dirname "${BASH_SOURCE[0]}")/../deploy/haproxy.cfg")
	for ((n = 1; n <= N_NODES; n++)); do
		servers+="    server node$n 127.0.0.1:$(http_port "$n")"$'\n'
	done
	template=${template//'{{FRONTEND}}'/127.0.0.1:$BASE}
	template=${template//'{{STATS}}'/127.0.0.1:$(stats_port)}
	template=${template//'{{SERVERS}}'/${servers%$'\n'}}
	echo "# Written by scripts/cluster.sh up from deploy/haproxy.cfg; rewritten at every up."
	echo "$template"
}

ensure_haproxy() {
	command -v haproxy >/dev/null 2>&1 && return 0
	if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
		die "haproxy is not installed: install it (e.g. \`sudo apt-get install -y haproxy\`) and run up again"
	fi
	echo "installing haproxy with apt-get..." >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq haproxy >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; } ||
		die "apt-get could not install haproxy"
}

# Stops PID with SIGTERM, waits up to SECONDS, then SIGKILL. Says what happened and how
# long it took since STARTED_MS (default now).
terminate() {
	local what=$1 pid=$2 seconds=$3 mark=$4 started=${5:-$(now_ms)}
	kill -TERM "$pid" 2>/dev/null || true
	if wait_exit "$pid" "$seconds" "$mark"; then
		echo "$what stopped after $(elapsed "$started")"
	else
		kill -KILL "$pid" 2>/dev/null || true
		wait_exit "$pid" 5 "$mark" || true
		echo "$what did not exit within ${seconds}s of SIGTERM: killed"
	fi
}

# Milliseconds on a monotonic-enough clock, for reporting how long things took.
now_ms() {
	if [[ -n ${EPOCHREALTIME:-} ]]; then
		local us=${EPOCHREALTIME//[!0-9]/}
		echo $((us / 1000))
	else
		echo $((SECONDS * 1000))
	fi
}
# Prints the time since START_MS (from now_ms) in seconds with one decimal.
elapsed() {
	local ms=$(($(now_ms) - $1))
	printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100))
}

# Waits until every listed node answers /health/ready with 200 and, if asked, HAProxy
# does too, all of them for READY_STABLE_POLLS polls in a row: a restarted node that led
# an earlier term can answer 200 for a moment from its persisted vote, then 503 until it
# hears from the new leader. Fails early with the log's tail when a node has died.
wait_ready() {
	local want_haproxy=$1 n pending stable=0 deadline=$((SECONDS + READY_TIMEOUT_S))
	shift
	while :; do
		pending=0
		for n in "$@"; do
			if ! node_pid "$n" >/dev/null; then
				echo "cluster.sh: node $n exited; last lines of $(node_dir "$n")/log:" >&2
				tail -n 20 "$(node_dir "$n")/log" >&2
				exit 1
			fi
			[[ $(http_code "$(node_url "$n")/health/ready") == 200 ]] || pending=1
		done
		if [[ $want_haproxy == 1 && $pending == 0 ]]; then
			[[ $(http_code "http://127.0.0.1:$BASE/health/ready") == 200 ]] || pending=1
		fi
		if ((pending)); then
			stable=0
		else
			stable=$((stable + 1))
			((stable < READY_STABLE_POLLS)) || return 0
		fi
		((SECONDS < deadline)) || die "not ready after ${READY_TIMEOUT_S}s; see the logs in $DIR/node*/log"
		sleep 0.25
	done
}

# ---- commands ----

cmd_up() {
	local n running=0 base=${TOLLGATE_BASE_PORT:-8080}
	trap undo_up EXIT
	mkdir -p "$DIR"
	if load_env; then
		for ((n = 1; n <= N_NODES; n++)); do
			node_pid "$n" >/dev/null && running=1
		done
		haproxy_pid >/dev/null && running=1
		# The nodes' Raft logs record their peers' addresses: the ports cannot move.
		if [[ -n ${TOLLGATE_BASE_PORT:-} && $TOLLGATE_BASE_PORT != "$BASE" ]]; then
			die "$DIR was made with base port $BASE, not $TOLLGATE_BASE_PORT; use another --dir"
		fi
		if [[ $CONFIG_GIVEN == 0 ]]; then
			CONFIG=$RECORDED_CONFIG
		elif ((running)) && [[ $CONFIG != "$RECORDED_CONFIG" && $(absolute "$CONFIG") != "$RECORDED_CONFIG" ]]; then
			die "this cluster runs with config '${RECORDED_CONFIG:-(embedded defaults)}': run down first to change it"
		fi
	else
		BASE=$base
	fi
	if ! [[ $BASE =~ ^[0-9]+$ ]] || ((BASE < 1 || BASE + 10 + N_NODES > 65535)); then
		die "TOLLGATE_BASE_PORT must be a port number (BASE to BASE+$((10 + N_NODES)) are used)"
	fi
	if [[ -n $CONFIG ]]; then
		CONFIG=$(absolute "$CONFIG")
		[[ -f $CONFIG ]] || die "no config file $CONFIG"
	fi

	if ((running == 0)); then
		if [[ -n ${TOLLGATE_ADMIN_TOKEN:-} ]]; then
			TOKEN_SOURCE="env"
		else
			TOKEN_SOURCE="file"
		fi
	fi
	if [[ $TOKEN_SOURCE == file && ! -s $TOKEN_FILE ]]; then
		(
			umask 077
			printf 'tga-%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$TOKEN_FILE"
		)
	fi

	if [[ -n ${TOLLGATE_BIN:-} ]]; then
		BIN=$(absolute "$TOLLGATE_BIN")
	elif ((running == 0)) || [[ ! -x $BIN ]]; then
		command -v cargo >/dev/null 2>&1 || die "set TOLLGATE_BIN or install cargo"
		echo "building the release binary..." >&2
		(cd "$ROOT" && cargo build --release --quiet -p tollgate-node)
		BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate
	fi
	[[ -x $BIN ]] || die "$BIN is not an executable"
	ensure_haproxy
	write_env

	# The CA key stays in DIR/certs/ca; each node's directory has only its own key.
	if [[ ! -f $DIR/certs/ca/ca.pem ]]; then
		"$BIN" cert ca --out "$DIR/certs/ca" >/dev/null
	fi
	for ((n = 1; n <= N_NODES; n++)); do
		if [[ ! -f $DIR/certs/node$n/node.pem ]]; then
			"$BIN" cert node --ca-dir "$DIR/certs/ca" --name "node$n" \
				--out "$DIR/certs/node$n" >/dev/null
		fi
	done

	for ((n = 1; n <= N_NODES; n++)); do
		if node_pid "$n" >/dev/null; then
			echo "node $n already running"
		else
			start_node "$n"
		fi
	done
	if haproxy_pid >/dev/null; then
		echo "HAProxy already running"
	else
		start_haproxy
	fi
	echo "waiting for the nodes and HAProxy (at most ${READY_TIMEOUT_S}s)..."
	local started
	started=$(now_ms)
	wait_ready 1 1 2 3
	echo "ready after $(elapsed "$started")"
	echo
	echo "Tollgate cluster in $DIR"
	echo "  HAProxy     http://127.0.0.1:$BASE  (stats http://127.0.0.1:$(stats_port)/)"
	for ((n = 1; n <= N_NODES; n++)); do
		echo "  node $n      $(node_url "$n")  raft 127.0.0.1:$(raft_port "$n")/udp  log $(node_dir "$n")/log"
	done
	echo "  providers   ${CONFIG:-the embedded defaults (a mock provider)}"
	if [[ $TOKEN_SOURCE == env ]]; then
		echo "  admin token from TOLLGATE_ADMIN_TOKEN"
	else
		echo "  admin token in $TOKEN_FILE (mode 0600)"
	fi
	echo
	echo "A virtual key:"
	echo "  $BIN admin --url http://127.0.0.1:$BASE --data-dir $DIR keys create --name alice --provider mock"
	echo "Claude Code through HAProxy:"
	echo "  ANTHROPIC_BASE_URL=http://127.0.0.1:$BASE ANTHROPIC_AUTH_TOKEN=<virtual key secret> claude"
}

cmd_down() {
	local i n pid started pids=() nodes=()
	require_cluster
	started=$(now_ms)
	# All nodes drain at once; HAProxy goes last so their in-flight answers still reach
	# the clients.
	for ((n = 1; n <= N_NODES; n++)); do
		if pid=$(node_pid "$n"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			nodes+=("$n")
		fi
	done
	for i in "${!pids[@]}"; do
		n=${nodes[$i]}
		terminate "node $n" "${pids[$i]}" "$STOP_TIMEOUT_S" "$(node_dir "$n")/data" "$started"
	done
	((${#pids[@]})) || echo "no node running"
	if pid=$(haproxy_pid); then
		terminate HAProxy "$pid" "$HAPROXY_STOP_TIMEOUT_S" "$DIR/haproxy.cfg"
	else
		echo "HAProxy not running"
	fi
	rm -f "$DIR/haproxy.pid"
}

cmd_status() {
	local n pid code healthy=1 token ready_url=
	require_cluster
	for ((n = 1; n <= N_NODES; n++)); do
		code=$(http_code "$(node_url "$n")/health/ready")
		if pid=$(node_pid "$n"); then
			printf 'node %d  pid %-8s ready %s  %s\n' "$n" "$pid" "$code" "$(node_url "$n")"
		else
			printf 'node %d  %-12s ready %s  %s\n' "$n" "not running" "$code" "$(node_url "$n")"
			healthy=0
		fi
		if [[ $code == 200 ]]; then
			[[ -n $ready_url ]] || ready_url=$(node_url "$n")
		else
			healthy=0
		fi
	done
	if pid=$(haproxy_pid); then
		code=$(http_code "http://127.0.0.1:$BASE/health/ready")
		printf 'HAProxy pid %-8s ready %s  http://127.0.0.1:%s\n' "$pid" "$code" "$BASE"
		[[ $code == 200 ]] || healthy=0
		# HAProxy's own view of the nodes, from the stats page's CSV (svname, status).
		curl -s --max-time 1 "http://127.0.0.1:$(stats_port)/;csv" 2>/dev/null |
			awk -F, '$1 == "nodes" && $2 ~ /^node/ { printf "  haproxy sees %s %s\n", $2, $18 }' || true
	else
		echo "HAProxy not running"
		healthy=0
	fi
	if [[ -n $ready_url ]]; then
		if token=$(admin_token 2>/dev/null) && [[ -n $token ]]; then
			echo "cluster (from $ready_url):"
			# The header from a file descriptor, not the command line (`ps` shows that).
			curl -s --max-time 2 -H @<(printf 'authorization: Bearer %s\n' "$token") "$ready_url/api/v1/cluster" |
				{ python3 -m json.tool 2>/dev/null || cat; }
			echo
		else
			echo "cluster view skipped: set TOLLGATE_ADMIN_TOKEN (the token this cluster was started with)"
		fi
	fi
	((healthy))
}

cmd_kill() {
	local pid
	require_cluster
	pid=$(node_pid "$NODE") || die "node $NODE is not running"
	kill -KILL "$pid"
	wait_exit "$pid" 5 "$(node_dir "$NODE")/data" || die "node $NODE (pid $pid) survived SIGKILL"
	echo "node $NODE killed (pid $pid)"
}

cmd_stop() {
	local pid
	require_cluster
	pid=$(node_pid "$NODE") || {
		echo "node $NODE is not running"
		return 0
	}
	terminate "node $NODE" "$pid" "$STOP_TIMEOUT_S" "$(node_dir "$NODE")/data"
}

cmd_start() {
	local started
	require_cluster
	[[ -z ${TOLLGATE_BIN:-} ]] || BIN=$(absolute "$TOLLGATE_BIN")
	[[ -x $BIN ]] || die "$BIN is not an executable (set TOLLGATE_BIN)"
	if node_pid "$NODE" >/dev/null; then
		echo "node $NODE already running"
		return 0
	fi
	started=$(now_ms)
	start_node "$NODE"
	wait_ready 0 "$NODE"
	# Later commands (`up` reviving a node, a restart without the variable) use the
	# binary this node now runs: after an upgrade, one on the old binary could not read
	# the newer log.
	[[ -z ${TOLLGATE_BIN:-} ]] || write_env
	echo "node $NODE ready after $(elapsed "$started") ($(node_url "$NODE"))"
}

"cmd_$COMMAND"
