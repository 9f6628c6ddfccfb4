#!/bin/sh
# Prepares a fresh Debian 12 machine to build rm_plugin: installs what is
# missing with apt-get and seeds meson's package cache with jemalloc 5.3.0
# from Debian's source package (the upstream release tarball, same sha256),
# so the bundled jemalloc builds offline. Idempotent; run as root or with
# sudo available.
set -eu
cd "$(dirname "$0")/.."

JEMALLOC_TARBALL=subprojects/packagecache/jemalloc-5.3.0.tar.bz2
JEMALLOC_SHA256=2db82d1e7119df3e71b7640219b6dfe84789bc0537983c3b7ac4f7189aecfeaa
# clang and libclang-rt-14-dev (libFuzzer, ASan and UBSan runtimes; only
# recommended by clang) build the fuzz targets (scripts/fuzz.sh).
# python3-numpy and python3-pytest run the Python package's tests
# (bindings/python); python3-torch is optional and large, so not here.
PACKAGES="build-essential g++ meson ninja-build pkg-config python3 libcriterion-dev \
abigail-tools valgrind bzip2 dpkg-dev libdlpack-dev clang libclang-rt-14-dev \
python3-numpy python3-pytest"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "bootstrap: installing$missing"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

sha_ok() { echo "$JEMALLOC_SHA256  $1" | sha256sum -c --status 2>/dev/null; }

if [ -d subprojects/jemalloc-5.3.0 ] || { [ -f "$JEMALLOC_TARBALL" ] && sha_ok "$JEMALLOC_TARBALL"; }; then
    exit 0
fi
# apt-get source needs a deb-src entry; a private sources list and state
# directory leave the system's apt configuration untouched.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/parts"
# The mirror is the one this machine already uses for Debian's packages.
mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
         grep -v security | head -n 1)
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {
                      for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
             /etc/apt/sources.list 2>/dev/null)
fi
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
if [ -z "$mirror" ] || [ -z "$codename" ]; then
    echo "bootstrap: cannot find this machine's Debian mirror in /etc/apt" >&2
    exit 1
fi
cat >"$work/sources.list" <<SOURCES
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $codename main
SOURCES
apt_private="-o Dir::Etc::SourceList=$work/sources.list -o Dir::Etc::SourceParts=$work/parts -o Dir::State::Lists=$work/lists"
echo "bootstrap: fetching jemalloc 5.3.0 from Debian's source package"
# shellcheck disable=SC2086
as_root apt-get $apt_private update -qq
# shellcheck disable=SC2086
(cd "$work" && as_root apt-get $apt_private source --download-only -qq jemalloc >/dev/null 2>&1)
mkdir -p subprojects/packagecache
cp "$work/jemalloc_5.3.0.orig.tar.bz2" "$JEMALLOC_TARBALL"
if ! sha_ok "$JEMALLOC_TARBALL"; then
    echo "bootstrap: jemalloc tarball checksum mismatch" >&2
    rm -f "$JEMALLOC_TARBALL"
    exit 1
fi
echo "bootstrap: jemalloc 5.3.0 tarball verified"
