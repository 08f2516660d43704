#!/usr/bin/env bash
# The GPU figures of issue 14, in one time-boxed call of the `device` tool (build .device/ first with
# scripts/device/build-bundle.sh, then: run command `bash scripts/device/run.sh`, carry [".device"]).
# Every part is time-boxed and never stops the others; results land in $OUT (run.log, parts.jsonl, one file a part).
#   DEVICE_BUDGET  seconds for everything (default 540: a call may last 600)
#   DEVICE_QUICK=1 tiny sizes, to try the script on a machine without a GPU (with VK_DRIVER_FILES at lavapipe)
#   DEVICE_PARTS   default "env small train base" (issue 14); "env scaling wasm8" gives issue 12's 16-core figures;
#                  "env learning" issue 13's GPU recipe (needs .device/data: node scripts/device/pack-data.mjs). Each
#                  set is its own call; a session has 15 device minutes in all, so the default set comes first.
set -u
T0=$(date +%s)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/m3ae-device-out}
W=${DEVICE_WORK:-/tmp/m3ae-device}
BUDGET=${DEVICE_BUDGET:-540}
QUICK=${DEVICE_QUICK:-0}
PARTS=" ${DEVICE_PARTS:-env small train base} "
mkdir -p "$OUT" "$W"
LOG=$OUT/run.log
: > "$OUT/parts.jsonl"
log() { echo "[$(date +%T) +$(($(date +%s) - T0))s] $*" | tee -a "$LOG" >&2; }
# limit MAX RESERVE: at most MAX seconds, leaving RESERVE for the parts after this one (at least 10).
limit() { local l=$((BUDGET - ($(date +%s) - T0) - $2)); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 10 ] && l=10; echo "$l"; }
# part NAME SECONDS CMD...: stdout to $OUT/NAME.txt, stderr (its tail) to the log; never fatal.
part() {
  local name=$1 lim=$2 t rc
  shift 2
  case "$PARTS" in *" $name "*) ;; *) return 0 ;; esac
  t=$(date +%s)
  log "== $name (limit ${lim}s): $*"
  timeout -k 5 "$lim" "$@" > "$OUT/$name.txt" 2> "$W/$name.err"
  rc=$?
  tail -c 4000 "$W/$name.err" >> "$LOG"
  echo "{\"part\":\"$name\",\"rc\":$rc,\"seconds\":$(($(date +%s) - t)),\"limit\":$lim}" >> "$OUT/parts.jsonl"
  log "== $name: rc $rc in $(($(date +%s) - t))s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
}

log "start: quick=$QUICK budget=${BUDGET}s parts=[$PARTS] host=$(hostname)"
if [ ! -f "$W/.unpacked" ] || [ "$ROOT/.device/bundle.tar.xz" -nt "$W/.unpacked" ]; then
  [ -f "$ROOT/.device/bundle.tar.xz" ] || { log "no .device/bundle.tar.xz: run scripts/device/build-bundle.sh and carry .device"; exit 2; }
  rm -rf "$W/app" "$W/node" "$W/redis" "$W/vulkan"
  if command -v xz >/dev/null; then xz -T0 -dc "$ROOT/.device/bundle.tar.xz" | tar -C "$W" -xf -
  else python3 -c "import sys,tarfile; tarfile.open(sys.argv[1],'r:xz').extractall(sys.argv[2])" "$ROOT/.device/bundle.tar.xz" "$W"; fi
  touch "$W/.unpacked"
fi
NODE=$W/node/bin/node
command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] 2>/dev/null && NODE=$(command -v node)
export PATH="$W/redis/bin:$PATH"
# Dawn dlopens libvulkan.so.1: the carried loader where the machine has none.
ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || export LD_LIBRARY_PATH="$W/vulkan${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PY=${PY:-$([ -x /opt/torch/.venv/bin/python3 ] && echo /opt/torch/.venv/bin/python3 || echo python3)}
M3AE=("$NODE" "$W/app/tools/bin/m3ae.js")
export M3AE_LOG_LEVEL=warn
log "node $("$NODE" --version); python $PY; $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"

if [ "$QUICK" = 1 ]; then SMALL=(--preset tiny --batch 8); BASE=(--preset tiny --batch 16 --quick); TRAIN=(--steps 2 --global-batch 4 --micro-batch 2)
  SCALING=(--quick); WASM8=(--preset tiny --steps 2 --global-batch 16 --micro-batch 2 --blob-redis 2); WASM8_WORKERS="1 2"; LEARNING=(--quick --size "budget-s=60,out=$W/learning")
else SMALL=(--preset small --batch 128); BASE=(--preset base --batch 32 --quick); TRAIN=(--preset small --steps 3 --global-batch 64 --micro-batch 32)
  SCALING=(); WASM8=(--preset small --steps 4 --global-batch 16 --micro-batch 2 --blob-redis 4); WASM8_WORKERS="1 8"; LEARNING=(--size "out=$W/learning"); fi

part env "$(limit 60 400)" bash -c "nvidia-smi 2>&1 | head -20; ${M3AE[*]} doctor --backend webgpu 2>&1"
# `small` at the issue's batch: samples/s, dispatch/device/readback, TFLOP/s, kernels per step, PyTorch fp32 on CUDA and the ratio.
part small "$(limit 200 240)" "${M3AE[@]}" bench model --backend webgpu "${SMALL[@]}" --pytorch "$PY" --json "$OUT/small.json"
# Whole runs on the GPU: 1 and 2 worker processes must end with the same params sha256.
part train "$(limit 120 150)" bash -c "for w in 1 2; do M3AE_BACKEND=webgpu ${M3AE[*]} train --local --workers \$w ${TRAIN[*]} --work-dir $W/train-\$w --json --no-metrics | tail -1; done"
part base "$(limit 300 10)" "${M3AE[@]}" bench model --backend webgpu "${BASE[@]}" --pytorch "$PY" --json "$OUT/base.json"
# Issue 12 on 16 cores: the sharded exchange (synthetic compute; the full 365.6 M-parameter base exchange with 8
# workers where memory allows), then `small` with real wasm workers, 1 and 8 (the issue's 8-over-1 figure; each run's
# JSON line has samplesPerSecond and the params sha256, which must be equal).
part scaling "$(limit 330 150)" "${M3AE[@]}" bench scaling "${SCALING[@]}" --json "$OUT/scaling.json"
# Then the top worker count again with bf16 gradients (half the bytes: the model in BENCHMARKS says the exchange decides).
part wasm8 "$(limit 240 10)" bash -c "for w in $WASM8_WORKERS; do M3AE_BACKEND=wasm ${M3AE[*]} train --local --workers \$w ${WASM8[*]} --work-dir $W/wasm8-\$w --json --no-metrics | tail -1; done; M3AE_BACKEND=wasm ${M3AE[*]} train --local --workers \$w ${WASM8[*]} --grad-encoding bf16 --work-dir $W/wasm8-bf16 --json --no-metrics | tail -1"
# Issue 13 on the GPU: bench learning's webgpu recipe (part b: small pre-trained on MedPix, then VQA-RAD fine-tuned
# from it, from random initialisation and question-only, sized to its budget), on the packed data.
part learning "$(limit 540 5)" env M3AE_SHARED_DATA="$ROOT/.device/data" "${M3AE[@]}" bench learning --backend webgpu "${LEARNING[@]}" --json "$OUT/learning.json"
log "done in $(($(date +%s) - T0))s; results in $OUT"
