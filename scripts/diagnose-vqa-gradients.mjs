// Issue 13 diagnostic: does the signal reach the backbone when fine-tuning VQA-RAD from random initialisation?
// Fine-tunes `tiny` (random init, a BPE vocabulary of 1,000 trained on the questions) on all VQA-RAD training
// questions in steps of 32 and prints the gradient norm of each input path (vision encoder, text encoder, fusion,
// VQA head) every 20 steps, the training accuracy per epoch and the validation accuracy (the bench's carve: 10 %
// validation, 15 % held out, by image; the held-out split is never read). Built libraries needed (`npm run build`).
//   node scripts/diagnose-vqa-gradients.mjs [learningRate=1e-3] [headMultiplier=1] [epochs=2] [vqaLoss=bce-sum]
//     [taskInputs=image+text] [dropout=0.1] [imageSize=40] [warmupFraction=0.1] [hiddenSize=32 (heads: width / 16)]
//     [headBias=zero] [crops=official (on: random-resized crops, scale 0.9–1, on VQA-RAD too)]
// Readings and what they suggest: BENCHMARKS.md, "learning", issue 13.
import { writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trainTokenizer, readVqaTaskSplit, SkipLog } from '@m3ae/data';
import { chooseBackend, computeTaskGradients, flattenDownstream, setDownstreamFromFlat, AdamW } from '@m3ae/model';
import { planFinetune, createTaskModel, buildTrainBatch, trainSampler, evaluateSplit } from '@m3ae/tasks';

const data = join(process.env['M3AE_SHARED_DATA'] ?? join(import.meta.dirname, '../../shared/data'), 'vqa_rad');
const work = await mkdtemp(join(tmpdir(), 'diag-'));
await chooseBackend({ backend: 'wasm' });
const train = await readVqaTaskSplit('vqa-rad', data, 'train', { skipLog: new SkipLog() });
await writeFile(join(work, 'q.txt'), train.map((e) => e.question).join('\n') + '\n');
await trainTokenizer({ sources: [{ kind: 'text', path: join(work, 'q.txt') }], vocabSize: 1000, output: join(work, 'tok.json'), agreementSamples: 5 });
const arg = (i, d) => process.argv[i] ?? d;
const lr = Number(arg(2, 1e-3)), head = Number(arg(3, 1)), epochs = Number(arg(4, 2)), vqaLoss = arg(5, 'bce-sum'), taskInputs = arg(6, 'image+text');
const dropout = Number(arg(7, 0.1)), imageSize = Number(arg(8, 40)), warmupFraction = Number(arg(9, 0.1)), hidden = Number(arg(10, 32)), headBias = arg(11, 'zero'), crops = arg(12, 'official');
const carve = { seed: 0, valFraction: 0.1, testFraction: 0.15 };
const plan = await planFinetune({ task: 'vqa-rad', data, init: 'random', preset: 'tiny', tokenizer: join(work, 'tok.json'), carve, imageSize, globalBatch: 32, microBatch: 32, epochs, seed: 0, learningRate: lr, lrMultiplierHead: head, lrMultiplierMultiModal: 1, vqaLoss, inputs: taskInputs, headBias });
plan.config.dropout = dropout;
if (crops === 'on') plan.settings.augment = true;
if (hidden !== plan.config.hiddenSize) Object.assign(plan.config, { hiddenSize: hidden, numHeads: Math.max(1, hidden / 16) });
const model = await createTaskModel(plan);
const s = plan.settings;
console.log(`train ${plan.train.examples.length} val ${plan.val?.examples.length} answers ${plan.head.outputs} steps ${s.steps} lr ${lr} head x${head} loss ${vqaLoss} inputs ${taskInputs} dropout ${dropout} ${imageSize} px warm-up ${warmupFraction} width ${plan.config.hiddenSize} head bias ${headBias} crops ${crops} (augment ${plan.settings.augment})`);
const opt = new AdamW(model.manifest, { learningRate: lr, totalSteps: s.steps, warmupFraction, lrMultiplierHead: head, lrMultiplierMultiModal: 1, clipNorm: 1 });
let params = await flattenDownstream(model);
const sampler = trainSampler(plan);
const groups = (g) => {
  const out = {};
  for (const e of model.manifest.entries) {
    if (e.offset === null) continue;
    const k = e.name.startsWith('language_encoder') ? 'text' : e.name.startsWith('vision_encoder') ? 'vision' : e.name.startsWith('vqa_head') ? 'head' : 'fusion';
    const n = e.shape.reduce((a, b) => a * b, 1);
    let ss = 0;
    for (let i = e.offset; i < e.offset + n; i++) ss += g[i] * g[i];
    out[k] = (out[k] ?? 0) + ss;
  }
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Math.sqrt(v).toExponential(2)]));
};
let win = { loss: 0, correct: 0, n: 0 };
for (let step = 0; step < s.steps; step++) {
  const idx = Array.from(sampler.batchAt(step).indices);
  const batch = await buildTrainBatch(plan, idx, step);
  const r = await computeTaskGradients(model, batch, { normalizer: idx.length, training: true });
  if (step === 0 || step === s.steps - 1 || step % 20 === 0) console.log(`step ${step} grad norms`, JSON.stringify(groups(r.grads)));
  win.loss += r.sum; win.correct += r.correct; win.n += r.count;
  opt.update(params, Float32Array.from(r.grads));
  setDownstreamFromFlat(model, params);
  if ((step + 1) % s.stepsPerEpoch === 0) {
    const ev = await evaluateSplit(model, plan.val, { tokenizer: plan.tokenizer, images: plan.images, textLength: s.textLength, batchSize: 64 });
    const v = ev.metrics.vqa;
    const counts = new Map();
    for (const p of ev.predictions) counts.set(p, (counts.get(p) ?? 0) + 1);
    console.log(`epoch ${(step + 1) / s.stepsPerEpoch}: train loss ${(win.loss / win.n).toFixed(3)} acc ${(100 * win.correct / win.n).toFixed(1)}% | val loss ${ev.metrics.loss.toFixed(3)} acc ${(100 * v.overall.accuracy).toFixed(1)}% (open ${(100 * v.open.accuracy).toFixed(1)}, closed ${(100 * v.closed.accuracy).toFixed(1)}), ${counts.size} distinct answers predicted`);
    win = { loss: 0, correct: 0, n: 0 };
  }
}
