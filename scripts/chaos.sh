#!/bin/sh
# The long chaos soak (tests/chaos/chaos_driver.c): at least 5000 kills of
# random workers, by default in the default build (`build`, made by
# scripts/test.sh). Prints the driver's report; the last line is the one
# the README quotes. Exit status: the driver's (0 = no hang, mismatch,
# crash, leak, double load or unexpected error).
#   scripts/chaos.sh [KILLS] [BUILD_DIR]
set -eu
cd "$(dirname "$0")/.."
kills=${1:-5000}
build=${2:-build}
[ -f "$build/build.ninja" ] || { scripts/bootstrap.sh && meson setup "$build" -Dwerror=true >/dev/null; }
meson compile -C "$build" >/dev/null
log=$(mktemp)
status=0
RM_PLUGIN_PATH=$PWD/$build/rm_plugin.so "$build/tests/chaos/chaos_driver" \
    --worker "$build/tests/chaos/chaos_worker" --rmctl "$build/tools/rmctl/rmctl" \
    --kills "$kills" --seconds $((kills / 5 + 120)) >"$log" 2>&1 || status=$?
# The plugin's own warnings (a lock repaired after a kill, ...) are
# expected by the thousand; everything else is the report.
grep -v '^rm_plugin: warn' "$log" || true
rm -f "$log"
exit "$status"
