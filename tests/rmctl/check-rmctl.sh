#!/bin/sh
# rmctl as a user runs it: the happy paths and each kind of bad input, with
# the exit status and the message that names the problem.
# Usage: check-rmctl.sh RMCTL PLUGIN_DIR HAVE_REGISTRY HAVE_SHARED_MEMORY [POOL_HOLDER]
#                       [--model-holder MODEL_HOLDER]
#   (true|false for the two capabilities; POOL_HOLDER when shared-memory is
#   built, MODEL_HOLDER when the model registry is)
set -u
rmctl=$1 plugin_dir=$2 have_registry=$3 have_shm=$4
shift 4
pool_holder="" model_holder=""
while [ $# -gt 0 ]; do
    case $1 in
    --model-holder) model_holder=$2; shift 2 ;;
    *) pool_holder=$1; shift ;;
    esac
done
failures=0 passed=0
work=$(mktemp -d)
# Namespaces of our own, so that other tests' pools and node tables never
# show up here.
ns_base="rmctl-$$"
holders=""
demo_ns=""
cleanup() {
    for pid in $holders; do kill -KILL "$pid" 2>/dev/null; done
    rm -f /dev/shm/rm."$ns_base"-* /dev/shm/rmreg."$ns_base"-*
    [ -n "$demo_ns" ] && rm -f /dev/shm/rmreg."$demo_ns".*
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

# ---- node registry helpers ----
node_files() { # NAMESPACE [m]: how many node-registry files (model segments with m)
    ls /dev/shm | grep -c "^rmreg\.$1\.${2:+$2\.}"
}

start_model_holder() { # NAMESPACE KEY MIB [LOAD_MS]: starts model_holder and waits
    # until it holds the model (READY), or with LOAD_MS until its loader runs
    # (LOADING); sets holder (pid) and how (loaded/attached)
    log="$work/model_holder.$(date +%s%N)"
    "$model_holder" "$1" "$2" "$3" 60 ${4:-} >"$log" 2>&1 &
    holder=$!
    holders="$holders $holder"
    if [ -n "${4:-}" ]; then want=LOADING; else want=READY; fi
    tries=0
    while ! grep -q "^$want " "$log"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 200 ] || ! kill -0 "$holder" 2>/dev/null; then
            echo "model_holder $1 $2 did not print $want:"
            sed 's/^/    /' "$log"
            return 1
        fi
        sleep 0.05
    done
    how=$(sed -n "s/^READY \([a-z]*\) .*/\1/p" "$log")
}

# Exactly one row of model $1 in the output (ls, gc, demo tables: key
# bytes(2 fields) memory state holders refs idle age loader) has these
# values; "*" matches anything. CPU models of node scope live in "shm".
model_row_is() { # KEY BYTES STATE HOLDERS REFS IDLE LOADER
    awk -v key="$1" -v bytes="$2" -v state="$3" -v holders="$4" -v refs="$5" \
        -v idle="$6" -v loader="$7" '
        function is(value, want) { return want == "*" || value == want }
        $1 == key && is($2 " " $3, bytes) && ($4 == "shm" || $5 == "loading") &&
            is($5, state) && is($6, holders) && is($7, refs) && is($8, idle) &&
            is($10, loader) { found++ }
        END { exit found != 1 }' "$work/out"
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
expect "info lists effective config" 0 "^  registry\.ttl_s  *= 30$" -- "$rmctl" info
check "info lists every key, the last one too" "$(cat "$work/out")" \
    grep -q "^  registry\.table  *= create$" "$work/out"
expect "info with -c" 0 "^  registry\.max_models  *= 7$" -- "$rmctl" -c registry.max_models=7 info
printf 'registry.ttl_s = 4.5\n' >"$work/rm.conf"
expect "info with --config" 0 "^  registry\.ttl_s  *= 4\.5$" -- "$rmctl" --config "$work/rm.conf" info
expect "unknown command" 2 "unknown command 'bogus'" -- "$rmctl" bogus
expect "no command" 2 "usage: rmctl" -- "$rmctl"
expect "unknown option" 2 "unknown option '--frobnicate'" -- "$rmctl" --frobnicate info
expect "-c without =" 2 "-c expects key=value" -- "$rmctl" -c registry.ttl_s info
expect "-c without value" 2 "-c needs a value" -- "$rmctl" -c
expect "unknown key" 1 "unknown configuration key 'no.such'" -- "$rmctl" -c no.such=1 info
expect "invalid value" 1 "invalid value 'soon' for 'registry.ttl_s'" -- "$rmctl" -c registry.ttl_s=soon info
expect "invalid registry.table" 1 \
    "invalid value 'maybe' for 'registry.table' (expected one of create, existing)" -- \
    "$rmctl" -c registry.table=maybe info
expect "missing config file" 1 "cannot open configuration file" -- "$rmctl" --config "$work/none.conf" info
REMOTEMEDIA_PLUGIN_DIR=/nonexistent expect "plugin not found" 1 "rm_plugin.so not found" -- "$rmctl" info
expect "not a plugin" 1 "dlopen" -- "$rmctl" --plugin /etc/hostname info
expect "--namespace without value" 2 "--namespace needs a value" -- "$rmctl" --namespace
expect "--namespace with a bad name" 1 "invalid value 'no/slash' for '[a-z]*.namespace'" -- \
    "$rmctl" --namespace no/slash ls
if [ "$have_registry" = true ]; then
    expect "demo shares one load" 0 "loader calls: 1; all 6 nodes got the same instance: yes" -- "$rmctl" demo
    # The node-scope section of the same run: 5 processes, one loader call.
    demo_ns=$(sed -n 's/.*registry\.namespace = \(demo-[0-9]*\) .*/\1/p' "$work/out")
    check "demo: node section runs in a private namespace" "$(cat "$work/out")" [ -n "$demo_ns" ]
    check "demo: 5 processes, one loader call, 4 attached" "$(cat "$work/out")" \
        grep -q "loader calls in all 5 processes: 1; loaded 1, attached 4 (their registry_metrics: loads 1, attaches 4)" "$work/out"
    check "demo: the late process attaches without loading" "$(cat "$work/out")" \
        grep -q "^   pid [0-9]*: attached in [0-9.]* [um]s" "$work/out"
    check "demo: the table shows 5 holders, 5 references" "$(cat "$work/out")" \
        model_row_is demo-weights@cpu "64.0 MiB" ready 5 5 - -
    check "demo: every process read the loader's bytes through a read-only shared map" \
        "$(cat "$work/out")" [ "$(grep -c '^ *[0-9]*  \(loaded\|attached\) .* ok  *r--s ' "$work/out")" -eq 5 ]
    check "demo: all map the same segment" "$(cat "$work/out")" \
        grep -q "^   all 5 map the same segment /dev/shm/rmreg\.$demo_ns\.m\.[0-9a-f]*: yes" "$work/out"
    check "demo: sum of Pss within 5% of one copy" "$(cat "$work/out")" \
        awk '/sum of Pss:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+x$/) { r = $i + 0; found = 1; break } }
             END { exit !(found && r >= 0.95 && r <= 1.05) }' "$work/out"
    check "demo: model_evict leaves no model" "$(cat "$work/out")" \
        grep -q 'model_evict("demo-weights@cpu"): OK; models left in the node table: 0 (0 bytes)' "$work/out"
    check "demo: its last context removed the table" "$(cat "$work/out")" \
        grep -q "^   namespace $demo_ns: nothing left (its last context removed the node table)" "$work/out"
    check "demo removes its node namespace" "$(ls /dev/shm)" \
        [ "${demo_ns:+named}:$(node_files "${demo_ns:-none}")" = named:0 ]
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
    # With the registry, ls and gc still show the node part (exit 0).
    if [ "$have_registry" = true ]; then want=0; else want=1; fi
    expect "ls without shared-memory" $want "pools: shared-memory not built" -- \
        "$rmctl" --namespace "$ns_base-empty" ls
    expect "gc without shared-memory" $want "pools: shared-memory not built" -- \
        "$rmctl" --namespace "$ns_base-empty" gc
    expect "bad namespace without shared-memory" 1 "shm.namespace" -- \
        "$rmctl" -c shm.namespace=no/slash ls
    expect "demo without shared-memory" 0 "shared-memory not built" -- "$rmctl" demo
fi

# ---- the node registry: ls, gc --------------------------------------------
if [ "$have_registry" = true ]; then
    if [ "$have_shm" = true ]; then only_shm=shared-memory; else only_shm=none; fi
    ns="$ns_base-nonode"
    expect "ls: a namespace without a node table" 0 \
        "^node registry $ns: no node table (no model is loaded or loading" -- \
        "$rmctl" --namespace "$ns" ls
    check "ls on an empty namespace creates nothing" "$(ls /dev/shm)" \
        [ "$(node_files "$ns"):$(segments "$ns")" = 0:0 ]
    # What ls does, straight: registry.table = existing opens no table and
    # makes none.
    expect "registry.table = existing without a table" 1 \
        "NOT_FOUND.*node registry '$ns' has no node table, and registry.table = existing" -- \
        "$rmctl" -c registry.scope=node -c registry.namespace="$ns" -c registry.table=existing info
    check "registry.table = existing creates nothing" "$(ls /dev/shm)" \
        [ "$(node_files "$ns")" -eq 0 ]
    expect "gc: a namespace without a node table" 0 "^node registry $ns: no node table.*nothing to reclaim" -- \
        "$rmctl" --namespace "$ns" gc
    check "gc leaves no node table" "$(ls /dev/shm)" [ "$(node_files "$ns")" -eq 0 ]

    ns="$ns_base-node"
    if start_model_holder "$ns" whisper-tiny@cpu 4; then
        first=$holder
        check "model_holder loaded the model" "$how" [ "$how" = loaded ]
        expect "ls shows the node registry" 0 \
            "^node registry $ns: 1 models ready, 4\.0 MiB$" -- \
            "$rmctl" --namespace "$ns" ls
        check "ls row: key, 4.0 MiB, ready, 1 holder, 1 reference, not idle" "$(cat "$work/out")" \
            model_row_is whisper-tiny@cpu "4.0 MiB" ready 1 1 - -
        expect "-c registry.namespace picks the node registry" 0 "^node registry $ns: " -- \
            "$rmctl" -c shm.namespace="$ns_base-empty" -c registry.namespace="$ns" ls
        check "ls row with -c registry.namespace" "$(cat "$work/out")" \
            model_row_is whisper-tiny@cpu "4.0 MiB" ready 1 1 - -
        expect "ls with the registry disabled" 1 "FEATURE_DISABLED" -- \
            "$rmctl" --namespace "$ns" -c features=$only_shm ls
        if start_model_holder "$ns" whisper-tiny@cpu 4; then
            second=$holder
            check "a second model_holder attaches" "$how" [ "$how" = attached ]
            expect "ls: 2 holders" 0 "^node registry $ns: " -- "$rmctl" --namespace "$ns" ls
            check "ls row: 2 holders, 2 references" "$(cat "$work/out")" \
                model_row_is whisper-tiny@cpu "4.0 MiB" ready 2 2 - -
            kill -TERM "$second"
            wait "$second"
            expect "ls after one holder released" 0 "^node registry $ns: " -- "$rmctl" --namespace "$ns" ls
            check "ls row: 1 holder, 1 reference" "$(cat "$work/out")" \
                model_row_is whisper-tiny@cpu "4.0 MiB" ready 1 1 - -
        else
            failures=$((failures + 1))
        fi
        kill -KILL "$first"
        wait "$first" 2>/dev/null
        # No ls here: its context's sweep would drop the reference first.
        expect "gc drops the SIGKILLed holder's reference" 0 "^dead references dropped in all:  1$" -- \
            "$rmctl" --namespace "$ns" gc
        check "gc: the model is left, idle, held by no one" "$(cat "$work/out")" \
            model_row_is whisper-tiny@cpu "4.0 MiB" ready 0 0 "*" -
        check "gc: nothing evicted within the TTL" "$(cat "$work/out")" \
            grep -q "by gc (registry_reclaim): .* 0 models evicted" "$work/out"
        check "gc keeps the table of an idle model" "$(cat "$work/out")" \
            grep -q "^node table kept (" "$work/out"
        check "the model's segment is still there" "$(ls /dev/shm)" [ "$(node_files "$ns" m)" -eq 1 ]
        # Evicting the last model leaves nothing (both holders are gone):
        # the same gc removes the table, counted as one segment more.
        expect "gc with a 1-byte budget evicts the idle model" 0 \
            "by gc (registry_reclaim): *0 dead references dropped, 0 loads abandoned, 1 models evicted, 1 segments unlinked, 5\.[0-9] MiB freed" -- \
            "$rmctl" --namespace "$ns" -c registry.max_bytes=1 gc
        check "gc: no models left" "$(cat "$work/out")" grep -q "^no models$" "$work/out"
        check "gc unlinked the model's segment" "$(ls /dev/shm)" [ "$(node_files "$ns" m)" -eq 0 ]
        check "gc says it removed the table" "$(cat "$work/out")" \
            grep -q "^node table removed (1\.[0-9] MiB; one of the segments unlinked): nothing was left in namespace $ns " "$work/out"
        check "the table is gone" "$(ls /dev/shm)" [ "$(node_files "$ns")" -eq 0 ]
    else
        failures=$((failures + 1))
    fi

    # A segment no table names (its loader died before the table existed,
    # or the table was removed): gc opens the registry to unlink it.
    ns="$ns_base-orphan"
    head -c 8192 /dev/zero >/dev/shm/rmreg."$ns".m.0123456789abcdef
    chmod 600 /dev/shm/rmreg."$ns".m.0123456789abcdef
    # The table gc made for the look is removed again: 2 segments.
    expect "gc unlinks an orphan model segment" 0 \
        "by gc (registry_reclaim): .* 2 segments unlinked, 1\.[0-9] MiB freed" -- "$rmctl" --namespace "$ns" gc
    check "gc says it made a table to look" "$(cat "$work/out")" \
        grep -q "^node registry $ns: no node table; gc made one so that registry_reclaim could look" "$work/out"
    check "gc: the orphan and the table it made" "$(cat "$work/out")" \
        grep -q "^node table removed (" "$work/out"
    check "the orphan segment is gone" "$(ls /dev/shm)" [ "$(node_files "$ns" m)" -eq 0 ]
    check "no table is left" "$(ls /dev/shm)" [ "$(node_files "$ns")" -eq 0 ]

    # A process attached to the table without a model keeps it while it
    # lives, and removes it when it exits (the namespace's last context).
    ns="$ns_base-idle"
    if start_model_holder "$ns" - 1; then
        idle=$holder
        expect "gc keeps the table of a live idle process" 0 "^node table kept (" -- \
            "$rmctl" --namespace "$ns" gc
        check "gc: 0 segments with a live idle process" "$(cat "$work/out")" \
            grep -q "by gc (registry_reclaim): .* 0 segments unlinked" "$work/out"
        check "the table is still there" "$(ls /dev/shm)" [ "$(node_files "$ns")" -eq 1 ]
        kill -TERM "$idle"
        wait "$idle"
        check "its last context removed the table" "$(ls /dev/shm)" [ "$(node_files "$ns")" -eq 0 ]
    else
        failures=$((failures + 1))
    fi
    # SIGKILLed, it cannot; gc finds it dead and removes the table.
    if start_model_holder "$ns" - 1; then
        kill -KILL "$holder"
        wait "$holder" 2>/dev/null
        check "a SIGKILLed idle process leaves the table" "$(ls /dev/shm)" [ "$(node_files "$ns")" -eq 1 ]
        expect "gc removes the table a dead process was attached to" 0 \
            "by gc (registry_reclaim): *0 dead references dropped, 0 loads abandoned, 0 models evicted, 1 segments unlinked, 1\.[0-9] MiB freed" -- \
            "$rmctl" --namespace "$ns" gc
        check "gc says so" "$(cat "$work/out")" \
            grep -q "^node table removed (1\.[0-9] MiB; one of the segments unlinked): nothing was left in namespace $ns (no model, no load, no live process)$" "$work/out"
        check "gc: no models left after removing the table" "$(cat "$work/out")" grep -q "^no models$" "$work/out"
        check "nothing of the namespace is left" "$(ls /dev/shm)" [ "$(node_files "$ns")" -eq 0 ]
    else
        failures=$((failures + 1))
    fi

    ns="$ns_base-load"
    if start_model_holder "$ns" slow@cpu 4 20000; then
        expect "ls shows a loading model" 0 "^node registry $ns: " -- "$rmctl" --namespace "$ns" ls
        check "ls row: loading, loader pid" "$(cat "$work/out")" \
            model_row_is slow@cpu "*" loading "*" 0 - "$holder"
        kill -KILL "$holder"
        wait "$holder" 2>/dev/null
        expect "gc abandons the dead loader's claim" 0 \
            "by gc (registry_reclaim): .*1 loads abandoned" -- "$rmctl" --namespace "$ns" gc
        check "gc: no models left after the dead load" "$(cat "$work/out")" grep -q "^no models$" "$work/out"
        check "no segment of the dead load left" "$(ls /dev/shm)" [ "$(node_files "$ns" m)" -eq 0 ]
        check "gc removed the dead loader's table" "$(cat "$work/out")" \
            grep -q "^node table removed (" "$work/out"
    else
        failures=$((failures + 1))
    fi
else
    expect "ls: node registry not built" $([ "$have_shm" = true ] && echo 0 || echo 1) \
        "node registry: model-registry not built" -- "$rmctl" --namespace "$ns_base-empty" ls
    expect "gc: node registry not built" $([ "$have_shm" = true ] && echo 0 || echo 1) \
        "node registry: model-registry not built" -- "$rmctl" --namespace "$ns_base-empty" gc
fi
check "no model segments of ours left" "$(ls /dev/shm)" \
    [ "$(ls /dev/shm | grep -c "^rmreg\.$ns_base-.*\.m\.")" -eq 0 ]
check "no node tables of ours left" "$(ls /dev/shm)" \
    [ "$(ls /dev/shm | grep -c "^rmreg\.$ns_base-")" -eq 0 ]

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
