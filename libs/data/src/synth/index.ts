// The small RNG helper (pick; mulberry32 is ../mulberry32.ts) stays internal: only the corpus API and its vocabulary are public.
export {
  CROSS_SECTION_PLANES,
  LESION_DENSITIES,
  LESION_LOCATIONS,
  LESION_SHAPES,
  LESION_SIZES,
  PHANTOM_MODALITIES,
  PHANTOM_REGIONS,
  PROJECTION_PLANES,
  phantomAttributes,
  phantomCaption,
  type LesionDensity,
  type LesionLocation,
  type LesionShape,
  type LesionSize,
  type PhantomAttributes,
  type PhantomModality,
  type PhantomPlane,
  type PhantomRegion,
} from './attributes.js';
export { LESION_RADIUS, renderPhantom, type LesionGeometry, type RenderedPhantom, type RenderOptions } from './render.js';
export * from './corpus.js';
