#!/bin/sh
# rmctl as a user runs it: the happy paths and each kind of bad input, with
# the exit status and the message that names the problem.
# Usage: check-rmctl.sh RMCTL PLUGIN_DIR HAVE_REGISTRY(true|false)
set -u
rmctl=$1 plugin_dir=$2 have_registry=$3
failures=0 passed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

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
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
