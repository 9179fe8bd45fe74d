#!/usr/bin/env bash
# Builds the release cz-proxy as one static executable (glibc linked in with crt-static: no
# dynamic loader, no libc.so, no NSS modules at run time) and prints its path. The Dockerfile
# and CI both run this script, so the binary CI tests is the one the image ships.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu) ;;
  *) echo "build-proxy: host $host is not *-linux-gnu; this script links glibc statically, run it on a glibc Linux host (the Dockerfile's builder is one)" >&2; exit 1 ;;
esac
# An explicit --target keeps the flag off build scripts and proc-macros, which must stay dynamic.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --release -p cz-proxy --target "$host" >&2
# The release profile keeps line tables for backtraces (34 MB); the image ships without them (8 MB).
mkdir -p target/image
binary=target/image/cz-proxy
strip -o "$binary" "target/$host/release/cz-proxy"
if ! file "$binary" | grep -Eq 'static(-pie)? linked|statically linked'; then
  echo "build-proxy: $binary is not statically linked: $(file -b "$binary")" >&2
  exit 1
fi
echo "$PWD/$binary"
