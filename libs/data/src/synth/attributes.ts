import { mulberry32 } from '../mulberry32.js';

/** What a phantom image shows. Every field is drawn independently of the others (plane's range depends on modality). */
export interface PhantomAttributes {
  modality: PhantomModality;
  plane: PhantomPlane;
  region: PhantomRegion;
  size: LesionSize;
  density: LesionDensity;
  shape: LesionShape;
  /** Patient side (radiological convention: the patient's left is on the image's right) and image half. */
  location: LesionLocation;
}

export const PHANTOM_MODALITIES = ['CT', 'MR', 'X-ray'] as const;
export const CROSS_SECTION_PLANES = ['axial', 'coronal', 'sagittal'] as const;
export const PROJECTION_PLANES = ['frontal', 'lateral'] as const;
export const PHANTOM_REGIONS = ['head', 'chest', 'abdomen', 'pelvis'] as const;
export const LESION_SIZES = ['small', 'medium', 'large'] as const;
export const LESION_DENSITIES = ['hyper', 'hypo'] as const;
export const LESION_SHAPES = ['round', 'oval', 'irregular'] as const;
export const LESION_LOCATIONS = ['left upper', 'right upper', 'left lower', 'right lower'] as const;

export type PhantomModality = (typeof PHANTOM_MODALITIES)[number];
export type PhantomPlane = (typeof CROSS_SECTION_PLANES)[number] | (typeof PROJECTION_PLANES)[number];
export type PhantomRegion = (typeof PHANTOM_REGIONS)[number];
export type LesionSize = (typeof LESION_SIZES)[number];
export type LesionDensity = (typeof LESION_DENSITIES)[number];
export type LesionShape = (typeof LESION_SHAPES)[number];
export type LesionLocation = (typeof LESION_LOCATIONS)[number];

/** Random streams of one phantom: attribute draws, geometry jitter, pixel noise, caption wording. */
export const PHANTOM_STREAMS = { attributes: 1, geometry: 2, noise: 3, wording: 4 } as const;

/** A 32-bit hash of (seed, index, stream) (murmur3 finaliser over a mixed word): each sample's own seed. */
export function phantomSeed(seed: number, index: number, stream: number): number {
  let h = (seed >>> 0) ^ Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca77);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h ^ (Math.floor(index / 0x1_0000_0000) + 0x27d4eb2f), 0x165667b1);
  return (h ^ (h >>> 15)) >>> 0;
}

export function pick<T>(rand: () => number, values: readonly T[]): T {
  return values[Math.floor(rand() * values.length)];
}

/** The attributes of phantom `index` of the corpus with `seed`. */
export function phantomAttributes(seed: number, index: number): PhantomAttributes {
  const rand = mulberry32(phantomSeed(seed, index, PHANTOM_STREAMS.attributes));
  const modality = pick(rand, PHANTOM_MODALITIES);
  const planeDraw = rand();
  const plane = modality === 'X-ray' ? PROJECTION_PLANES[Math.floor(planeDraw * 2)] : CROSS_SECTION_PLANES[Math.floor(planeDraw * 3)];
  return {
    modality,
    plane,
    region: pick(rand, PHANTOM_REGIONS),
    size: pick(rand, LESION_SIZES),
    density: pick(rand, LESION_DENSITIES),
    shape: pick(rand, LESION_SHAPES),
    location: pick(rand, LESION_LOCATIONS),
  };
}

const MODALITY_WORD: Record<PhantomModality, string> = { CT: 'CT', MR: 'MRI', 'X-ray': 'radiograph' };
const DENSITY_WORD: Record<PhantomModality, Record<LesionDensity, string>> = {
  CT: { hyper: 'hyperdense', hypo: 'hypodense' },
  MR: { hyper: 'hyperintense', hypo: 'hypointense' },
  'X-ray': { hyper: 'radiopaque', hypo: 'radiolucent' },
};
const SIZE_WORD: Record<LesionSize, string> = { small: 'small', medium: 'medium-sized', large: 'large' };

/**
 * The caption: modality, plane, region, lesion size, density (in the modality's own word), shape and location.
 * The template and the noun ("lesion" / "mass") come from a separate stream, so they carry no image information.
 */
export function phantomCaption(a: PhantomAttributes, seed: number, index: number): string {
  const rand = mulberry32(phantomSeed(seed, index, PHANTOM_STREAMS.wording));
  const modality = MODALITY_WORD[a.modality];
  const density = DENSITY_WORD[a.modality][a.density];
  const size = SIZE_WORD[a.size];
  const where = `${a.location} quadrant`;
  const noun = pick(rand, ['lesion', 'mass'] as const);
  const template = Math.floor(rand() * 3);
  if (template === 0) return `${a.plane} ${modality} of the ${a.region} showing a ${size} ${density} ${a.shape} ${noun} in the ${where}`;
  if (template === 1) return `${capitalize(a.plane)} ${modality} of the ${a.region}: a ${size} ${a.shape} ${density} ${noun} in the ${where}.`;
  return `There is a ${size} ${density} ${a.shape} ${noun} in the ${where} on this ${a.plane} ${modality} of the ${a.region}.`;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
