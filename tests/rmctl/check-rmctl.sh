#!/bin/sh
# rmctl as a user runs it: the happy paths and each kind of bad input, with
# the exit status and the message that names the problem.
# Usage: check-rmctl.sh RMCTL PLUGIN_DIR HAVE_REGISTRY HAVE_SHARED_MEMORY [POOL_HOLDER]
#   (true|false for the two capabilities; POOL_HOLDER when shared-memory is built)
set -u
rmctl=$1 plugin_dir=$2 have_registry=$3 have_shm=$4 pool_holder=${5:-}
failures=0 passed=0
work=$(mktemp -d)
# Namespaces of our own, so that other tests' pools never show up here.
ns_base="rmctl-$$"
holders=""
cleanup() {
    for pid in $holders; do kill -KILL "$pid" 2>/dev/null; done
    rm -f /dev/shm/rm."$ns_base"-*
    rm -rf "$work"
}
trap cleanup EXIT

expect() { # NAME STATUS PATTERN -- COMMAND...
    name=$1 want_status=$2 pattern=$3
    shift 4
    "$@" >"$work/out" 2>&1
    status=$?
    if [ "$status" -ne "$want_status" ] || ! grep -q -- "$pattern" "$work/out"; then
        echo "FAIL $name: status $status (want $want_status), output:"
        sed 's/^/    /' "$work/out"
        failures=$((failures + 1))
    else
        echo "ok   $name"
        passed=$((passed + 1))
    fi
}

check() { # NAME DETAIL CONDITION...: passes when CONDITION succeeds
    name=$1 detail=$2
    shift 2
    if "$@"; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name: $detail"
        failures=$((failures + 1))
    fi
}

segments() { # NAMESPACE: how many of its segments /dev/shm holds
    ls /dev/shm | grep -c "^rm\.$1\."
}

start_holder() { # NAMESPACE: starts pool_holder, waits until it holds its pool
    "$pool_holder" "$1" 60 >"$work/holder.$1" 2>&1 &
    holder=$!
    holders="$holders $holder"
    tries=0
    while ! grep -q '^ready ' "$work/holder.$1"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 200 ] || ! kill -0 "$holder" 2>/dev/null; then
            echo "pool_holder $1 did not get ready:"
            sed 's/^/    /' "$work/holder.$1"
            return 1
        fi
        sleep 0.05
    done
    pool=$(sed -n 's/^ready //p' "$work/holder.$1")
}

# The row of pool $1 in the ls output: name pid alive pool(2 fields)
# committed(2) tensors live(2) holders.
pool_row_is() { # POOL PID TENSORS LIVE HOLDERS
    awk -v pool="$1" -v pid="$2" -v tensors="$3" -v live="$4" -v holders="$5" '
        $1 == pool { found = 1
                     ok = $2 == pid && $3 == "yes" && $8 == tensors &&
                          $9 " " $10 == live && $11 == holders }
        END { exit !(found && ok) }' "$work/out"
}

export REMOTEMEDIA_PLUGIN_DIR="/nonexistent:$plugin_dir"
expect "info lists effective config" 0 "registry.ttl_s       = 30" -- "$rmctl" info
expect "info with -c" 0 "registry.max_models  = 7" -- "$rmctl" -c registry.max_models=7 info
printf 'registry.ttl_s = 4.5\n' >"$work/rm.conf"
expect "info with --config" 0 "registry.ttl_s       = 4.5" -- "$rmctl" --config "$work/rm.conf" info
expect "unknown command" 2 "unknown command 'bogus'" -- "$rmctl" bogus
expect "no command" 2 "usage: rmctl" -- "$rmctl"
expect "unknown option" 2 "unknown option '--frobnicate'" -- "$rmctl" --frobnicate info
expect "-c without =" 2 "-c expects key=value" -- "$rmctl" -c registry.ttl_s info
expect "-c without value" 2 "-c needs a value" -- "$rmctl" -c
expect "unknown key" 1 "unknown configuration key 'no.such'" -- "$rmctl" -c no.such=1 info
expect "invalid value" 1 "invalid value 'soon' for 'registry.ttl_s'" -- "$rmctl" -c registry.ttl_s=soon info
expect "missing config file" 1 "cannot open configuration file" -- "$rmctl" --config "$work/none.conf" info
REMOTEMEDIA_PLUGIN_DIR=/nonexistent expect "plugin not found" 1 "rm_plugin.so not found" -- "$rmctl" info
expect "not a plugin" 1 "dlopen" -- "$rmctl" --plugin /etc/hostname info
if [ "$have_registry" = true ]; then
    expect "demo shares one load" 0 "loader calls: 1; all 6 nodes got the same instance: yes" -- "$rmctl" demo
else
    expect "demo without the registry" 0 "model registry not built" -- "$rmctl" demo
fi

# ---- shared memory: ls, gc and the tensor handoff -------------------------
if [ "$have_registry" = true ]; then only_registry=model-registry; else only_registry=none; fi
if [ "$have_shm" = true ]; then
    expect "ls on an empty namespace" 0 "^no pools$" -- "$rmctl" -c shm.namespace="$ns_base-empty" ls
    expect "ls names the namespace" 0 "^namespace $ns_base-empty$" -- \
        "$rmctl" -c shm.namespace="$ns_base-empty" ls
    expect "gc on an empty namespace" 0 "by gc (tensor_reclaim): *0 segments" -- \
        "$rmctl" -c shm.namespace="$ns_base-empty" gc
    expect "ls with shared-memory disabled" 1 "FEATURE_DISABLED" -- \
        "$rmctl" -c features=$only_registry ls
    expect "gc with shared-memory disabled" 1 "FEATURE_DISABLED" -- \
        "$rmctl" -c features=$only_registry gc

    ns="$ns_base-live"
    if start_holder "$ns"; then
        expect "ls shows a live pool" 0 "$pool" -- "$rmctl" -c shm.namespace="$ns" ls
        check "ls row: pid, alive, 2 tensors, 1.0 MiB, 1 holder" "$(cat "$work/out")" \
            pool_row_is "$pool" "$holder" 2 "1.0 MiB" 1
        kill -TERM "$holder"
        wait "$holder"
        check "holder exits cleanly, leaves no segments" "$(ls /dev/shm)" \
            [ "$(segments "$ns")" -eq 0 ]
        expect "ls after the holder left" 0 "^no pools$" -- "$rmctl" -c shm.namespace="$ns" ls
    else
        failures=$((failures + 1))
    fi

    ns="$ns_base-dead"
    if start_holder "$ns"; then
        kill -KILL "$holder"
        wait "$holder" 2>/dev/null
        left=$(segments "$ns")
        check "SIGKILLed holder leaves segments" "$(ls /dev/shm)" [ "$left" -gt 0 ]
        # Creating gc's context unlinks them already: gc says so.
        expect "gc counts what context creation unlinked" 0 \
            "at start-up (context creation): $left segments of dead owners unlinked" -- \
            "$rmctl" -c shm.namespace="$ns" gc
        check "gc lists no pools left" "$(cat "$work/out")" grep -q "^no pools$" "$work/out"
        check "gc leaves no segments of the dead holder" "$(ls /dev/shm)" \
            [ "$(segments "$ns")" -eq 0 ]
    else
        failures=$((failures + 1))
    fi

    expect "bad namespace" 1 "invalid value 'no/slash' for 'shm.namespace'" -- \
        "$rmctl" -c shm.namespace=no/slash ls
    ns="$ns_base-demo"
    expect "demo: the child imports a read-only view" 0 \
        "child [0-9]*: float32 \[2,3,4\] at .*, imported,shareable,read-only" -- \
        "$rmctl" -c shm.namespace="$ns" demo
    check "demo: the child sees the parent's data" "$(cat "$work/out")" \
        grep -q "data \[\[\[0,1,2,3\],\[4,5,6,7\],\[8,9,10,11\]\],\[\[12,13" "$work/out"
    check "demo: equal checksums" "$(cat "$work/out")" grep -q "the parent's [0-9a-f]*: equal" "$work/out"
    check "demo: the parent sees the child's write" "$(cat "$work/out")" \
        grep -q 'the parent reads "written by child [0-9]*"' "$work/out"
    check "demo: the child's release freed the small tensor" "$(cat "$work/out")" \
        grep -q "after the child exits: live tensors 1 .*remote releases 1" "$work/out"
    check "demo: nothing live at the end" "$(cat "$work/out")" \
        grep -q "at the end: live tensors 0 " "$work/out"
    check "demo leaves no segments" "$(ls /dev/shm)" [ "$(segments "$ns")" -eq 0 ]
    expect "demo with shared-memory disabled" 0 "shared-memory disabled by the configuration" -- \
        "$rmctl" -c features=$only_registry demo
else
    expect "ls without shared-memory" 1 "not built" -- "$rmctl" ls
    expect "gc without shared-memory" 1 "not built" -- "$rmctl" gc
    expect "bad namespace without shared-memory" 1 "shm.namespace" -- \
        "$rmctl" -c shm.namespace=no/slash ls
    expect "demo without shared-memory" 0 "shared-memory not built" -- "$rmctl" demo
fi

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
