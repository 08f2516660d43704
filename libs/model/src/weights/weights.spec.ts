import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { presetConfig, type M3AEConfig } from '../config.js';
import { patchesForEmbedding } from '../inputs.js';
import { parameterSpecs, sincos2d } from '../params.js';
import { SafetensorsFile, writeSafetensors, type TensorInput } from '../safetensors/index.js';
import {
  cubicWeights,
  exportOfficial,
  fileSource,
  importOfficial,
  initFromClip,
  initFromRoberta,
  memorySource,
  officialMapping,
  resizeBicubicHWC,
  resizePositionEmbedding,
  withFileSource,
  type OfficialTensor,
} from './index.js';
import { findPython } from './python.js';

const tiny = presetConfig('tiny');

/** Deterministic pseudo-random values (no Math.random: failures must reproduce). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return out;
}

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * A synthetic official state dict for a configuration: every official key in PyTorch layout with random values,
 * plus what the real checkpoint carries and never uses.
 */
function syntheticOfficial(c: M3AEConfig, grid?: number): Map<string, OfficialTensor> {
  const sd = new Map<string, OfficialTensor>();
  let seed = 1;
  for (const m of officialMapping(c)) {
    if (sd.has(m.official)) continue;
    let shape = m.officialShape;
    if (m.transform.kind === 'positions' && grid !== undefined) shape = [grid * grid + 1, c.hiddenSize];
    const data = m.transform.kind === 'sincos' ? sincos2d(c.decoderHiddenSize, c.imageSize / c.patchSize) : values(size(shape), seed++);
    sd.set(m.official, { shape, data });
  }
  const D = c.hiddenSize;
  const extra: [string, number[]][] = [
    ['vision_encoder.token_embedding.weight', [10, 8]],
    ['vision_encoder.positional_embedding', [7, 8]],
    ['vision_encoder.ln_final.weight', [8]],
    ['vision_encoder.ln_final.bias', [8]],
    ['language_encoder.pooler.dense.weight', [D, D]],
    ['language_encoder.pooler.dense.bias', [D]],
    [`vision_encoder.visual.transformer.resblocks.${c.visionLayers}.ln_1.weight`, [D]],
    [`vision_encoder.visual.transformer.resblocks.${c.visionLayers}.attn.in_proj_weight`, [3 * D, D]],
    ['bogus.weight', [3]],
  ];
  for (const [k, shape] of extra) sd.set(k, { shape, data: values(size(shape), seed++) });
  return sd;
}

function toEntries(sd: ReadonlyMap<string, OfficialTensor>): [string, TensorInput][] {
  return [...sd].map(([k, t]) => [k, { dtype: 'F32', shape: t.shape, data: t.data }]);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'm3ae-weights-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the official mapping', () => {
  it.each(['tiny', 'small', 'base'])('names exactly the model parameters, in canonical order with their shapes (%s)', (preset) => {
    const c = presetConfig(preset);
    const ours = officialMapping(c).map((m) => ({ name: m.name, shape: [...m.shape] }));
    const specs = parameterSpecs(c).map((s) => ({ name: s.name, shape: [...s.shape] }));
    expect(ours).toEqual(specs);
  });

  it('covers the official base checkpoint: fused in_proj, [out, in] Linear weights, conv1, 11 CLIP blocks', () => {
    const base = presetConfig('base');
    const keys = new Map(officialMapping(base).map((m) => [m.official, m.officialShape]));
    expect(keys.get('vision_encoder.visual.conv1.weight')).toEqual([768, 3, 16, 16]);
    expect(keys.get('vision_encoder.visual.positional_embedding')).toEqual([325, 768]);
    expect(keys.get('vision_encoder.visual.transformer.resblocks.10.attn.in_proj_weight')).toEqual([2304, 768]);
    expect(keys.has('vision_encoder.visual.transformer.resblocks.11.attn.in_proj_weight')).toBe(false);
    expect(keys.get('language_encoder.embeddings.position_embeddings.weight')).toEqual([514, 768]);
    expect(keys.get('mlm_head.decoder.weight')).toEqual([50265, 768]);
    expect(keys.get('mim_head.decoder.resblocks.3.mlp.c_fc.weight')).toEqual([1536, 384]);
    expect(keys.get('mim_head.decoder_pred.weight')).toEqual([768, 384]);
    expect(keys.get('itm_head.fc.weight')).toEqual([2, 1536]);
    expect(keys.get('multi_modal_language_layers.5.crossattention.self.key.weight')).toEqual([768, 768]);
  });
});

describe('importing and exporting the official state dict', () => {
  it('imports a synthetic official checkpoint from safetensors, reports ignored/unknown keys, and exports it back byte for byte', async () => {
    const sd = syntheticOfficial(tiny);
    const path = join(dir, 'official.safetensors');
    // Real checkpoints carry HF's position_ids buffer as int64.
    await writeSafetensors(path, [...toEntries(sd), ['language_encoder.embeddings.position_ids', { dtype: 'I64', shape: [1, 18], data: new BigInt64Array(18) }]]);
    const { params, report } = await withFileSource(path, (s) => importOfficial(s, tiny));

    expect(report.missing).toEqual([]);
    expect(report.unknown).toEqual(['bogus.weight']);
    expect(report.adapted).toEqual([]);
    expect(report.ignored.map((x) => x.key).sort()).toEqual(
      [
        'language_encoder.embeddings.position_ids',
        'language_encoder.pooler.dense.bias',
        'language_encoder.pooler.dense.weight',
        'vision_encoder.ln_final.bias',
        'vision_encoder.ln_final.weight',
        'vision_encoder.positional_embedding',
        'vision_encoder.token_embedding.weight',
        'vision_encoder.visual.transformer.resblocks.2.attn.in_proj_weight',
        'vision_encoder.visual.transformer.resblocks.2.ln_1.weight',
      ].sort(),
    );
    expect(report.ignored.find((x) => x.key.endsWith('resblocks.2.ln_1.weight'))?.reason).toMatch(/beyond config.visionLayers = 2/);
    const specs = parameterSpecs(tiny);
    expect([...params.keys()]).toEqual(specs.map((s) => s.name));
    for (const s of specs) expect(params.get(s.name)?.length, s.name).toBe(size(s.shape));

    const back = exportOfficial(params, tiny);
    const kept = [...sd.keys()].filter((k) => !report.ignored.some((x) => x.key === k) && k !== 'bogus.weight');
    expect([...back.keys()].sort()).toEqual(kept.sort());
    for (const k of kept) {
      const a = sd.get(k);
      const b = back.get(k);
      expect(b?.shape, k).toEqual(a?.shape);
      expect(Buffer.from((b as OfficialTensor).data.buffer, (b as OfficialTensor).data.byteOffset, (b as OfficialTensor).data.byteLength).equals(Buffer.from((a as OfficialTensor).data.buffer, (a as OfficialTensor).data.byteOffset, (a as OfficialTensor).data.byteLength)), k).toBe(true);
    }
    await expect(withFileSource(path, (s) => importOfficial(s, tiny, { rejectUnknown: true }))).rejects.toThrow('official checkpoint: 1 unknown key(s): bogus.weight');
  });

  it('keeps PyTorch semantics: a Linear computes x·Wᵀ + b, q/k/v are in_proj thirds, the patch matrix is the conv', async () => {
    const sd = syntheticOfficial(tiny);
    const { params } = await importOfficial(memorySource(sd), tiny);
    const D = tiny.hiddenSize;
    const x = values(2 * D * 2, 99); // 2 rows of the ITM input (2·D wide)
    // PyTorch: y[r, o] = Σ_i x[r, i] · W[o, i] + b[o], W stored [out, in].
    const W = sd.get('itm_head.fc.weight')?.data as Float32Array;
    const b = sd.get('itm_head.fc.bias')?.data as Float32Array;
    const Wo = params.get('itm_head.fc.weight') as Float32Array; // ours [in, out]
    for (let r = 0; r < 2; r++) {
      for (let o = 0; o < 2; o++) {
        let torch = b[o] as number;
        let ours = b[o] as number;
        for (let i = 0; i < 2 * D; i++) {
          torch += (x[r * 2 * D + i] as number) * (W[o * 2 * D + i] as number);
          ours += (x[r * 2 * D + i] as number) * (Wo[i * 2 + o] as number);
        }
        expect(ours).toBeCloseTo(torch, 5);
      }
    }
    // nn.MultiheadAttention: k = x · in_proj_weight[D:2D]ᵀ + in_proj_bias[D:2D].
    const blk = 'vision_encoder.visual.transformer.resblocks.1.attn';
    const inW = sd.get(`${blk}.in_proj_weight`)?.data as Float32Array;
    const inB = sd.get(`${blk}.in_proj_bias`)?.data as Float32Array;
    const kW = params.get(`${blk}.k_proj.weight`) as Float32Array;
    const kB = params.get(`${blk}.k_proj.bias`) as Float32Array;
    const xv = values(D, 7);
    for (let o = 0; o < D; o++) {
      let torch = inB[D + o] as number;
      let ours = kB[o] as number;
      for (let i = 0; i < D; i++) {
        torch += (xv[i] as number) * (inW[(D + o) * D + i] as number);
        ours += (xv[i] as number) * (kW[i * D + o] as number);
      }
      expect(ours).toBeCloseTo(torch, 5);
    }
    // Conv2d(3, D, P, stride P, bias=False) on an image equals the model's patches (c, ky, kx) · patch matrix.
    const P = tiny.patchSize;
    const S = tiny.imageSize;
    const g = S / P;
    const img = values(3 * S * S, 5);
    const conv = sd.get('vision_encoder.visual.conv1.weight')?.data as Float32Array; // [D, 3, P, P]
    const patches = patchesForEmbedding(img, 1, S, P); // [g², 3PP]
    const pe = params.get('vision_encoder.visual.patch_embed.weight') as Float32Array; // [3PP, D]
    for (const [gy, gx, d] of [[0, 0, 0], [1, 2, 5], [g - 1, g - 1, D - 1]] as const) {
      let torch = 0;
      for (let ch = 0; ch < 3; ch++) {
        for (let ky = 0; ky < P; ky++) {
          for (let kx = 0; kx < P; kx++) torch += (conv[((d * 3 + ch) * P + ky) * P + kx] as number) * (img[ch * S * S + (gy * P + ky) * S + gx * P + kx] as number);
        }
      }
      let ours = 0;
      const row = gy * g + gx;
      for (let k = 0; k < 3 * P * P; k++) ours += (patches[row * 3 * P * P + k] as number) * (pe[k * D + d] as number);
      expect(ours).toBeCloseTo(torch, 4);
    }
  });

  it('resizes positions when the checkpoint grid differs, keeping the class row; errors name key, shape and expectation', async () => {
    const sd = syntheticOfficial(tiny, 3); // a 3×3 checkpoint grid for the 4×4 tiny model
    const { params, report } = await importOfficial(memorySource(sd), tiny);
    const pos = params.get('vision_encoder.visual.positional_embedding') as Float32Array;
    expect(pos.length).toBe(17 * tiny.hiddenSize);
    expect(Array.from(pos.subarray(0, tiny.hiddenSize))).toEqual(Array.from((sd.get('vision_encoder.visual.positional_embedding')?.data as Float32Array).subarray(0, tiny.hiddenSize)));
    expect(report.adapted).toEqual([{ name: 'vision_encoder.visual.positional_embedding', how: 'bicubic resize of the 3×3 grid to 4×4' }]);

    const bad = syntheticOfficial(tiny);
    bad.set('itm_head.fc.weight', { shape: [2, 10], data: new Float32Array(20) });
    await expect(importOfficial(memorySource(bad), tiny)).rejects.toThrow('official checkpoint itm_head.fc.weight: shape [2, 10]; expected [2, 64] for itm_head.fc.weight (configuration mismatch?)');
    const missing = syntheticOfficial(tiny);
    missing.delete('mim_head.decoder.resblocks.0.attn.in_proj_bias');
    await expect(importOfficial(memorySource(missing), tiny)).rejects.toThrow(
      'official checkpoint: 3 tensor(s) missing: mim_head.decoder.resblocks.0.attn.in_proj_bias (for mim_head.decoder.resblocks.0.attn.q_proj.bias)',
    );
    const partial = await importOfficial(memorySource(missing), tiny, { allowMissing: true });
    expect(partial.report.missing.map((m) => m.name)).toEqual(['q', 'k', 'v'].map((x) => `mim_head.decoder.resblocks.0.attn.${x}_proj.bias`));
    expect(() => exportOfficial(partial.params, tiny)).toThrow('export: parameter mim_head.decoder.resblocks.0.attn.q_proj.bias is missing');
  });
});

describe('initialising the encoders from CLIP and RoBERTa', () => {
  it('CLIP ViT (visual.* names, 224-px grid): vision encoder only, 12th block and text tower ignored, positions resized', async () => {
    const c = tiny;
    const D = c.hiddenSize;
    const clip = new Map<string, OfficialTensor>();
    let seed = 100;
    for (const m of officialMapping(c)) {
      if (!m.official.startsWith('vision_encoder.visual.') || clip.has(m.official.slice(15))) continue;
      const shape = m.transform.kind === 'positions' ? [10, D] : m.officialShape; // a 3×3 grid
      clip.set(m.official.slice('vision_encoder.'.length), { shape, data: values(size(shape), seed++) });
    }
    const extra: [string, number[]][] = [
      [`visual.transformer.resblocks.${c.visionLayers}.mlp.c_fc.weight`, [4 * D, D]],
      ['visual.proj', [D, 16]],
      ['transformer.resblocks.0.ln_1.weight', [16]],
      ['token_embedding.weight', [20, 16]],
      ['positional_embedding', [7, 16]],
      ['ln_final.weight', [16]],
      ['text_projection', [16, 16]],
      ['logit_scale', []],
    ];
    for (const [k, shape] of extra) clip.set(k, { shape, data: values(size(shape), seed++) });
    const { params, report } = await initFromClip(memorySource(clip), c);
    const visionSpecs = parameterSpecs(c).filter((s) => s.name.startsWith('vision_encoder.'));
    expect([...params.keys()]).toEqual(visionSpecs.map((s) => s.name));
    expect(report.unknown).toEqual([]);
    expect(report.ignored.map((x) => x.key).sort()).toEqual(extra.map(([k]) => k).sort());
    expect(report.adapted.map((a) => a.how)).toEqual(['bicubic resize of the 3×3 grid to 4×4']);
    const q = params.get('vision_encoder.visual.transformer.resblocks.0.attn.q_proj.bias') as Float32Array;
    expect(Array.from(q)).toEqual(Array.from((clip.get('visual.transformer.resblocks.0.attn.in_proj_bias')?.data as Float32Array).subarray(0, D)));
  });

  it.each(['roberta.', ''])('RoBERTa (prefix "%s"): text encoder only, first maxTextLength+2 positions, pooler and LM head ignored', async (prefix) => {
    const c = tiny;
    const D = c.hiddenSize;
    const rob = new Map<string, OfficialTensor>();
    let seed = 200;
    for (const m of officialMapping(c)) {
      if (!m.official.startsWith('language_encoder.')) continue;
      const shape = m.transform.kind === 'rows' ? [40, D] : m.officialShape; // RoBERTa-base has 514 rows
      rob.set(prefix + m.official.slice('language_encoder.'.length), { shape, data: values(size(shape), seed++) });
    }
    const extra: [string, number[]][] = [
      [`${prefix}pooler.dense.weight`, [D, D]],
      [`${prefix}encoder.layer.${c.textLayers}.output.dense.bias`, [D]],
      ...(prefix ? ([['lm_head.dense.weight', [D, D]], ['lm_head.bias', [c.vocabSize]]] as [string, number[]][]) : []),
    ];
    for (const [k, shape] of extra) rob.set(k, { shape, data: values(size(shape), seed++) });
    const { params, report } = await initFromRoberta(memorySource(rob), c);
    expect([...params.keys()]).toEqual(parameterSpecs(c).filter((s) => s.name.startsWith('language_encoder.')).map((s) => s.name));
    expect(report.unknown).toEqual([]);
    expect(report.ignored.map((x) => x.key).sort()).toEqual(extra.map(([k]) => k).sort());
    const pos = params.get('language_encoder.embeddings.position_embeddings.weight') as Float32Array;
    expect(pos.length).toBe((c.maxTextLength + 2) * D);
    expect(Array.from(pos)).toEqual(Array.from((rob.get(`${prefix}embeddings.position_embeddings.weight`)?.data as Float32Array).subarray(0, pos.length)));
    const wrongVocab = new Map(rob);
    wrongVocab.set(`${prefix}embeddings.word_embeddings.weight`, { shape: [50265, D], data: new Float32Array(0) });
    await expect(initFromRoberta(memorySource(wrongVocab), c)).rejects.toThrow(`RoBERTa checkpoint ${prefix}embeddings.word_embeddings.weight: shape [50265, 32]; expected [1000, 32]`);
  });
});

describe('bicubic resampling (PyTorch F.interpolate, align_corners=False, a = -0.75)', () => {
  it('is the identity at the same size, preserves constants, and its taps sum to one', () => {
    const src = values(5 * 5 * 3, 11);
    expect(Array.from(resizeBicubicHWC(src, 5, 5, 3, 5, 5))).toEqual(Array.from(src));
    const ones = new Float32Array(4 * 4 * 2).fill(0.25);
    for (const v of resizeBicubicHWC(ones, 4, 4, 2, 7, 3)) expect(v).toBeCloseTo(0.25, 6);
    for (const t of [0, 0.1, 0.5, 0.9]) expect(cubicWeights(t).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(cubicWeights(0.5)).toEqual([-0.09375, 0.59375, 0.59375, -0.09375]);
  });

  it('matches hand-computed values: a 2×2 → 4×4 upsample of a ramp', () => {
    // One row [0, 1] upsampled to 4: sources −0.25, 0.25, 0.75, 1.25 with border clamping.
    const out = resizeBicubicHWC(new Float32Array([0, 1]), 1, 2, 1, 1, 4);
    const w75 = cubicWeights(0.75); // source −0.25: floor −1, taps at −2,−1,0,1 → clamped 0,0,0,1
    const w25 = cubicWeights(0.25); // source 0.25: floor 0, taps at −1,0,1,2 → 0,0,1,1
    expect(out[0]).toBeCloseTo(w75[3], 6);
    expect(out[1]).toBeCloseTo(w25[2] + w25[3], 6);
    expect(out[2]).toBeCloseTo(1 - (out[1] as number), 6);
    expect(out[3]).toBeCloseTo(1 - (out[0] as number), 6);
  });

  const torchPython = findPython('torch');
  if (!torchPython) console.warn('skipping the PyTorch bicubic comparison: no python3 with torch (apt-get install python3-torch)');
  it.skipIf(!torchPython)('equals PyTorch on CLIP-style 14×14 → 18×18 position grids', async () => {
    const D = 6;
    const pos = values((14 * 14 + 1) * D, 3);
    const inPath = join(dir, 'pos.json');
    await writeFile(inPath, JSON.stringify(Array.from(pos)));
    const script = `
import sys, json, torch, torch.nn.functional as F
D = ${D}
pos = torch.tensor(json.load(open(sys.argv[1])), dtype=torch.float32).reshape(1, 197, D)
grid = pos[0, 1:, :].reshape(14, 14, D).permute(2, 0, 1).unsqueeze(0)
grid = F.interpolate(grid, size=(18, 18), mode='bicubic').squeeze(0).permute(1, 2, 0).reshape(-1, D)
print(json.dumps(torch.cat([pos[0, :1], grid], 0).flatten().tolist()))
`;
    const theirs = JSON.parse(execFileSync(torchPython as string, ['-c', script, inPath], { encoding: 'utf8' })) as number[];
    const ours = resizePositionEmbedding(pos, D, 18);
    expect(ours.length).toBe(theirs.length);
    let worst = 0;
    for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs((ours[i] as number) - (theirs[i] as number)));
    console.info(`bicubic vs PyTorch: largest difference ${worst}`);
    expect(worst).toBeLessThan(5e-6); // float32 rounding in PyTorch; another kernel would differ by ~1e-2
  });
});

describe('file sources', () => {
  it('widen F16 official weights to float32 on import', async () => {
    const { float32ToFloat16Bits } = await import('../safetensors/index.js');
    const sd = syntheticOfficial(tiny);
    const path = join(dir, 'half.safetensors');
    await writeSafetensors(
      path,
      [...sd].map(([k, t]) => [k, { dtype: 'F16', shape: t.shape, data: Uint16Array.from(t.data, (v) => float32ToFloat16Bits(v)) }] as [string, TensorInput]),
    );
    const file = await SafetensorsFile.open(path);
    try {
      const { params } = await importOfficial(fileSource(file), tiny);
      const ours = params.get('mlm_head.bias') as Float32Array;
      const orig = sd.get('mlm_head.bias')?.data as Float32Array;
      for (let i = 0; i < 10; i++) expect(ours[i]).toBeCloseTo(orig[i] as number, 3);
    } finally {
      await file.close();
    }
  });
});
