#!/usr/bin/env bash
# Runs a long sweep of simulator seeds in the background and keeps its output in a log.
#
# Usage: scripts/sim-sweep.sh [--from A] [--count N] [--chunk K] [--log FILE]
#   --from A    first seed (default: a random one, printed)
#   --count N   seeds to run (default 100000)
#   --chunk K   seeds per `tollgate-sim --seeds` call (default 1000), so progress shows
#               in the log as it goes
#   --log FILE  where the output goes (default ./sim-sweep.log)
#
# It builds the release simulator first, then returns at once; `tail -f` the log. A
# failing seed is printed with its replay command
# (`cargo run -p tollgate-sim --release -- --reproduce N`); the sweep goes on.
set -euo pipefail

from=""
count=100000
chunk=1000
log="./sim-sweep.log"
while (($#)); do
	case "$1" in
	--from) from="$2"; shift 2 ;;
	--count) count="$2"; shift 2 ;;
	--chunk) chunk="$2"; shift 2 ;;
	--log) log="$2"; shift 2 ;;
	-h | --help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "sim-sweep.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
for n in "$count" "$chunk"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "sim-sweep.sh: counts must be positive integers" >&2; exit 2; }
done
if [[ -z $from ]]; then
	from=$(( (RANDOM << 15 | RANDOM) * 1000 ))
fi
[[ $from =~ ^[0-9]+$ ]] || { echo "sim-sweep.sh: --from must be a seed number" >&2; exit 2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build -q --release -p tollgate-sim --manifest-path "$root/Cargo.toml"
bin="$root/target/release/tollgate-sim"

end=$((from + count))
nohup bash -c '
	bin=$1; from=$2; end=$3; chunk=$4
	echo "sweep of seeds $from..$end started $(date -u +%FT%TZ)"
	for ((a = from; a < end; a += chunk)); do
		b=$((a + chunk < end ? a + chunk : end))
		"$bin" --seeds "$a..$b" || true
	done
	echo "sweep of seeds $from..$end ended $(date -u +%FT%TZ)"
' _ "$bin" "$from" "$end" "$chunk" >"$log" 2>&1 &
echo "sweeping seeds $from..$end in the background (pid $!); output in $log"
