#!/bin/sh
# One run on a borrowed machine with an NVIDIA GPU (the repository copied
# to it, maybe no internet): builds rm_plugin, runs `meson test --suite
# gpu`, rmctl's CUDA driver line and GPU demo (the device tensor handoff
# and the weights 4 processes share), bench_cuda --json (full plan),
# bench_gpu_weights --json (a 1 GiB model, 1/2/4/8 processes) and
# bench_tensor --quick --json, and writes everything under $OUT
# (default ./gpu-out): the logs, the JSON, nvidia-smi -q, the driver
# version, and summary.txt / summary.json with one status per step.
#
# It never fails silently: every step is OK, FAIL, SKIP (with why) or
# MISSING in the summary, and the exit status is 1 when any step FAILed.
# On a machine without a GPU the GPU steps skip (bench_cuda exits 77, the
# demo prints its one skip line) and the rest still runs, so the script
# can be tried anywhere. Budget: each step has a timeout; the whole run
# stays well under 8 minutes on 16 cores.
#
# Offline: the build needs meson, ninja, a C compiler and the jemalloc
# 5.3.0 tarball in subprojects/packagecache (git-ignored: copy it along);
# the tests also need Criterion. When any is missing the script tries
# scripts/bootstrap.sh (apt-get; fails without a network, which it says).
# Without Criterion it builds with -Dtests=false, runs the benchmarks and
# reports the gpu suite as not run (FAIL on a GPU machine).
set -u
cd "$(dirname "$0")/.."
root=$PWD
OUT=${OUT:-$root/gpu-out}
mkdir -p "$OUT" || { echo "gpu.sh: cannot create $OUT" >&2; exit 1; }
OUT=$(cd "$OUT" && pwd)
BUILD=${GPU_BUILD_DIR:-$root/build-gpu}
start=$(date +%s)
: >"$OUT/summary.txt"
printf '[' >"$OUT/summary.json"
first_json=1
failures=0
gpu=0

elapsed() { echo $(($(date +%s) - start)); }
say() { echo "gpu.sh [$(elapsed)s]: $*"; }
# record STEP STATUS DETAIL: one line in summary.txt and summary.json.
record() {
    printf '%-22s %-7s %s\n' "$1" "$2" "$3" >>"$OUT/summary.txt"
    detail=$(printf '%s' "$3" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r\t')
    [ "$first_json" -eq 1 ] || printf ',' >>"$OUT/summary.json"
    first_json=0
    printf '\n {"step":"%s","status":"%s","detail":"%s","at_s":%s}' "$1" "$2" "$detail" \
        "$(elapsed)" >>"$OUT/summary.json"
    [ "$2" != FAIL ] || failures=$((failures + 1))
    say "$1: $2 $3"
}
finish() {
    printf '\n]\n' >>"$OUT/summary.json"
    say "done in $(elapsed)s; $failures step(s) failed; everything is in $OUT"
    cat "$OUT/summary.txt"
    [ "$failures" -eq 0 ] && exit 0
    exit 1
}

# ---- the machine ------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "cpus: $(nproc)"
    [ -r /etc/os-release ] && . /etc/os-release && echo "os: ${PRETTY_NAME:-unknown}"
    echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo 'not a git checkout')"
    echo "CUDA_VISIBLE_DEVICES: ${CUDA_VISIBLE_DEVICES-unset}"
    echo "libcuda: $(ldconfig -p 2>/dev/null | grep -m1 'libcuda\.so\.1 ' || echo 'not in the ldconfig cache')"
} >"$OUT/machine.txt" 2>&1
if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 60 nvidia-smi -q >"$OUT/nvidia-smi-q.txt" 2>&1
    timeout 30 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
    timeout 30 nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,mig.mode.current \
        --format=csv >"$OUT/gpus.csv" 2>&1
    driver=$(timeout 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null |
             head -n 1)
    echo "${driver:-unknown}" >"$OUT/driver-version.txt"
    count=$(timeout 30 nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
    if [ "$count" -gt 0 ]; then
        gpu=1
        record machine OK "$count GPU(s), driver ${driver:-unknown}"
    else
        record machine SKIP "nvidia-smi is installed but lists no GPU (see nvidia-smi.txt)"
    fi
else
    echo "no nvidia-smi on this machine" >"$OUT/driver-version.txt"
    echo "no nvidia-smi on this machine" >"$OUT/nvidia-smi-q.txt"
    record machine SKIP "no nvidia-smi: no NVIDIA driver here; GPU steps will skip"
fi
# A GPU step that cannot run is a failure on a GPU machine, a skip elsewhere.
not_run() { if [ "$gpu" -eq 1 ]; then echo FAIL; else echo SKIP; fi; }

# ---- tools ------------------------------------------------------------------
missing_tools() {
    m=""
    for tool in meson ninja cc pkg-config python3; do
        command -v "$tool" >/dev/null 2>&1 || m="$m $tool"
    done
    [ -d subprojects/jemalloc-5.3.0 ] || [ -f subprojects/packagecache/jemalloc-5.3.0.tar.bz2 ] ||
        m="$m jemalloc-tarball"
    pkg-config --exists criterion 2>/dev/null || m="$m criterion"
    echo "$m"
}
missing=$(missing_tools)
if [ -n "$missing" ]; then
    say "missing:$missing; trying scripts/bootstrap.sh (needs apt-get and a network)"
    timeout 240 scripts/bootstrap.sh >"$OUT/bootstrap.log" 2>&1
    status=$?
    missing=$(missing_tools)
    if [ -n "$missing" ]; then
        record bootstrap FAIL "still missing:$missing (bootstrap exit $status, see bootstrap.log; offline: install them, and copy subprojects/packagecache along)"
    else
        record bootstrap OK "installed what was missing"
    fi
fi
case " $missing " in
*" meson "* | *" ninja "* | *" cc "* | *" jemalloc-tarball "*)
    record build FAIL "cannot build without:$missing"
    finish
    ;;
esac
tests_option=true
case " $missing " in *" criterion "*) tests_option=false ;; esac

# ---- build -------------------------------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
    timeout 180 meson setup "$BUILD" -Dwerror=true -Dtests=$tests_option >"$OUT/build.log" 2>&1
    status=$?
else
    timeout 180 meson configure "$BUILD" -Dtests=$tests_option >"$OUT/build.log" 2>&1
    status=$?
fi
[ "$status" -eq 0 ] && timeout 300 meson compile -C "$BUILD" >>"$OUT/build.log" 2>&1
status=$?
if [ "$status" -ne 0 ]; then
    tail -n 40 "$OUT/build.log"
    record build FAIL "meson setup/compile exit $status (build.log)"
    finish
fi
record build OK "$BUILD (tests=$tests_option)"
plugin=$BUILD/rm_plugin.so

# ---- the gpu suite ----------------------------------------------------------
if [ "$tests_option" = false ]; then
    record gpu-suite "$(not_run)" "not run: Criterion is missing, so no test is built"
else
    listed=$(meson test -C "$BUILD" --suite gpu --list 2>/dev/null | grep -c ' / ')
    timeout 240 meson test -C "$BUILD" --suite gpu --print-errorlogs --num-processes 1 \
        >"$OUT/gpu-suite.log" 2>&1
    status=$?
    cp "$BUILD/meson-logs/testlog.txt" "$OUT/gpu-suite-testlog.txt" 2>/dev/null
    cp "$BUILD/meson-logs/testlog.json" "$OUT/gpu-suite-testlog.json" 2>/dev/null
    counts=$(grep -E '^(Ok|Fail|Skipped|Timeout|Expected Fail|Unexpected Pass): ' \
             "$OUT/gpu-suite.log" | tr -s ' ' | tr '\n' ' ')
    if grep -q 'No suitable tests defined' "$OUT/gpu-suite.log" || [ "$listed" -eq 0 ]; then
        if [ "$gpu" -eq 1 ]; then
            record gpu-suite FAIL "no test in suite gpu in this tree (is the branch with it merged?)"
        else
            record gpu-suite MISSING "no test in suite gpu in this tree (no GPU here either)"
        fi
    elif [ "$status" -eq 124 ]; then
        record gpu-suite FAIL "timed out after 240 s ($counts; gpu-suite.log)"
    elif [ "$status" -ne 0 ]; then
        record gpu-suite FAIL "exit $status ($counts; gpu-suite.log)"
    else
        record gpu-suite OK "$counts"
    fi
fi

# ---- rmctl: the driver line and the GPU demo --------------------------------
rmctl=$BUILD/tools/rmctl/rmctl
REMOTEMEDIA_PLUGIN_DIR=$BUILD timeout 60 "$rmctl" info >"$OUT/rmctl-info.txt" 2>&1
status=$?
line=$(grep -m1 '^cuda driver:' "$OUT/rmctl-info.txt")
if [ "$status" -ne 0 ]; then
    record rmctl-info FAIL "exit $status (rmctl-info.txt)"
else
    record rmctl-info OK "${line:-no cuda driver line}"
fi
REMOTEMEDIA_PLUGIN_DIR=$BUILD timeout 120 "$rmctl" -c shm.namespace="gpu-sh-$$" demo gpu \
    >"$OUT/rmctl-demo-gpu.txt" 2>&1
status=$?
if [ "$status" -ne 0 ]; then
    record rmctl-demo-gpu FAIL "exit $status (rmctl-demo-gpu.txt)"
elif grep -q 'GPU handoff skipped' "$OUT/rmctl-demo-gpu.txt"; then
    record rmctl-demo-gpu "$(not_run)" "$(grep -m1 'GPU handoff skipped' "$OUT/rmctl-demo-gpu.txt")"
else
    record rmctl-demo-gpu OK "$(grep -m1 'IPC handles opened' "$OUT/rmctl-demo-gpu.txt" | sed 's/^ *//')"
fi
# The same run's second part: the weights 4 processes share (ABI 1.4).
if [ "$status" -ne 0 ] || grep -q 'GPU handoff skipped' "$OUT/rmctl-demo-gpu.txt"; then
    : # reported above
elif ! grep -q '^== GPU weights shared' "$OUT/rmctl-demo-gpu.txt"; then
    record rmctl-demo-weights FAIL "no weights part in rmctl-demo-gpu.txt"
elif grep -q 'part skipped' "$OUT/rmctl-demo-gpu.txt"; then
    record rmctl-demo-weights "$(not_run)" "$(grep -m1 'part skipped' "$OUT/rmctl-demo-gpu.txt")"
else
    record rmctl-demo-weights OK "$(grep -m1 'x one copy of' "$OUT/rmctl-demo-gpu.txt" | sed 's/^ *//'); write $(grep -A1 'writes .* through its mapping' "$OUT/rmctl-demo-gpu.txt" | tail -n 1 | sed 's/^ *//' | cut -c1-80)"
fi

# ---- benchmarks -------------------------------------------------------------
# bench_cuda: the real driver (libcuda.so.1), whatever RM_PLUGIN_CONFIG says.
timeout 200 "$BUILD/benches/bench_cuda" --json --driver libcuda.so.1 "$plugin" \
    >"$OUT/bench_cuda.json" 2>"$OUT/bench_cuda.log"
status=$?
if [ "$status" -eq 77 ]; then
    record bench-cuda "$(not_run)" "exit 77: $(tail -n 1 "$OUT/bench_cuda.log")"
elif [ "$status" -ne 0 ]; then
    record bench-cuda FAIL "exit $status (bench_cuda.log)"
else
    met=$(grep -c '"met":true' "$OUT/bench_cuda.json")
    missed=$(grep -c '"met":false' "$OUT/bench_cuda.json")
    fake=$(grep -c '"fake_driver":true' "$OUT/bench_cuda.json")
    if [ "$fake" -gt 0 ]; then
        record bench-cuda FAIL "measured through the FAKE driver: not GPU figures"
    else
        record bench-cuda OK "$(wc -l <"$OUT/bench_cuda.json") figures, targets met $met, missed $missed"
    fi
fi
# bench_gpu_weights: a 1 GiB model, 1, 2, 4 and 8 processes, the real driver.
timeout 300 "$BUILD/benches/bench_gpu_weights" --json --bytes 1G --processes 1,2,4,8 \
    --driver libcuda.so.1 "$plugin" >"$OUT/bench_gpu_weights.json" 2>"$OUT/bench_gpu_weights.log"
status=$?
if [ ! -x "$BUILD/benches/bench_gpu_weights" ]; then
    record bench-gpu-weights FAIL "not built (model-registry or cuda-ipc missing from the build?)"
elif [ "$status" -eq 77 ]; then
    record bench-gpu-weights "$(not_run)" "exit 77: $(tail -n 1 "$OUT/bench_gpu_weights.log")"
elif [ "$status" -ne 0 ]; then
    record bench-gpu-weights FAIL "exit $status (bench_gpu_weights.log)"
elif grep -q '"fake_driver":true' "$OUT/bench_gpu_weights.json"; then
    record bench-gpu-weights FAIL "measured through the FAKE driver: not GPU figures"
else
    met=$(grep -c '"met":true' "$OUT/bench_gpu_weights.json")
    missed=$(grep -c '"met":false' "$OUT/bench_gpu_weights.json")
    record bench-gpu-weights OK "$(wc -l <"$OUT/bench_gpu_weights.json") figures, targets met $met, missed $missed"
fi
timeout 120 "$BUILD/benches/bench_tensor" --quick --json "$plugin" \
    >"$OUT/bench_tensor.json" 2>"$OUT/bench_tensor.log"
status=$?
if [ "$status" -ne 0 ]; then
    record bench-tensor FAIL "exit $status (bench_tensor.log)"
else
    record bench-tensor OK "$(wc -l <"$OUT/bench_tensor.json") figures (--quick)"
fi
finish
