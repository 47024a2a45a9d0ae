#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target of fuzz/ for a given time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 600 s, every target
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Each target starts from its committed seeds in
# fuzz/corpus/<target>/ and grows a working corpus in fuzz/work/corpus/<target>/ (not
# committed); a crash is saved under fuzz/artifacts/<target>/ and fails the script.
# Reproduce one with `cargo +nightly fuzz run <target> <file>`.
#
# Environment: FUZZ_JOBS (parallel workers per target, default 1), FUZZ_SANITIZER (default
# none: the parsers are safe Rust, so panics and the oracles are what we look for; `address`
# for ASan), FUZZ_RSS_MB (per-input memory limit, default 2048).
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
secs="${1:-600}"
shift || true
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"
rss_mb="${FUZZ_RSS_MB:-2048}"
all=(conf_values conf_layout properties scenario spill_reader spill_roundtrip protocol pressure)
targets=("${@:-${all[@]}}")

dict_for() {
    case "$1" in
        conf_values | conf_layout | properties) echo dict/conf.dict ;;
        scenario) echo dict/scenario.dict ;;
        pressure) echo dict/pressure.dict ;;
        protocol) echo dict/protocol.dict ;;
    esac
}

# -a: debug assertions (overflow checks, the crate's invariants) stay on.
mkdir -p work
for t in "${targets[@]}"; do
    cargo +nightly fuzz build -O -a -s "$sanitizer" "$t" >work/build.log 2>&1 ||
        { cat work/build.log; exit 1; }
done

failed=()
for t in "${targets[@]}"; do
    mkdir -p "work/corpus/$t" "artifacts/$t"
    args=(-max_total_time="$secs" -rss_limit_mb="$rss_mb" -timeout=10 -print_final_stats=1)
    d="$(dict_for "$t")"
    [[ -n "$d" ]] && args+=(-dict="$d")
    [[ "$jobs" -gt 1 ]] && args+=(-fork="$jobs")
    echo "== $t: ${secs}s"
    if ! cargo +nightly fuzz run -O -a -s "$sanitizer" "$t" "work/corpus/$t" "corpus/$t" \
        -- "${args[@]}" 2>"work/$t.log"; then
        failed+=("$t")
        tail -40 "work/$t.log"
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "work/$t.log" |
        tr '\n' ' '
    grep -E 'cov: [0-9]+' "work/$t.log" | tail -1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*/ \1/'
    echo
done

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (see fuzz/artifacts/)"
    exit 1
fi
echo "all ${#targets[@]} targets ran ${secs}s without a finding"
