import type { Command } from 'commander';
import { inspectCheckpoint, PRESETS, type CheckpointSummary } from '@m3ae/model';

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** The preset a stored configuration is, if it is one exactly. */
export function presetOf(config: unknown): string | null {
  for (const [name, preset] of Object.entries(PRESETS)) if (deepEqual(preset, config)) return name;
  return null;
}

export type CheckpointInspection = CheckpointSummary & { preset: string | null };

export async function checkpointInspect(path: string, verify: boolean): Promise<CheckpointInspection> {
  const s = await inspectCheckpoint(path, { verify });
  return { ...s, preset: s.metadata['preset'] ?? presetOf(s.config) };
}

/** `m3ae checkpoint inspect DIR|FILE`: one JSON line (step, params_sha256, manifest hash, preset, sizes, metadata). */
export function registerCheckpoint(program: Command): void {
  const group = program.commands.find((c) => c.name() === 'checkpoint') ?? program.command('checkpoint').description('training checkpoints');
  group
    .command('inspect')
    .description('print one JSON line about a checkpoint file, or the latest ckpt-<step>.safetensors of a directory')
    .argument('<path>', 'checkpoint file or directory')
    .option('--verify', 're-hash the stored parameters and report params_sha256_ok', false)
    .action(async (path: string, opts: { verify: boolean }) => {
      process.stdout.write(JSON.stringify(await checkpointInspect(path, opts.verify)) + '\n');
    });
}
