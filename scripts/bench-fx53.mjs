// Issue 12: the arithmetic cost of exact fixed-point (fx53) gradient sums against f32 summation, on one core, for
// one contribution of 16 M values (the `small` preset's size). Buffers are allocated once; the median of 5 runs.
// Built libraries needed (`npm run build`).   node scripts/bench-fx53.mjs [values=16000000]
import { addEncodedInto, addFixedInto, encodeTensor, fixedBytes, fixedToF32, quantizeInto } from '@m3ae/protocol';

const n = Number(process.argv[2] ?? 16_000_000);
const g = new Float32Array(n).map((_, i) => ((i % 97) - 48) * 1e-6);
const f32 = encodeTensor(g, 'f32');
const fx = encodeTensor(g, 'fx53');
const accF = new Float32Array(n);
const accX = new Float64Array(n);
const worker = new Float64Array(n);
const out = new Float32Array(n);
function median(f) {
  f();
  const t = [];
  for (let k = 0; k < 5; k++) {
    const s = performance.now();
    f();
    t.push(performance.now() - s);
  }
  return Number(t.sort((a, b) => a - b)[2].toFixed(1));
}
const result = {
  values: n,
  'f32 add (coordinator, per contribution) ms': median(() => addEncodedInto(accF, f32, 'f32')),
  'fx53 add (coordinator, per contribution) ms': median(() => addFixedInto(accX, fx)),
  'fx53 quantize + add (worker, per micro-batch) ms': median(() => { worker.fill(0); quantizeInto(worker, g); }),
  'fx53 to f32 (coordinator, once per step) ms': median(() => fixedToF32(accX, out)),
  'fx53 bytes per value': fixedBytes(accX).byteLength / n,
};
console.log(JSON.stringify(result, null, 1));
