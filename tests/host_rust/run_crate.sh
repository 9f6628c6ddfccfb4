#!/bin/sh
# Runs the rm_plugin crate's tests (bindings/rust: unit, integration,
# examples and doc tests) with cargo against the plugin just built.
# Usage: run_crate.sh CARGO CRATE_DIR TARGET_DIR
# The environment names the plugin (RM_PLUGIN_PATH), the ABI 1.0 shim
# (RM_OLD_PLUGIN_PATH) and the fake CUDA driver (FAKE_CUDA_LIBRARY);
# RM_REQUIRE_PLUGIN makes a missing plugin a failure rather than a skip.
# Exit status: cargo's, or 77 (meson's "skipped") for a toolchain older
# than the crate's 1.77.
set -eu

if [ "$#" -ne 3 ]; then
    echo "usage: $0 CARGO CRATE_DIR TARGET_DIR" >&2
    exit 2
fi
cargo=$1
crate_dir=$2
target_dir=$3

version=$("$cargo" --version 2>/dev/null | sed -n 's/^cargo \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
if [ -z "$version" ]; then
    echo "rust crate skipped: '$cargo --version' failed"
    exit 77
fi
set -- $version
if [ "$1" -lt 1 ] || { [ "$1" -eq 1 ] && [ "$2" -lt 77 ]; }; then
    echo "rust crate skipped: cargo $1.$2 is older than 1.77"
    exit 77
fi

# No dependencies, so no network; the lock file is committed, and every
# build output goes to target_dir, outside the source tree.
exec "$cargo" test --offline --manifest-path "$crate_dir/Cargo.toml" --target-dir "$target_dir"
