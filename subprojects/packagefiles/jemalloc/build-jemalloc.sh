#!/bin/sh
# Configures and builds jemalloc's static PIC archive out of tree.
# Usage: build-jemalloc.sh SRC_DIR WORK_DIR PREFIX OUT_ARCHIVE OUT_HEADER CC...
set -eu
src=$1 work=$2 prefix=$3 out_archive=$4 out_header=$5
shift 5
# Outputs are given relative to the build root; resolve them before cd.
case $out_archive in /*) ;; *) out_archive=$(pwd)/$out_archive ;; esac
case $out_header in /*) ;; *) out_header=$(pwd)/$out_header ;; esac
mkdir -p "$work"
cd "$work"
if [ ! -f Makefile ]; then
    # --disable-initial-exec-tls: the plugin is dlopen()ed; IE TLS would fail.
    # --without-export + prefix: nothing of jemalloc reaches the host, and it
    # never replaces the host's malloc.
    CC="$*" CFLAGS="-O2 -g" "$src/configure" \
        --disable-initial-exec-tls \
        --with-jemalloc-prefix="$prefix" \
        --with-private-namespace="${prefix}private_" \
        --without-export \
        --disable-cxx \
        --disable-libdl \
        --enable-stats \
        >configure.log 2>&1 || { tail -40 configure.log; exit 1; }
fi
jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs" build_lib_static >make.log 2>&1 || { tail -40 make.log; exit 1; }
cp lib/libjemalloc_pic.a "$out_archive"
cp include/jemalloc/jemalloc.h "$out_header"
