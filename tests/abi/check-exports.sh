#!/bin/sh
# The shared object exports exactly the global symbols of the version script.
# Usage: check-exports.sh PLUGIN.so VERSION_SCRIPT
set -eu
so=$1 map=$2
# Every defined dynamic symbol counts, version nodes (type A) included.
exported=$(nm -D --defined-only "$so" | awk '{ sub(/@.*/, "", $3); print $3 }' | sort)
declared=$(sed -n '/global:/,/local:/p' "$map" | grep -v -e 'global:' -e 'local:' |
           tr -d ' \t;' | grep -v '^$' | sort)
if [ "$exported" != "$declared" ]; then
    echo "exported symbols differ from $map"
    echo "--- exported:"; echo "$exported"
    echo "--- declared:"; echo "$declared"
    exit 1
fi
echo "exports: $exported"
