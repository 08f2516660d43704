import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { WORKSPACE } from './helpers/k8s.js';

/* No Docker engine runs here: these checks read the Dockerfiles as the builder would (instructions after line
   continuations) and hold them to what the deployment relies on. */

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

function instructions(file: string): Instruction[] {
  const lines = readFileSync(join(WORKSPACE, file), 'utf8').split('\n');
  const out: Instruction[] = [];
  let current = '';
  let stage = -1;
  for (const raw of lines) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && current === '')) continue;
    current += (current ? ' ' : '') + line.replace(/\\$/, '').trim();
    if (line.endsWith('\\')) continue;
    const m = /^([A-Z]+)\s+(.*)$/.exec(current);
    if (!m) throw new Error(`${file}: cannot read "${current}"`);
    if (m[1] === 'FROM') stage++;
    out.push({ op: m[1] as string, args: m[2] as string, stage });
    current = '';
  }
  return out;
}

function argDefault(ins: Instruction[], name: string): string | undefined {
  return ins.find((i) => i.op === 'ARG' && i.args.startsWith(`${name}=`))?.args.slice(name.length + 1);
}

/** The workspace folders package.json declares (apps/*, libs/*, tools), as they are on disk. */
function workspaces(): string[] {
  const pkg = JSON.parse(readFileSync(join(WORKSPACE, 'package.json'), 'utf8')) as { workspaces: string[] };
  return pkg.workspaces.flatMap((w) =>
    w.endsWith('/*')
      ? readdirSync(join(WORKSPACE, w.slice(0, -2)), { withFileTypes: true })
          .filter((d) => d.isDirectory() && existsSync(join(WORKSPACE, w.slice(0, -2), d.name, 'package.json')))
          .map((d) => `${w.slice(0, -2)}/${d.name}`)
      : [w],
  );
}

/** A .dockerignore pattern as the builder matches it (Go filepath.Match plus `**`), anchored at the context root. */
function ignoreRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i] as string;
    if (ch === '*' && pattern[i + 1] === '*') {
      re += '.*';
      i++;
      if (pattern[i + 1] === '/') i++;
    } else if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  // A matched folder excludes everything below it.
  return new RegExp(`^${re}(/.*)?$`);
}

function ignored(path: string): boolean {
  const patterns = readFileSync(join(WORKSPACE, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  let out = false;
  for (const p of patterns) {
    const negate = p.startsWith('!');
    if (ignoreRegex(negate ? p.slice(1) : p).test(path)) out = !negate;
  }
  return out;
}

/** Each image, the native tfjs backend its build rebuilds (none for WebGPU: Dawn ships prebuilt) and what it drops after the prune. */
const IMAGES: readonly { file: string; backend: string | null; other: string }[] = [
  { file: 'docker/Dockerfile', backend: '@tensorflow/tfjs-node', other: '@tensorflow/tfjs-node-gpu' },
  { file: 'docker/Dockerfile.gpu', backend: '@tensorflow/tfjs-node-gpu', other: '@tensorflow/tfjs-node' },
  { file: 'docker/Dockerfile.webgpu', backend: null, other: '@tensorflow/tfjs-node-gpu' },
];

describe('Dockerfiles', () => {
  for (const image of IMAGES) {
    describe(image.file, () => {
      const ins = instructions(image.file);
      const stages = Math.max(...ins.map((i) => i.stage)) + 1;
      const last = ins.filter((i) => i.stage === stages - 1);

      it('is multi-stage and runs as a non-root user through tini and the m3ae CLI', () => {
        expect(stages).toBeGreaterThanOrEqual(2);
        const user = last.filter((i) => i.op === 'USER').at(-1)?.args;
        expect(user).toBeDefined();
        expect(user).not.toMatch(/^(root|0)(:|$)/);
        const entrypoint = JSON.parse(last.find((i) => i.op === 'ENTRYPOINT')?.args ?? 'null') as string[];
        expect(entrypoint).toEqual(['/usr/bin/tini', '--', 'node', '/app/tools/bin/m3ae.js']);
        expect(existsSync(join(WORKSPACE, 'tools/bin/m3ae.js'))).toBe(true);
        expect(last.some((i) => i.op === 'RUN' && /apt-get install .*\btini\b/.test(i.args))).toBe(true);
        // The build tools and devDependencies stay in the build stage.
        expect(last.some((i) => i.op === 'RUN' && /npm (ci|install)/.test(i.args))).toBe(false);
      });

      it('copies every workspace manifest before npm ci, then builds from the sources and drops devDependencies', () => {
        const copies = ins.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'));
        const ciIndex = ins.findIndex((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
        expect(ciIndex).toBeGreaterThan(0);
        const before = ins.slice(0, ciIndex).filter((i) => copies.includes(i)).map((i) => i.args);
        for (const ws of workspaces()) expect(before, `${image.file} must COPY ${ws}/package.json`).toContain(`${ws}/package.json ${ws}/`);
        expect(before).toContain('package.json package-lock.json ./');
        expect(ins[ciIndex]?.args).toMatch(/--ignore-scripts/);
        const rest = ins.slice(ciIndex).map((i) => `${i.op} ${i.args}`);
        const rebuild = image.backend ? rest.findIndex((l) => l.includes(`npm rebuild ${image.backend}`)) : 0;
        const copyAll = rest.indexOf('COPY . .');
        const build = rest.findIndex((l) => /npm run build/.test(l));
        if (image.backend) expect(rebuild, `rebuilds ${image.backend} (its install script fetches libtensorflow)`).toBeGreaterThan(0);
        else expect(rest.some((l) => l.includes('npm rebuild')), 'rebuilds nothing: Dawn is prebuilt in webgpu').toBe(false);
        expect(copyAll).toBeGreaterThan(rebuild);
        expect(build).toBeGreaterThan(copyAll);
        expect(rest[build]).toMatch(/npm prune --omit=dev --ignore-scripts/);
        // The other native backend goes after the prune, which would otherwise restore it.
        expect(rest[build]).toMatch(new RegExp(`rm -rf [^&]* ?node_modules/${image.other}$`));
      });

      it('starts from the required base images', () => {
        expect(argDefault(ins, 'NODE_IMAGE')).toBe('node:20-bookworm-slim');
        if (image.file.endsWith('.webgpu')) {
          const env = last.filter((i) => i.op === 'ENV').map((i) => i.args).join(' ');
          expect(env).toMatch(/NVIDIA_DRIVER_CAPABILITIES=[^ ]*graphics/);
          expect(last.some((i) => i.op === 'RUN' && /apt-get install .*\blibvulkan1\b/.test(i.args))).toBe(true);
        }
        if (image.file.endsWith('.gpu')) {
          expect(argDefault(ins, 'CUDA_IMAGE')).toBe('nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04');
          const env = last.filter((i) => i.op === 'ENV').map((i) => i.args).join(' ');
          expect(env).toMatch(/CUDA_CACHE_PATH=\/var\/cache\/cuda/);
          expect(last.some((i) => i.op === 'VOLUME' && i.args.includes('/var/cache/cuda'))).toBe(true);
        }
      });
    });
  }

  it('.dockerignore keeps build products and secrets out, and everything the build needs in', () => {
    for (const p of ['node_modules', 'libs/model/node_modules/x', 'libs/model/dist/index.js', '.git/HEAD', '.nx/cache/x', 'apps/worker/out-tsc/a.js', 'libs/data/dist/tsconfig.lib.tsbuildinfo']) {
      expect(ignored(p), p).toBe(true);
    }
    const needed = ['package.json', 'package-lock.json', 'nx.json', 'tsconfig.base.json', 'tsconfig.json', 'tools/bin/m3ae.js', 'libs/model/src/index.ts'];
    for (const ws of workspaces()) needed.push(`${ws}/package.json`, `${ws}/tsconfig.lib.json`);
    for (const p of needed) expect(ignored(p), p).toBe(false);
  });
});
