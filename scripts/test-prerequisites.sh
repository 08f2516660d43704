#!/usr/bin/env bash
# What the tests need from the system, installed from Debian's packages when we are root (CI, containers),
# otherwise named with the exact command to run. Then Redis at 127.0.0.1:6379 is started if nothing answers.
#   redis-server   the BullMQ/blob-store tests (and tests that start their own on free ports)
#   promtool       validates every /metrics exposition (package prometheus)
#   kubectl        renders the k8s/ overlays (package kubernetes-client)
#   chromium       the run page's browser test (driven by playwright-core)
set -uo pipefail

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
