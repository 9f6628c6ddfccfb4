#!/bin/sh
# Sets up a fresh machine, then builds and runs every test: the default
# build with warnings as errors (unit, integration, ABI, Rust host,
# valgrind, benchmark smoke runs), then ASan+UBSan and TSan builds.
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
echo "all test builds passed"
