#!/usr/bin/env bash
# Runs the property tests of every parser of outside bytes (request head, SSE, both
# translations, admin bodies, outbox records, log entries, snapshots and peer frames)
# with many more inputs than the test command's 256 each.
#
# Usage: scripts/fuzz.sh [CASES]   (default 100000 inputs per property)
# A failure prints the smallest input proptest found for it and exits non-zero; proptest
# keeps it under proptest-regressions/ next to the test, to be tried first next time.
set -euo pipefail
CASES=${1:-100000}
[[ $CASES =~ ^[0-9]+$ ]] || { echo "fuzz.sh: CASES must be a number" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS
export PROPTEST_CASES=$CASES
cargo test -q -p tollgate-node --lib -- properties
cargo test -q -p tollgate-raft --lib -- codec_properties
echo "fuzz.sh: $CASES inputs per property, all held, in $((SECONDS - started)) s"
