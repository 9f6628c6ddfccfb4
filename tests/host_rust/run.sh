#!/bin/sh
# Builds the Rust reference host with cargo and runs it against the plugin.
# Usage: run.sh CARGO SOURCE_DIR TARGET_DIR PLUGIN_SO
# Exit status: the host's (0 pass, 1 fail), or 77 (meson's "skipped") when
# the toolchain is too old for the crate.
set -eu

if [ "$#" -ne 4 ]; then
    echo "usage: $0 CARGO SOURCE_DIR TARGET_DIR PLUGIN_SO" >&2
    exit 2
fi
cargo=$1
source_dir=$2
target_dir=$3
plugin_so=$4

# The crate needs Rust 1.77 (std::mem::offset_of!, C string literals).
version=$("$cargo" --version 2>/dev/null | sed -n 's/^cargo \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
if [ -z "$version" ]; then
    echo "rust host skipped: '$cargo --version' failed"
    exit 77
fi
set -- $version
if [ "$1" -lt 1 ] || { [ "$1" -eq 1 ] && [ "$2" -lt 77 ]; }; then
    echo "rust host skipped: cargo $1.$2 is older than 1.77"
    exit 77
fi

# No dependencies, so no network: --offline. The lock file is committed, so
# cargo writes nothing into the source tree; everything goes to target_dir.
"$cargo" build --offline --quiet \
    --manifest-path "$source_dir/Cargo.toml" \
    --target-dir "$target_dir"

exec "$target_dir/debug/rm_host_rust" "$plugin_so"
