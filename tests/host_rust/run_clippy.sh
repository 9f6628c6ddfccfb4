#!/bin/sh
# Lints the rm_plugin crate (bindings/rust) with clippy, warnings denied:
# cargo clippy --offline --all-targets -- -D warnings.
# Usage: run_clippy.sh CARGO CRATE_DIR TARGET_DIR
# Exit status: cargo's, or 77 (meson's "skipped") when `cargo clippy
# --version` fails (clippy not installed) or cargo is older than 1.77.
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
    echo "clippy skipped: '$cargo --version' failed"
    exit 77
fi
set -- $version
if [ "$1" -lt 1 ] || { [ "$1" -eq 1 ] && [ "$2" -lt 77 ]; }; then
    echo "clippy skipped: cargo $1.$2 is older than 1.77"
    exit 77
fi
if ! "$cargo" clippy --version >/dev/null 2>&1; then
    echo "clippy skipped: '$cargo clippy --version' failed (clippy not installed)"
    exit 77
fi

# Its own target dir: clippy's outputs are not cargo test's.
exec "$cargo" clippy --offline --quiet --manifest-path "$crate_dir/Cargo.toml" \
    --target-dir "$target_dir" --all-targets -- -D warnings
