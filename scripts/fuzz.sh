#!/bin/sh
# Builds the libFuzzer targets of tests/fuzz (clang; ASan and UBSan) in
# build-fuzz and runs them one after another, each on a copy of its
# committed seed corpus, so a run never changes the committed corpus.
# Prints one line per target and exits non-zero on any finding (crash,
# leak, timeout, out-of-memory).
#
#   scripts/fuzz.sh               the long run: each target until 10,000,000
#                                 executions ($RM_FUZZ_RUNS), at most 4 h each
#   scripts/fuzz.sh SECONDS       each target for SECONDS (scripts/test.sh: 30)
#   scripts/fuzz.sh SECONDS NAME...   only these targets (config, model_key,
#                                 node_table, descriptor, control_segment,
#                                 device_table)
#   scripts/fuzz.sh --seeds       rewrites the generated seeds in
#                                 tests/fuzz/corpus/<target>/ (regress-* stay)
#
# A finding is kept in build-fuzz/fuzz-findings/<target>/ (replay it with
# build-fuzz/tests/fuzz/fuzz_<target> FILE), the log in
# build-fuzz/fuzz-logs/<target>.log, and one JSON line per target in
# build-fuzz/meson-logs/fuzzlog.json for scripts/test.sh's summary.
set -eu
cd "$(dirname "$0")/.."

BUILD=build-fuzz
RUNS=${RM_FUZZ_RUNS:-10000000}
LONG_RUN_CAP_S=14400

scripts/bootstrap.sh
if [ ! -f "$BUILD/build.ninja" ]; then
    setup_log=$(mktemp)
    CC=clang meson setup "$BUILD" -Dfuzz=enabled -Dtests=false -Dbenchmarks=false \
        -Dwerror=true >"$setup_log" 2>&1 || { tail -40 "$setup_log"; rm -f "$setup_log"; exit 1; }
    rm -f "$setup_log"
fi
mkdir -p "$BUILD/fuzz-logs" "$BUILD/meson-logs"
meson compile -C "$BUILD" >"$BUILD/fuzz-logs/build.log" 2>&1 ||
    { tail -40 "$BUILD/fuzz-logs/build.log"; exit 1; }

targets=""
for exe in "$BUILD"/tests/fuzz/fuzz_*; do
    [ -f "$exe" ] && [ -x "$exe" ] && targets="$targets ${exe##*/fuzz_}"
done
if [ -z "$targets" ]; then
    echo "fuzz: no targets in $BUILD (needs clang with libFuzzer)" >&2
    exit 1
fi

if [ "${1:-}" = "--seeds" ]; then
    for name in $targets; do
        dir=tests/fuzz/corpus/$name
        mkdir -p "$dir"
        find "$dir" -type f ! -name 'regress-*' -delete
        RM_FUZZ_WRITE_SEEDS=$dir "$BUILD/tests/fuzz/fuzz_$name"
        echo "fuzz_$name: $(find "$dir" -type f | wc -l) seeds in $dir"
    done
    exit 0
fi

if [ $# -gt 0 ]; then
    case $1 in
        *[!0-9]* | '') echo "usage: scripts/fuzz.sh [SECONDS [TARGET...]] | --seeds" >&2; exit 2 ;;
    esac
    limit="-max_total_time=$1"
    shift
    [ $# -gt 0 ] && targets=$*
else
    limit="-runs=$RUNS -max_total_time=$LONG_RUN_CAP_S"
fi

# Segments a crashed target leaves in /dev/shm carry this tag in their
# namespace (fuzz_common.h), so they can be removed without touching
# anyone else's.
tag="s$$"
work=$(mktemp -d)
remove_leftovers() {
    for leftover in /dev/shm/rm.fz-"$tag"-* /dev/shm/rmreg.fz-"$tag"-* \
        /dev/shm/rmcu.fz-"$tag"-*; do
        [ -e "$leftover" ] && rm -f "$leftover"
    done
    rm -rf "$work"
}
trap remove_leftovers EXIT INT TERM

results="$BUILD/meson-logs/fuzzlog.json"
: >"$results"
failed=0
for name in $targets; do
    exe="$BUILD/tests/fuzz/fuzz_$name"
    if [ ! -x "$exe" ]; then
        echo "fuzz: no target fuzz_$name in $BUILD" >&2
        exit 2
    fi
    corpus="$work/$name"
    mkdir -p "$corpus"
    cp tests/fuzz/corpus/"$name"/* "$corpus"/
    findings="$BUILD/fuzz-findings/$name"
    rm -rf "$findings"
    mkdir -p "$findings"
    log="$BUILD/fuzz-logs/$name.log"
    dict=""
    [ -f "tests/fuzz/fuzz_$name.dict" ] && dict="-dict=tests/fuzz/fuzz_$name.dict"
    start=$(date +%s)
    status=0
    # shellcheck disable=SC2086
    RM_FUZZ_SHM_TAG=$tag ASAN_OPTIONS=detect_leaks=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$exe" $limit $dict -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$findings/" "$corpus" >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - start))
    remove_leftovers
    work=$(mktemp -d)

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    count() { find "$findings" -type f -name "$1-*" | wc -l; }
    crashes=$(count crash) leaks=$(count leak) timeouts=$(count timeout) ooms=$(count oom)
    result=OK
    if [ "$status" -ne 0 ] || [ $((crashes + leaks + timeouts + ooms)) -ne 0 ]; then
        result=FAIL
        failed=1
    fi
    printf 'fuzz_%s: %s, %s executions in %s s (%s/s), %s crashes, %s leaks, %s timeouts, %s %s\n' \
        "$name" "$result" "${runs:-?}" "$seconds" "${rate:-?}" "$crashes" "$leaks" \
        "$timeouts" "$ooms" "out-of-memory"
    # What the target itself reports at exit (how far inputs got).
    sed -n "s/^fuzz_$name: /    /p" "$log"
    if [ "$result" = FAIL ]; then
        [ "$status" -ne 0 ] && echo "    exit status $status; the log is $log:"
        grep -E 'invariant violated|ERROR:|SUMMARY:|runtime error' "$log" | head -n 5 | sed 's/^/    /'
        find "$findings" -type f | sed 's/^/    finding: /'
    fi
    printf '{"name": "fuzz_%s", "result": "%s", "executions": %s, "seconds": %s, ' \
        "$name" "$result" "${runs:-0}" "$seconds" >>"$results"
    printf '"crashes": %s, "leaks": %s, "timeouts": %s, "ooms": %s}\n' \
        "$crashes" "$leaks" "$timeouts" "$ooms" >>"$results"
done
exit "$failed"
