#!/usr/bin/env bash
# Measures what the gateway adds: the same Anthropic requests (JSON and SSE) sent straight
# to a fast mock upstream and through `tollgate serve` with a budgeted, rate-limited
# virtual key, at concurrency 1 (added latency p50/p99) and at saturation (throughput).
#
# Usage: scripts/bench.sh [--quick] [--no-build]
#   --quick     few requests and one repetition: a smoke test for CI, not a measurement.
#   --no-build  use the existing release binary instead of running cargo first.
#
# Needs cargo (unless --no-build), curl and python3. Set TOLLGATE_LOG to change the
# gateway's log filter; by default it runs with its own default.
set -euo pipefail

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

QUICK=0
BUILD=1
for arg in "$@"; do
	case "$arg" in
	--quick) QUICK=1 ;;
	--no-build) BUILD=0 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "bench.sh: unknown option $arg" >&2
		usage >&2
		exit 2
		;;
	esac
done

# Sizes of the run. Repetitions are interleaved (direct, gateway, direct, gateway, ...)
# and the best figure of each side is kept, because a 2-core machine shared by the load
# generator, the gateway and the mock is noisy and noise only ever adds time.
if [[ $QUICK == 1 ]]; then
	C1_REQUESTS=300
	C1_WARMUP=50
	C1_MAX_SECONDS=5
	SAT_SECONDS=1
	SAT_WARMUP=200
	REPS=1
else
	C1_REQUESTS=3000
	C1_WARMUP=300
	C1_MAX_SECONDS=20
	SAT_SECONDS=5
	SAT_WARMUP=2000
	REPS=3
fi
SAT_CONCURRENCY=32
# A concurrency-1 cell also ends after C1_MAX_SECONDS, so a gateway that stalls each
# request (a Nagle/delayed-ACK wait is 40 ms) still finishes the run in bounded time; the
# progress lines show how many requests such a cell measured.
MODEL=claude-sonnet-4-5
# Targets for the gateway's added latency at concurrency 1, in microseconds.
TARGET_P50_US=50
TARGET_P99_US=100

need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "bench.sh: $1 is required" >&2
		exit 1
	}
}
need curl
need python3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate
if [[ $BUILD == 1 ]]; then
	need cargo
	echo "building the release binary..." >&2
	(cd "$ROOT" && cargo build --release --quiet -p tollgate-node)
fi
[[ -x $BIN ]] || {
	echo "bench.sh: $BIN not found; run without --no-build" >&2
	exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
PIDS=()
cleanup() {
	local status=$?
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in ${PIDS[@]+"${PIDS[@]}"}; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ $status != 0 ]]; then
		for log in "$WORK"/*.log; do
			[[ -s $log ]] || continue
			echo "--- last lines of $(basename "$log")" >&2
			tail -n 20 "$log" >&2
		done
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
# A signal ends the script through `exit`, so the EXIT trap still stops the servers.
trap 'exit 130' INT TERM

# Two distinct free ports: both sockets are held open together so they cannot collide.
read -r MOCK_PORT GW_PORT < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])
')
MOCK=http://127.0.0.1:$MOCK_PORT
GW=http://127.0.0.1:$GW_PORT

ADMIN_TOKEN=bench-admin-$RANDOM$RANDOM
export BENCH_UPSTREAM_KEY=bench-upstream-key

"$BIN" mock-upstream --addr "127.0.0.1:$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/tollgate.toml" <<EOF
[server]
http_addr = "127.0.0.1:$GW_PORT"

[[providers]]
name = "bench"
kind = "anthropic"
base_url = "$MOCK"
api_key = "env:BENCH_UPSTREAM_KEY"
EOF
TOLLGATE_ADMIN_TOKEN=$ADMIN_TOKEN "$BIN" serve --config "$WORK/tollgate.toml" \
	--data-dir "$WORK/data" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")

# Waits until URL answers 200, failing early if the process behind it has died.
wait_for() {
	local url=$1 pid=$2 i
	for ((i = 0; i < 300; i++)); do
		if curl -fsS -o /dev/null "$url" 2>/dev/null; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || {
			echo "bench.sh: the process serving $url exited" >&2
			return 1
		}
		sleep 0.1
	done
	echo "bench.sh: $url did not become ready in 30 s" >&2
	return 1
}
wait_for "$MOCK/health" "${PIDS[0]}"
wait_for "$GW/health/ready" "$GW_PID"

# Calls the admin API and prints the JSON answer; fails with the body on a non-2xx.
api() {
	local method=$1 path=$2 body=${3:-} code
	local args=(-sS -o "$WORK/api.out" -w '%{http_code}' -X "$method"
		-H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json')
	[[ -n $body ]] && args+=(--data "$body")
	code=$(curl "${args[@]}" "$GW/api/v1/$path")
	if [[ $code != 2* ]]; then
		echo "bench.sh: $method /api/v1/$path answered $code: $(cat "$WORK/api.out")" >&2
		return 1
	fi
	cat "$WORK/api.out"
}
# Prints one top-level field of the JSON on stdin.
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

api POST prices "{\"model\":\"$MODEL\",\"input_per_mtok_usd\":\"3.00\",\"output_per_mtok_usd\":\"15.00\"}" >/dev/null
KEY_JSON=$(api POST virtual-keys '{"name":"bench","provider_configs":[{"provider":"bench"}]}')
KEY_ID=$(field id <<<"$KEY_JSON")
KEY_SECRET=$(field secret <<<"$KEY_JSON")
# A budget and a rate limit far beyond what the run uses: they are checked and charged
# on every request, which is the cost being measured, but never refuse one.
api POST budgets "{\"owner\":{\"kind\":\"virtual_key\",\"id\":\"$KEY_ID\"},\"max_limit_usd\":\"1000000.00\",\"reset_duration\":\"1d\"}" >/dev/null
api POST rate-limits "{\"owner\":{\"kind\":\"virtual_key\",\"id\":\"$KEY_ID\"},\"request_max\":100000000,\"request_window\":\"1m\"}" >/dev/null

PROMPT='Summarise the toll charges on the A1 for a lorry in one sentence.'
printf '{"model":"%s","max_tokens":256,"messages":[{"role":"user","content":"%s"}]}' \
	"$MODEL" "$PROMPT" >"$WORK/json.body"
printf '{"model":"%s","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"%s"}]}' \
	"$MODEL" "$PROMPT" >"$WORK/sse.body"

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# Runs one load: CASE TARGET BODY (json|sse) then loadgen's size flags. Records the report.
load() {
	local case=$1 target=$2 body=$3 warmup=$4
	shift 4
	local url key
	if [[ $target == direct ]]; then
		url=$MOCK/v1/messages
		key=$BENCH_UPSTREAM_KEY
	else
		url=$GW/v1/messages
		key=$KEY_SECRET
	fi
	local out
	out=$("$BIN" loadgen --url "$url" --header "x-api-key: $key" \
		--header 'anthropic-version: 2023-06-01' --body-file "$WORK/$body.body" \
		--warmup "$warmup" "$@" 2>>"$WORK/loadgen.log")
	printf '%s\t%s\t%s\t%s\n' "$case" "$target" "$warmup" "$out" >>"$RESULTS"
	python3 -c '
import json, sys
case, target, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print("  %-10s %-8s p50 %6d us  p99 %6d us  %8.0f rps  n %7d  errors %d"
      % (case, target, r["p50_us"], r["p99_us"], r["rps"], r["requests"], r["errors"]),
      file=sys.stderr)
' "$case" "$target" "$out"
}

echo "direct: $MOCK   gateway: $GW   key: $KEY_ID" >&2
for ((rep = 1; rep <= REPS; rep++)); do
	echo "repetition $rep/$REPS, concurrency 1 ($C1_REQUESTS requests after $C1_WARMUP warm-up)" >&2
	for body in json sse; do
		for target in direct gateway; do
			load "$body c=1" "$target" "$body" "$C1_WARMUP" --concurrency 1 \
				--requests "$C1_REQUESTS" --duration-secs "$C1_MAX_SECONDS"
		done
	done
done
for ((rep = 1; rep <= REPS; rep++)); do
	echo "repetition $rep/$REPS, concurrency $SAT_CONCURRENCY for $SAT_SECONDS s" >&2
	for body in json sse; do
		for target in direct gateway; do
			load "$body c=$SAT_CONCURRENCY" "$target" "$body" "$SAT_WARMUP" \
				--concurrency "$SAT_CONCURRENCY" --duration-secs "$SAT_SECONDS"
		done
	done
done

# Every request through the gateway, warm-up included, must show in the key's usage once
# the charge batcher has applied it.
EXPECTED=$(python3 -c '
import json, sys
total = 0
for line in open(sys.argv[1]):
    case, target, warmup, report = line.rstrip("\n").split("\t", 3)
    if target == "gateway":
        total += int(warmup) + json.loads(report)["requests"]
print(total)
' "$RESULTS")
for ((i = 0; i < 50; i++)); do
	USAGE=$(api GET "usage?virtual_key=$KEY_ID")
	[[ $(field requests <<<"$USAGE") -ge $EXPECTED ]] && break
	sleep 0.1
done

python3 - "$RESULTS" "$EXPECTED" "$KEY_ID" "$USAGE" "$TARGET_P50_US" "$TARGET_P99_US" "$REPS" <<'PY'
import json, sys

results, expected, key_id, usage = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
target_p50, target_p99, reps = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
best, cases, errors = {}, [], 0
for line in open(results):
    case, target, _warmup, report = line.rstrip("\n").split("\t", 3)
    r = json.loads(report)
    errors += r["errors"]
    if case not in cases:
        cases.append(case)
    b = best.setdefault((case, target), {"p50": r["p50_us"], "p99": r["p99_us"], "rps": r["rps"]})
    # Noise only adds time, so the least disturbed repetition is the best estimate.
    b["p50"] = min(b["p50"], r["p50_us"])
    b["p99"] = min(b["p99"], r["p99_us"])
    b["rps"] = max(b["rps"], r["rps"])

header = ["case", "direct p50/p99 us", "gateway p50/p99 us", "added p50/p99 us", "direct rps", "gateway rps"]
rows, verdicts = [], []
for case in cases:
    d, g = best[(case, "direct")], best[(case, "gateway")]
    added = (g["p50"] - d["p50"], g["p99"] - d["p99"])
    rows.append([case, f'{d["p50"]}/{d["p99"]}', f'{g["p50"]}/{g["p99"]}',
                 f"{added[0]}/{added[1]}", f'{d["rps"]:.0f}', f'{g["rps"]:.0f}'])
    if case.endswith("c=1"):
        met = added[0] <= target_p50 and added[1] <= target_p99
        verdicts.append(f"{case}: added p50 {added[0]} us (target <= {target_p50}), "
                        f"p99 {added[1]} us (target <= {target_p99}): {'met' if met else 'NOT met'}")
widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
def show(cells):
    print(" | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
print()
print(f"best of {reps} interleaved repetition(s) per cell; latency in microseconds")
show(header)
print("-+-".join("-" * w for w in widths))
for row in rows:
    show(row)
print()
for v in verdicts:
    print(v)
print()
budgets = ", ".join(f'{b["spent_usd"]} of {b["max_limit_usd"]} per {b["reset_duration"]}' for b in usage.get("budgets", []))
print(f"gateway usage for key {key_id}: {usage['requests']} requests counted "
      f"(sent {expected}), {usage['input_tokens']} input / {usage['output_tokens']} output tokens, "
      f"spent {usage['spent_usd']} USD; budget spent {budgets or 'none'}")
if errors:
    print(f"bench.sh: {errors} request(s) failed", file=sys.stderr)
    sys.exit(1)
if usage["requests"] != expected:
    print(f"bench.sh: the gateway counted {usage['requests']} requests, {expected} were sent", file=sys.stderr)
    sys.exit(1)
PY
