#!/bin/sh
# Sets up a fresh machine, builds rm_plugin and runs `rmctl demo`.
set -eu
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
meson compile -C build >/dev/null
REMOTEMEDIA_PLUGIN_DIR="$PWD/build" exec build/tools/rmctl/rmctl demo
