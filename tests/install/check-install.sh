#!/bin/sh
# `meson install` into a scratch DESTDIR puts the plugin in the plugin
# directory, and a host found through pkg-config compiles against the
# installed header and loads the installed plugin from the directory that
# pkg-config names.
# Usage: check-install.sh MESON BUILD_DIR CC
set -eu
meson=$1 build=$2 cc=$3
destdir=$(mktemp -d)
trap 'rm -rf "$destdir"' EXIT
"$meson" install -C "$build" --destdir "$destdir" --no-rebuild --quiet >/dev/null

pc=$(find "$destdir" -name rm_plugin.pc | head -n 1)
[ -n "$pc" ] || { echo "rm_plugin.pc not installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$destdir
plugindir=$(pkg-config --variable=plugindir rm_plugin)
# pkgconf applies the sysroot to variables too; pkg-config does not.
case $plugindir in "$destdir"/*) ;; *) plugindir=$destdir$plugindir ;; esac
[ -f "$plugindir/rm_plugin.so" ] || { echo "no rm_plugin.so in $plugindir"; exit 1; }

cat >"$destdir/host.c" <<'HOST'
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <rm_plugin.h>
int main(int argc, char **argv)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/rm_plugin.so", argv[1]);
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (so == NULL) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    rm_plugin_negotiate_fn negotiate;
    void *symbol = dlsym(so, RM_PLUGIN_ENTRY_POINT);
    memcpy(&negotiate, &symbol, sizeof negotiate);
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.min_abi_version = RM_ABI_VERSION(1, 0);
    request.max_abi_version = RM_ABI_VERSION_CURRENT;
    uint32_t picked;
    const rm_plugin_v1 *vt;
    if (negotiate(&request, &picked, &vt) != RM_OK) return 1;
    printf("installed %s %s, ABI %u.%u\n", vt->name, vt->version,
           RM_ABI_VERSION_MAJOR(picked), RM_ABI_VERSION_MINOR(picked));
    return 0;
}
HOST
# shellcheck disable=SC2046
"$cc" -std=c99 -Wall -Werror $(pkg-config --cflags rm_plugin) "$destdir/host.c" -o "$destdir/host" -ldl
"$destdir/host" "$plugindir"
