#!/usr/bin/env bash
# What the tests need from the system, installed from Debian's packages when we are root (CI, containers),
# otherwise named with the exact command to run. Then Redis at 127.0.0.1:6379 is started if nothing answers.
#   redis-server   the BullMQ/blob-store tests (and tests that start their own on free ports)
#   promtool       validates every /metrics exposition (package prometheus)
#   kubectl        renders the k8s/ overlays (package kubernetes-client)
#   chromium       the run page's browser test (driven by playwright-core)
#   lavapipe       Mesa's Vulkan CPU driver + the Vulkan loader, for the webgpu backend's tests without a GPU
#                  (mesa-vulkan-drivers, libvulkan1 from bookworm-backports: Mesa ≥ 24; Debian 12's 22.3 is refused
#                  by Dawn). The tests point VK_DRIVER_FILES at its ICD json; under CI=true they fail without it.
set -uo pipefail

# Mesa's lavapipe, new enough for Dawn: Mesa ≥ 24 from Debian's bookworm-backports suite.
lavapipe_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null) || return 1
  [ -f /usr/share/vulkan/icd.d/lvp_icd.json ] || [ -f /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || return 1
  dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q 'ok installed' || return 1
  [ "${v%%.*}" -ge 24 ] 2>/dev/null
}
if ! lavapipe_ok; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 && [ -f /etc/debian_version ]; then
    echo "test prerequisites: installing Mesa's lavapipe (mesa-vulkan-drivers, libvulkan1) from bookworm-backports"
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        >/etc/apt/sources.list.d/bookworm-backports.sources
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null || {
      echo "test prerequisites: apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1 failed" >&2
      exit 1
    }
    lavapipe_ok || { echo "test prerequisites: lavapipe installed but not Mesa >= 24 (Dawn refuses older)" >&2; exit 1; }
  else
    echo "test prerequisites missing: Mesa >= 24 lavapipe (the webgpu tests skip without it, and fail under CI=true)" >&2
    echo "install it with: add Debian's bookworm-backports suite to apt, then sudo apt-get install -y --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test prerequisites: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
      echo "test prerequisites: apt-get install ${missing[*]} failed" >&2
      exit 1
    }
  else
    echo "test prerequisites missing: ${missing[*]}" >&2
    echo "install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "test prerequisites: starting redis-server on 127.0.0.1:6379 (no persistence)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "test prerequisites: redis-server did not answer on 127.0.0.1:6379" >&2; exit 1; }
fi
exit 0
