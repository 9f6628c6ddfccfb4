#!/bin/sh
# Sets up a fresh machine, then builds and runs every test: the default
# build with warnings as errors (unit, integration, ABI, Rust host,
# valgrind, benchmark smoke runs), then ASan+UBSan and TSan builds, then
# each libFuzzer target for a bounded time (scripts/fuzz.sh).
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

run_build() { # DIR SETUP [meson setup options...]
    dir=$1 setup=$2
    shift 2
    [ -f "$dir/build.ninja" ] || meson setup "$dir" -Dwerror=true "$@" >/dev/null
    meson compile -C "$dir" >/dev/null
    echo "== tests: $dir ($setup) =="
    if [ "$setup" = default ]; then
        meson test -C "$dir" --print-errorlogs --num-processes 2
    else
        meson test -C "$dir" --print-errorlogs --num-processes 2 --setup "$setup"
    fi
}

run_build build default
run_build build-asan asan -Db_sanitize=address,undefined -Db_lundef=false
run_build build-tsan tsan -Db_sanitize=thread -Db_lundef=false

# Each fuzz target for a bounded time (the long run is scripts/fuzz.sh with
# no argument). Each target counts as one test below; a finding fails it.
echo "== tests: build-fuzz (libFuzzer, ${RM_FUZZ_CI_SECONDS:=30} s per target) =="
rm -f build-fuzz/meson-logs/fuzzlog.json
scripts/fuzz.sh "$RM_FUZZ_CI_SECONDS" || true

# One closing line over the four runs, from meson's machine-readable logs
# and scripts/fuzz.sh's (a missing fuzz log is one failed test).
python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog-asan.json \
    build-tsan/meson-logs/testlog-tsan.json build-fuzz/meson-logs/fuzzlog.json <<'SUMMARY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0}
for path in sys.argv[1:]:
    try:
        lines = open(path).readlines()
    except OSError:
        lines = ['{"result": "FAIL"}']
    if not lines:
        lines = ['{"result": "FAIL"}']
    for line in lines:
        result = json.loads(line)["result"]
        key = "OK" if result in ("OK", "EXPECTEDFAIL") else "SKIP" if result == "SKIP" else "FAIL"
        counts[key] += 1
print("tests: %d passed, %d failed, %d skipped" % (counts["OK"], counts["FAIL"], counts["SKIP"]))
sys.exit(1 if counts["FAIL"] else 0)
SUMMARY
