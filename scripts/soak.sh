#!/usr/bin/env bash
# Runs the soak test (tests/soak.rs, docs/reliability.md item 12) for a given time.
#
#   scripts/soak.sh [SECONDS] [SEED]      default: 600 s, a fresh seed (printed)
#
# Random cache/scan/unpersist/broadcast/sort/aggregate/udf/python stages on one executor of
# spark.executor.memory=768m with 2 cores; the pool, storage and spill-file invariants are
# checked after every stage. A failure prints SPILLWAY_SOAK_SEED=<n>: rerun with that seed.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPILLWAY_SOAK_SECS="${1:-600}"
if [[ -n "${2:-}" ]]; then
    export SPILLWAY_SOAK_SEED="$2"
fi
exec cargo test --release --test soak -- --nocapture
