import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig, presetConfig, PRESETS, resolveConfig, trainingTextLength } from './config.js';
import { syntheticBatch } from './synthetic.js';
import { buildManifest, hasWeightDecay, lrGroup, modelManifest, parameterSpecs, sincos2d } from './params.js';

describe('config validation', () => {
  it('accepts every preset', () => {
    for (const name of Object.keys(PRESETS)) expect(() => presetConfig(name)).not.toThrow();
  });

  it('names the field, the value and what was expected', () => {
    const tiny = presetConfig('tiny');
    expect(() => parseConfig({ ...tiny, hiddenSize: 33 })).toThrow(/config\.hiddenSize: got 33; expected a multiple of numHeads \(2\)/);
    expect(() => parseConfig({ ...tiny, dropout: 1.5 })).toThrow(/config\.dropout: got 1\.5;.*<1/);
    expect(() => parseConfig({ ...tiny, imageSize: 30 })).toThrow(/config\.imageSize: got 30; expected a multiple of patchSize \(8\)/);
    expect(() => parseConfig({ ...tiny, mimLayer: 5 })).toThrow(/config\.mimLayer: got 5; expected -1 or an integer in \[0, fusionLayers=2\]/);
    expect(() => parseConfig({ ...tiny, padTokenId: 7 })).toThrow(/config\.padTokenId: got 7; expected 0 or 1/);
    expect(() => parseConfig({ ...tiny, vocabSize: 'big' })).toThrow(/config\.vocabSize: got "big"; expected number/);
    expect(() => parseConfig({ ...tiny, decoderHiddenSize: 18 })).toThrow(/config\.decoderHiddenSize: got 18; expected a multiple of 4/);
    expect(() => parseConfig({ ...tiny, objectives: { ...tiny.objectives, itm: { enabled: true, weight: -1 } } })).toThrow(/config\.objectives\.itm\.weight: got -1/);
    expect(() => parseConfig({ ...tiny, hiddenSizes: 32 })).toThrow(/unknown field\(s\) hiddenSizes/);
    const { numHeads: _omitted, ...missing } = tiny;
    expect(() => parseConfig(missing)).toThrow(/config\.numHeads: got nothing; expected number/);
    expect(() => parseConfig({ ...tiny, hiddenSize: 33 })).toThrow(ConfigError);
  });

  it('reads a preset with overrides, as a config file may say', () => {
    const c = resolveConfig({ preset: 'tiny', vocabSize: 500, objectives: { itm: { enabled: false, weight: 1 } } });
    expect(c.vocabSize).toBe(500);
    expect(c.objectives.itm.enabled).toBe(false);
    expect(c.objectives.mlm.enabled).toBe(true);
    expect(() => resolveConfig({ preset: 'huge' })).toThrow(/config\.preset: got "huge"; expected one of tiny, small, base/);
    expect(() => presetConfig('tiny', { numHeads: 3 })).toThrow(/preset tiny\.hiddenSize: got 32; expected a multiple of numHeads \(3\)/);
  });
});

describe('manifest', () => {
  it('has a stable hash that changes with any name or shape', () => {
    const tiny = presetConfig('tiny');
    const a = modelManifest(tiny);
    expect(modelManifest(structuredClone(tiny)).hash).toBe(a.hash);
    // Pinned: a different value means checkpoints and running workers of the old layout stop matching.
    expect(a.hash).toBe('b4735f846ce519257560ced9a5458ff3721eb2eabdad0725365ba713ef437b74');
    expect(modelManifest({ ...tiny, vocabSize: 1001 }).hash).not.toBe(a.hash);
    expect(modelManifest({ ...tiny, mimLayer: 0, dropout: 0.3 }).hash).toBe(a.hash); // not part of the layout
    const specs = parameterSpecs(tiny);
    const renamed = specs.map((s, i) => (i === 3 ? { ...s, name: s.name + 'x' } : s));
    expect(buildManifest(renamed).hash).not.toBe(a.hash);
  });

  it('lays trainable parameters out contiguously and leaves the fixed sin-cos table out', () => {
    const m = modelManifest(presetConfig('tiny'));
    let next = 0;
    for (const e of m.entries) {
      if (!e.trainable) {
        expect(e.offset).toBeNull();
        continue;
      }
      expect(e.offset).toBe(next);
      next += e.shape.reduce((x, y) => x * y, 1);
    }
    expect(next).toBe(m.size);
    expect(m.entries.filter((e) => !e.trainable).map((e) => e.name)).toEqual(['mim_head.decoder_pos_embed']);
    expect(new Set(m.entries.map((e) => e.name)).size).toBe(m.entries.length);
  });

  it('uses the official names with the documented differences', () => {
    const names = new Set(modelManifest(presetConfig('tiny')).entries.map((e) => e.name));
    for (const n of [
      'vision_encoder.visual.patch_embed.weight',
      'vision_encoder.visual.transformer.resblocks.0.attn.q_proj.weight',
      'vision_encoder.visual.ln_post.bias',
      'language_encoder.embeddings.position_embeddings.weight',
      'language_encoder.encoder.layer.0.attention.self.query.weight',
      'multi_modal_vision_layers.1.crossattention.self.key.bias',
      'multi_modal_language_layers.0.output.LayerNorm.weight',
      'modality_type_embeddings.weight',
      'mim_head.decoder.resblocks.0.attn.v_proj.bias',
      'mlm_head.decoder.weight',
      'itm_head.fc.weight',
    ]) {
      expect(names.has(n), n).toBe(true);
    }
    expect([...names].some((n) => n.includes('in_proj') || n.includes('conv1') || n.includes('pooler') && n.startsWith('language_encoder'))).toBe(false);
  });
});

describe('parameter counts of base', () => {
  /*
   * The official pre-training model (zhjohnchan/M3AE, vit=ViT-B/16 at 288 px, tokenizer roberta-base), counted
   * by hand from its modules; every Linear is in·out + out.
   *   Linear(768,768) = 590,592; Linear(768,3072) = 2,362,368; Linear(3072,768) = 2,360,064; LayerNorm(768) = 1,536.
   *   A 768-wide block (CLIP resblock, RoBERTa layer): 4·590,592 + 2,362,368 + 2,360,064 + 2·1,536 = 7,087,872.
   * vision_encoder.visual: conv1 768·3·16·16 = 589,824; class_embedding 768; positional_embedding (18·18+1)·768
   *   = 249,600; ln_pre, ln_post 2·1,536; 11 resblocks (Transformer(…, 12) builds 11) = 77,966,592
   *   → 78,809,856 (visual.proj and CLIP's text tower are never used and not counted).
   * language_encoder (RoBERTa-base without its unused pooler): word 50,265·768 = 38,603,520; position 514·768 =
   *   394,752; token type 768; LayerNorm 1,536; 12 layers = 85,054,464 → 124,055,040.
   * fusion: 2 projections 1,181,184; modality_type_embeddings 2·768 = 1,536; a BertCrossLayer = 2 attention blocks
   *   (4·590,592 + 1,536 each = 2,363,904) + intermediate 2,362,368 + output 2,360,064 + 1,536 = 9,451,776, ×12 =
   *   113,421,312; two poolers 1,181,184 → 115,785,216.
   * mlm_head: bias 50,265 + transform.dense 590,592 + transform.LayerNorm 1,536 + decoder 768·50,265 = 38,603,520
   *   → 39,245,913.
   * mim_head: mask_token 384; decoder_embed 768·384 + 384 = 295,296; 4 resblocks of width 384:
   *   4·(384·384 + 384) + 2·768 + (384·1,536 + 1,536) + (1,536·384 + 384) = 1,774,464, ×4 = 7,097,856;
   *   decoder_norm 768; decoder_pred 384·768 + 768 = 295,680 → 7,689,984 trainable (+ the fixed decoder_pos_embed
   *   325·384 = 124,800).
   * itm_head: 1,536·2 + 2 = 3,074.
   * Total trainable: 365,589,083; with decoder_pos_embed: 365,713,883.
   */
  it('match the official model', () => {
    const m = modelManifest(presetConfig('base'));
    const count = (prefix: string): number =>
      m.entries.filter((e) => e.name.startsWith(prefix) && e.trainable).reduce((s, e) => s + e.shape.reduce((x, y) => x * y, 1), 0);
    expect(count('vision_encoder.')).toBe(78_809_856);
    expect(count('language_encoder.')).toBe(124_055_040);
    expect(count('multi_modal_') + count('modality_type_embeddings')).toBe(115_785_216);
    expect(count('mlm_head.')).toBe(39_245_913);
    expect(count('mim_head.')).toBe(7_689_984);
    expect(count('itm_head.')).toBe(3_074);
    expect(m.size).toBe(365_589_083);
    const all = m.entries.reduce((s, e) => s + e.shape.reduce((x, y) => x * y, 1), 0);
    expect(all).toBe(365_713_883);
  });

  it('pads pre-training text to 64 as the official pre-training, keeping the 514 position rows', () => {
    const base = presetConfig('base');
    expect(trainingTextLength(base)).toBe(64);
    expect(modelManifest(base).entries.find((e) => e.name === 'language_encoder.embeddings.position_embeddings.weight')?.shape).toEqual([514, 768]);
    expect(syntheticBatch(base, 1).textLength).toBe(64);
    // Presets without a textLength pad to their whole capacity (tiny's and small's results are unchanged).
    expect([trainingTextLength(presetConfig('tiny')), trainingTextLength(presetConfig('small'))]).toEqual([16, 64]);
    expect(() => parseConfig({ ...base, textLength: 513 })).toThrow(/textLength.*at most maxTextLength \(512\)/);
  });
});

describe('optimiser grouping (official substring rules)', () => {
  it('decays weights but not biases or LayerNorm/norm weights', () => {
    expect(hasWeightDecay('language_encoder.encoder.layer.0.attention.self.query.weight')).toBe(true);
    expect(hasWeightDecay('language_encoder.embeddings.LayerNorm.weight')).toBe(false);
    expect(hasWeightDecay('vision_encoder.visual.transformer.resblocks.0.attn.q_proj.bias')).toBe(false);
    expect(hasWeightDecay('mim_head.decoder_norm.weight')).toBe(false);
    expect(hasWeightDecay('mlm_head.bias')).toBe(false);
    // CLIP's ln_* match none of the official no-decay substrings, so the official optimiser decays them.
    expect(hasWeightDecay('vision_encoder.visual.ln_pre.weight')).toBe(true);
    expect(hasWeightDecay('vision_encoder.visual.class_embedding')).toBe(true);
  });

  it('puts heads and multi_modal modules in the ×5 groups and the modality-type embedding with the encoders', () => {
    expect(lrGroup('mim_head.mask_token')).toBe('head');
    expect(lrGroup('itm_head.fc.weight')).toBe('head');
    expect(lrGroup('multi_modal_vision_pooler.dense.weight')).toBe('multiModal');
    expect(lrGroup('modality_type_embeddings.weight')).toBe('encoder');
    expect(lrGroup('language_encoder.embeddings.word_embeddings.weight')).toBe('encoder');
  });
});

describe('2-D sin-cos positions', () => {
  it('matches MAE: zero class row, first half encodes x, second half y', () => {
    const dim = 8;
    const t = sincos2d(dim, 3);
    expect(Array.from(t.subarray(0, dim))).toEqual(new Array(dim).fill(0));
    // Patch (y=1, x=2) is row 1 + 1·3 + 2 = 6; omega_0 = 1, omega_1 = 1/100.
    const row = Array.from(t.subarray(6 * dim, 7 * dim));
    const expected = [Math.sin(2), Math.sin(0.02), Math.cos(2), Math.cos(0.02), Math.sin(1), Math.sin(0.01), Math.cos(1), Math.cos(0.01)];
    row.forEach((v, i) => expect(v).toBeCloseTo(expected[i] ?? NaN, 6));
  });
});
