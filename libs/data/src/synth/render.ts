import { mulberry32 } from '../mulberry32.js';
import { PHANTOM_STREAMS, phantomSeed, type PhantomAttributes, type PhantomModality, type PhantomRegion } from './attributes.js';

/** Tissue classes painted into the label map; each modality maps them to its own grey level. */
const Tissue = { Air: 0, Fat: 1, Soft: 2, Organ: 3, Fluid: 4, Lung: 5, Bone: 6, Brain: 7, Vessel: 8 } as const;
type Tissue = (typeof Tissue)[keyof typeof Tissue];

/**
 * Grey level per tissue and modality. CT: bone bright, lung and air dark. MR (T2-like): fluid and fat bright, bone
 * and vessels (flow voids) dark. X-ray: a projection, so soft tissues are close together and lungs dark. Every
 * tissue a lesion can sit on stays in 40..200 so that a hyper- or hypo- lesion always differs by >= 40 levels.
 */
const GREY: Record<PhantomModality, readonly number[]> = {
  //       Air  Fat  Soft Organ Fluid Lung Bone Brain Vessel
  CT: [0, 70, 118, 138, 92, 45, 235, 112, 190],
  MR: [0, 185, 105, 88, 200, 45, 30, 128, 20],
  'X-ray': [8, 96, 112, 122, 116, 58, 220, 126, 118],
};

interface Ellipse {
  cx: number;
  cy: number;
  rx: number;
  ry: number;
  tissue: Tissue;
}

/** Organs per region in body-relative coordinates (-1..1 across the body's half extents; +u = patient's left). */
const ORGANS: Record<PhantomRegion, readonly Ellipse[]> = {
  head: [
    { cx: 0, cy: 0, rx: 0.97, ry: 0.97, tissue: Tissue.Bone },
    { cx: 0, cy: 0, rx: 0.88, ry: 0.88, tissue: Tissue.Brain },
    { cx: -0.15, cy: -0.05, rx: 0.08, ry: 0.24, tissue: Tissue.Fluid },
    { cx: 0.15, cy: -0.05, rx: 0.08, ry: 0.24, tissue: Tissue.Fluid },
  ],
  chest: [
    { cx: -0.48, cy: -0.05, rx: 0.36, ry: 0.62, tissue: Tissue.Lung },
    { cx: 0.48, cy: -0.05, rx: 0.36, ry: 0.62, tissue: Tissue.Lung },
    { cx: 0.15, cy: 0.15, rx: 0.3, ry: 0.3, tissue: Tissue.Organ },
    { cx: -0.02, cy: -0.12, rx: 0.08, ry: 0.08, tissue: Tissue.Vessel },
  ],
  abdomen: [
    { cx: -0.4, cy: -0.15, rx: 0.42, ry: 0.45, tissue: Tissue.Organ },
    { cx: 0.55, cy: -0.2, rx: 0.18, ry: 0.25, tissue: Tissue.Organ },
    { cx: -0.4, cy: 0.42, rx: 0.14, ry: 0.2, tissue: Tissue.Organ },
    { cx: 0.4, cy: 0.42, rx: 0.14, ry: 0.2, tissue: Tissue.Organ },
    { cx: 0.05, cy: 0.35, rx: 0.07, ry: 0.07, tissue: Tissue.Vessel },
    { cx: 0.2, cy: 0.05, rx: 0.12, ry: 0.1, tissue: Tissue.Fluid },
  ],
  pelvis: [
    { cx: 0, cy: -0.1, rx: 0.3, ry: 0.25, tissue: Tissue.Fluid },
    { cx: -0.62, cy: -0.05, rx: 0.18, ry: 0.45, tissue: Tissue.Bone },
    { cx: 0.62, cy: -0.05, rx: 0.18, ry: 0.45, tissue: Tissue.Bone },
    { cx: -0.55, cy: 0.5, rx: 0.14, ry: 0.14, tissue: Tissue.Bone },
    { cx: 0.55, cy: 0.5, rx: 0.14, ry: 0.14, tissue: Tissue.Bone },
    { cx: 0, cy: 0.5, rx: 0.12, ry: 0.12, tissue: Tissue.Soft },
  ],
};

/** Where the lesion was drawn, in pixels (for tests and for whoever wants masks). */
export interface LesionGeometry {
  cx: number;
  cy: number;
  /** Radius of the equal-area circle. */
  radius: number;
  /** Oval: semi-axes ratio and rotation; irregular: boundary modulation. */
  angle: number;
  /** Grey-level shift applied to the tissue under the lesion (positive: hyper-, negative: hypo-). */
  contrast: number;
  /** Mean grey level of the tissue it covers, before texture. */
  background: number;
}

export interface RenderedPhantom {
  /** size × size grey levels, row-major. */
  pixels: Uint8Array;
  size: number;
  lesion: LesionGeometry;
}

export interface RenderOptions {
  size: number;
  seed: number;
  index: number;
  /** Draw the lesion (false renders the same phantom without it, same noise: tests compare the two). @defaultValue true */
  lesion?: boolean;
}

/** Radius of the lesion as a fraction of the image side, per size class. */
export const LESION_RADIUS: Record<PhantomAttributes['size'], readonly [number, number]> = {
  small: [0.025, 0.035],
  medium: [0.05, 0.065],
  large: [0.085, 0.105],
};

/** The body's placement (normalised −1..1 image coordinates) and its outline test by plane. */
interface Body {
  ox: number;
  oy: number;
  /** Half extents. */
  bx: number;
  by: number;
  crossWise: boolean;
  tall: boolean;
  inBody(u: number, v: number): boolean;
}

/** Pixel centre → normalised coordinate. */
const toUnit = (p: number, S: number): number => ((p + 0.5) / S) * 2 - 1;

/** Body half extents and outline by plane (three draws of `jitter`: scale, then the offset). */
function bodyOutline(a: PhantomAttributes, jitter: (amount: number) => number): Body {
  const crossWise = a.plane === 'axial';
  const tall = a.plane === 'coronal' || a.plane === 'frontal';
  const scale = 1 + jitter(0.05);
  let bx: number, by: number;
  if (a.region === 'head') [bx, by] = crossWise ? [0.7, 0.8] : tall ? [0.62, 0.82] : [0.74, 0.7];
  else [bx, by] = crossWise ? [0.86, 0.6] : tall ? [0.7, 0.88] : [0.5, 0.88];
  bx *= scale;
  by *= scale;
  const ox = jitter(0.03);
  const oy = jitter(0.03);
  const inBody = (u: number, v: number): boolean => {
    const x = (u - ox) / bx;
    const y = (v - oy) / by;
    if (crossWise || (tall && a.region === 'head')) return x * x + y * y <= 1;
    if (tall) {
      const r = 0.35; // rounded-rectangle corner radius, body-relative
      const qx = Math.max(Math.abs(x) - (1 - r), 0);
      const qy = Math.max(Math.abs(y) - (1 - r), 0);
      return qx * qx + qy * qy <= r * r;
    }
    // Sagittal / lateral: ellipse plus an anterior (image-left) bulge.
    const bulge = (x + 0.75) * (x + 0.75) / 0.16 + (y + 0.1) * (y + 0.1) / 0.3 <= 1;
    return x * x + y * y <= 1 || bulge;
  };
  return { ox, oy, bx, by, crossWise, tall, inBody };
}

/** The body's pixels, and their tissue: soft tissue inside a fat rim (head: a thin scalp). */
function bodyTissue(a: PhantomAttributes, S: number, body: Body): { labels: Uint8Array; bodyMask: Uint8Array } {
  const labels = new Uint8Array(S * S);
  const bodyMask = new Uint8Array(S * S);
  for (let py = 0; py < S; py++) {
    const v = toUnit(py, S);
    for (let px = 0; px < S; px++) {
      if (body.inBody(toUnit(px, S), v)) {
        bodyMask[py * S + px] = 1;
        labels[py * S + px] = a.region === 'head' ? Tissue.Soft : Tissue.Fat;
      }
    }
  }
  const rim = a.region === 'head' ? 0.97 : 0.88;
  const { ox, oy } = body;
  for (let py = 0; py < S; py++) {
    const v = toUnit(py, S);
    for (let px = 0; px < S; px++) {
      const u = toUnit(px, S);
      if (bodyMask[py * S + px] && body.inBody(ox + (u - ox) / rim, oy + (v - oy) / rim)) labels[py * S + px] = Tissue.Soft;
    }
  }
  return { labels, bodyMask };
}

/** The region's organs and the spine by plane, each ellipse jittered (three draws each), inside the body only. */
function paintOrgans(a: PhantomAttributes, S: number, body: Body, tissue: { labels: Uint8Array; bodyMask: Uint8Array }, jitter: (amount: number) => number): void {
  const { ox, oy, bx, by } = body;
  const toPx = (u: number): number => ((u + 1) / 2) * S;
  const paint = (e: Ellipse): void => {
    const cx = ox + (e.cx + jitter(0.03)) * bx;
    const cy = oy + (e.cy + jitter(0.03)) * by;
    const k = 1 + jitter(0.07);
    const rx = e.rx * bx * k;
    const ry = e.ry * by * k;
    const x0 = Math.max(0, Math.floor(toPx(cx - rx)));
    const x1 = Math.min(S - 1, Math.ceil(toPx(cx + rx)));
    const y0 = Math.max(0, Math.floor(toPx(cy - ry)));
    const y1 = Math.min(S - 1, Math.ceil(toPx(cy + ry)));
    for (let py = y0; py <= y1; py++) {
      const dv = (toUnit(py, S) - cy) / ry;
      for (let px = x0; px <= x1; px++) {
        const du = (toUnit(px, S) - cx) / rx;
        if (du * du + dv * dv <= 1 && tissue.bodyMask[py * S + px]) tissue.labels[py * S + px] = e.tissue;
      }
    }
  };
  for (const organ of ORGANS[a.region]) paint(organ);
  if (a.region !== 'head') {
    // Spine: behind the body on axial, down the back on sagittal/lateral, down the middle on frontal X-ray.
    if (body.crossWise) paint({ cx: 0, cy: 0.78, rx: 0.11, ry: 0.14, tissue: Tissue.Bone });
    else if (!body.tall) paint({ cx: 0.72, cy: 0, rx: 0.09, ry: 0.95, tissue: Tissue.Bone });
    else if (a.modality === 'X-ray') paint({ cx: 0, cy: 0, rx: 0.06, ry: 0.95, tissue: Tissue.Bone });
  }
}

/**
 * The lesion's centre (in the named quadrant of the body: patient's left = image right), radius of its size class,
 * and outline test by shape, in pixels. Draws, in order: radius, centre x, centre y, angle, two phases.
 */
function placeLesion(a: PhantomAttributes, S: number, body: Body, geo: () => number, jitter: (amount: number) => number): { cx: number; cy: number; radius: number; angle: number; inLesion(dx: number, dy: number): boolean } {
  const toPx = (u: number): number => ((u + 1) / 2) * S;
  const [rMin, rMax] = LESION_RADIUS[a.size];
  const radiusPx = (rMin + (rMax - rMin) * geo()) * S;
  const right = a.location.startsWith('left'); // patient's left → image right
  const upper = a.location.endsWith('upper');
  const lcx = toPx(body.ox + (right ? 1 : -1) * (0.4 + jitter(0.06)) * body.bx);
  const lcy = toPx(body.oy + (upper ? -1 : 1) * (0.36 + jitter(0.06)) * body.by);
  const angle = geo() * Math.PI;
  const phase1 = geo() * 2 * Math.PI;
  const phase2 = geo() * 2 * Math.PI;
  const aspect = 1.5;
  const inLesion = (dx: number, dy: number): boolean => {
    if (a.shape === 'round') return dx * dx + dy * dy <= radiusPx * radiusPx;
    if (a.shape === 'oval') {
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const x = (dx * c + dy * s) / (radiusPx * aspect);
      const y = (-dx * s + dy * c) / (radiusPx / aspect);
      return x * x + y * y <= 1;
    }
    const t = Math.atan2(dy, dx);
    const r = radiusPx * (1 + 0.28 * Math.sin(3 * t + phase1) + 0.16 * Math.sin(5 * t + phase2));
    return dx * dx + dy * dy <= r * r;
  };
  return { cx: lcx, cy: lcy, radius: radiusPx, angle, inLesion };
}

/** The body pixels inside the lesion, and the mean grey level of the tissue they cover. */
function lesionCover(S: number, lesion: ReturnType<typeof placeLesion>, bodyMask: Uint8Array, base: Float32Array): { pixels: number[]; covered: number } {
  const reach = Math.ceil(lesion.radius * 1.5) + 1;
  const pixels: number[] = [];
  let covered = 0;
  for (let py = Math.max(0, Math.floor(lesion.cy - reach)); py <= Math.min(S - 1, Math.ceil(lesion.cy + reach)); py++) {
    for (let px = Math.max(0, Math.floor(lesion.cx - reach)); px <= Math.min(S - 1, Math.ceil(lesion.cx + reach)); px++) {
      const i = py * S + px;
      if (bodyMask[i] && lesion.inLesion(px + 0.5 - lesion.cx, py + 0.5 - lesion.cy)) {
        pixels.push(i);
        covered += base[i];
      }
    }
  }
  return { pixels, covered };
}

/**
 * Draws one phantom: body outline by plane (axial: wide ellipse; coronal/frontal: tall rounded rectangle, tall
 * ellipse for the head; sagittal/lateral: ellipse with an anterior bulge), subcutaneous fat, the region's organs, the spine by plane,
 * one lesion of the attributes' size, density, shape and location, then the modality's texture (CT: fine noise;
 * MR: smooth bias field and noise; X-ray: blur, vignette and noise). Pure JavaScript on a Uint8Array.
 */
export function renderPhantom(a: PhantomAttributes, options: RenderOptions): RenderedPhantom {
  const S = options.size;
  if (!(Number.isInteger(S) && S >= 16 && S <= 4096)) throw new RangeError(`phantom size must be an integer in 16..4096, got ${String(S)}`);
  const geo = mulberry32(phantomSeed(options.seed, options.index, PHANTOM_STREAMS.geometry));
  const jitter = (amount: number) => (geo() * 2 - 1) * amount;

  const body = bodyOutline(a, jitter);
  const tissue = bodyTissue(a, S, body);
  paintOrgans(a, S, body, tissue, jitter);
  const grey = GREY[a.modality];
  const base = new Float32Array(S * S);
  for (let i = 0; i < S * S; i++) base[i] = grey[tissue.labels[i]];

  const lesion = placeLesion(a, S, body, geo, jitter);
  const cover = lesionCover(S, lesion, tissue.bodyMask, base);
  const background = cover.pixels.length ? cover.covered / cover.pixels.length : grey[Tissue.Soft];
  // The lesion shifts the tissue under it by a fixed contrast (clipped to 0..255): it is brighter or darker than
  // its surroundings wherever it lies, even across organ borders.
  const contrast = (a.density === 'hyper' ? 1 : -1) * (70 + 25 * geo());
  if (options.lesion !== false) for (const i of cover.pixels) base[i] = Math.max(0, Math.min(255, base[i] + contrast));
  applyTexture(base, S, a.modality, tissue.bodyMask, mulberry32(phantomSeed(options.seed, options.index, PHANTOM_STREAMS.noise)));
  const pixels = new Uint8Array(S * S);
  for (let i = 0; i < S * S; i++) pixels[i] = base[i] < 0 ? 0 : base[i] > 255 ? 255 : Math.round(base[i]);
  return { pixels, size: S, lesion: { cx: lesion.cx, cy: lesion.cy, radius: lesion.radius, angle: lesion.angle, contrast, background } };
}

/** Standard normal draws by Box–Muller, two per call pair. */
function gaussian(rand: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = rand() || 1e-12;
    const r = Math.sqrt(-2 * Math.log(u));
    const t = 2 * Math.PI * rand();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

function boxBlur(img: Float32Array, S: number): void {
  const tmp = new Float32Array(img.length);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const l = img[y * S + Math.max(0, x - 1)];
      const r = img[y * S + Math.min(S - 1, x + 1)];
      tmp[y * S + x] = (l + img[y * S + x] + r) / 3;
    }
  }
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const u = tmp[Math.max(0, y - 1) * S + x];
      const d = tmp[Math.min(S - 1, y + 1) * S + x];
      img[y * S + x] = (u + tmp[y * S + x] + d) / 3;
    }
  }
}

/**
 * The modality's look. The noise draws happen for every pixel in a fixed order whatever the content, so a phantom
 * rendered with and without its lesion differs only where the lesion is.
 */
function applyTexture(img: Float32Array, S: number, modality: PhantomModality, body: Uint8Array, rand: () => number): void {
  const normal = gaussian(rand);
  if (modality === 'CT') {
    for (let i = 0; i < img.length; i++) img[i] += normal() * (body[i] ? 5 : 1.5);
  } else if (modality === 'MR') {
    const gx = (rand() * 2 - 1) * 0.12;
    const gy = (rand() * 2 - 1) * 0.12;
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const i = y * S + x;
        const bias = 1 + gx * ((2 * x) / S - 1) + gy * ((2 * y) / S - 1);
        // Magnitude images: noise stays positive in the background (Rician-like).
        img[i] = body[i] ? img[i] * bias + normal() * 4 : Math.abs(normal() * 4);
      }
    }
  } else {
    boxBlur(img, S);
    boxBlur(img, S);
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const i = y * S + x;
        const dx = (2 * x) / S - 1;
        const dy = (2 * y) / S - 1;
        img[i] = img[i] * (1 - 0.12 * (dx * dx + dy * dy)) + normal() * 3;
      }
    }
  }
}
