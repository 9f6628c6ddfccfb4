#!/bin/sh
# rmctl's CUDA parts against the fake driver (tests/fake_cuda), chosen the
# way an operator would choose a driver: a configuration file named by
# RM_PLUGIN_CONFIG with cuda.driver in it.
#
#   check-rmctl-cuda.sh RMCTL PLUGIN_DIR FAKE_LIBCUDA handoff
#       [POOL_HOLDER]
#       info lists the fake device; `rmctl demo gpu` hands two device
#       tensors to an exec'd consumer, which checks every byte and opens one
#       IPC handle for both; ls shows pool_holder's pool as shm and its
#       device table as cuda, with its block; gc reports the CUDA figures;
#       nothing of the run is left in /dev/shm.
#   check-rmctl-cuda.sh RMCTL PLUGIN_DIR FAKE_LIBCUDA no-device
#       with no driver at the configured path, and with a driver that shows
#       no GPU, the demo prints one line with the reason, skips the handoff
#       and succeeds; info says why there is no driver.
set -u
rmctl=$1 plugin_dir=$2 fake=$3 mode=$4 pool_holder=${5:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export REMOTEMEDIA_PLUGIN_DIR="$plugin_dir"
export RM_PLUGIN_CONFIG="$work/rm_plugin.conf"
ns="rmctl-cuda-$$"
failures=0

fail() { # NAME OUTPUT
    echo "FAIL: $1"
    echo "$2" | sed 's/^/    /'
    failures=$((failures + 1))
}
run() { # NAME WANT_STATUS -- COMMAND...: output in $work/out
    name=$1 want=$2
    shift 3
    "$@" >"$work/out" 2>&1
    status=$?
    [ "$status" -eq "$want" ] || fail "$name: exit status $status, expected $want" "$(cat "$work/out")"
}
has() { # NAME PATTERN (grep -E over the last output)
    grep -Eq -- "$2" "$work/out" || fail "$1: no line matching '$2'" "$(cat "$work/out")"
}
lines() { # NAME PATTERN COUNT
    count=$(grep -Ec -- "$2" "$work/out")
    [ "$count" -eq "$3" ] || fail "$1: $count lines match '$2', expected $3" "$(cat "$work/out")"
}

case $mode in
handoff)
    printf 'cuda.driver = %s\nshm.namespace = %s\n' "$fake" "$ns" >"$RM_PLUGIN_CONFIG"
    run "info" 0 -- "$rmctl" info
    has "info: the fake driver and its device" \
        "^cuda driver: +13\.0 \(.*libcuda\.so\.1\), 1 device$"
    has "info: the device's ordinal and UUID" "^ +cuda:0 +GPU-[0-9a-f]{8}-"
    has "info: cuda.driver from the file" "^  cuda\.driver +=.*fake_cuda/libcuda\.so\.1$"
    has "info: the other 1.3 keys" "^  cuda\.block_bytes +="
    run "demo gpu" 0 -- "$rmctl" demo gpu
    has "demo: the producer fills through the driver" "fills them with cuMemcpyHtoD_v2"
    has "demo: the fake driver is named as such" "the fake driver of the tests"
    has "demo: the consumer imports on cuda:0" "consumer [0-9]+: imported 2 x 2\.0 MiB on cuda:0"
    has "demo: every byte crossed" "bytes equal to the producer's: yes"
    has "demo: one IPC handle for both tensors" \
        "IPC handles opened by the consumer: 1 for 2 tensors \(1 import served by a cached handle\)"
    has "demo: the round trip is timed" "round trip, export to checked reply .*: [0-9.]+ ms"
    has "demo: nothing left at the end" "device tensors at the end: 0 \(0 B\) in 0 blocks"
    lines "demo: no skip line" "GPU handoff skipped" 0
    if [ -n "$pool_holder" ]; then
        POOL_HOLDER_CUDA_DRIVER=$fake "$pool_holder" "$ns" 30 >"$work/holder" 2>&1 &
        holder=$!
        for _ in $(seq 100); do grep -q '^ready' "$work/holder" && break; sleep 0.1; done
        run "ls" 0 -- "$rmctl" ls
        has "ls: the MEMORY and BLOCKS columns" "HOLDERS +MEMORY +BLOCKS$"
        has "ls: the pool is a shm row" " 2 +1\.0 MiB +[0-9]+ +shm +-$"
        has "ls: the device table is a cuda row with its block" \
            " $holder +yes +4\.0 GiB +64\.0 MiB +1 +1\.0 MiB +[0-9]+ +cuda +1$"
        kill -TERM "$holder"
        wait "$holder"
    fi
    run "gc" 0 -- "$rmctl" gc
    has "gc: the CUDA figures" \
        "^device tensors \(tensor_reclaim\): [0-9]+ cached CUDA IPC handles closed, [0-9]+ device blocks freed$"
    left=$(ls /dev/shm | grep -E "^rm\.$ns\.|^fakecu\.[0-9]+\." | while read -r name; do
        pid=${name#fakecu.}; pid=${pid%%.*}
        case $name in fakecu.*) [ -d "/proc/$pid" ] || echo "$name" ;; *) echo "$name" ;; esac
    done)
    [ -z "$left" ] || fail "the demo left segments in /dev/shm" "$left"
    ;;
no-device)
    printf 'cuda.driver = %s\n' "$work/no-such-dir/libcuda.so.1" >"$RM_PLUGIN_CONFIG"
    run "demo gpu, no driver" 0 -- "$rmctl" demo gpu
    lines "demo: one plain line says why" \
        "^no usable CUDA device \(DEVICE_UNAVAILABLE: CUDA driver not found: .*\): GPU handoff skipped$" 1
    lines "demo: nothing else of the handoff" "^[0-9]\. " 0
    run "info, no driver" 0 -- "$rmctl" info
    has "info: says there is none, and why" "^cuda driver: +none usable: DEVICE_UNAVAILABLE: CUDA driver not found"
    printf 'cuda.driver = %s\n' "$fake" >"$RM_PLUGIN_CONFIG"
    FAKE_CUDA_DEVICES=0 run "demo gpu, no GPU" 0 -- "$rmctl" demo gpu
    lines "demo: one plain line says why (no GPU)" \
        "^no usable CUDA device \(DEVICE_UNAVAILABLE: .*\): GPU handoff skipped$" 1
    ;;
*)
    echo "usage: check-rmctl-cuda.sh RMCTL PLUGIN_DIR FAKE_LIBCUDA handoff|no-device" >&2
    exit 2
    ;;
esac
[ "$failures" -eq 0 ] || { echo "$failures checks failed"; exit 1; }
echo "all checks passed ($mode)"
