import type { Command } from 'commander';
import { BACKEND_HELP, positiveInt } from '../flags.js';
import { benchArea, benchAreaNames } from '../bench/areas.js';
import { formatReport, writeReport, type BenchReport } from '../bench/report.js';
import '../bench/backend.js';
import '../bench/data.js';
import '../bench/model.js';
import '../bench/scaling.js';
import '../bench/training.js';
import '../bench/learning.js';
import { SIGNAL_EXIT_CODES } from '../signals.js';

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('run a benchmark area; prints a table and (with --json) writes the figures as JSON')
    .argument('<area>', 'what to measure')
    .option('--json <file>', 'also write the report as JSON to this file')
    .option('--backend <name>', BACKEND_HELP)
    .option('--quick', 'a shorter run (fewer sizes and repetitions)', false)
    .option('--preset <name>', 'model preset, for areas that train a model')
    .option('--size <key=value,...>', 'area-specific sizes (learning: phantom-steps=600,pretrain-steps=150,ft-epochs=3,...)')
    .option('--batch <n>', 'micro-batch of one step (model)', positiveInt('--batch'))
    .option('--pytorch <python>', "model: the project's PyTorch reference on the same configuration and batch, run with this python (auto: python3 with torch if any; off)", 'auto')
    .addHelpText('after', () => `\nAreas: ${benchAreaNames().join(', ')}`)
    .action(async (area: string, opts: { json?: string; backend?: string; quick: boolean; preset?: string; size?: string; batch?: number; pytorch: string }) => {
      const run = benchArea(area);
      stopAtFirstSignal(area);
      const extra = { preset: opts.preset, size: opts.size, batch: opts.batch === undefined ? undefined : String(opts.batch), pytorch: opts.pytorch };
      const body = await run.run({ backend: opts.backend, quick: opts.quick, extra });
      const report: BenchReport = { ...body, command: `m3ae ${process.argv.slice(2).join(' ')}`, date: new Date().toISOString() };
      process.stdout.write(formatReport(report) + '\n');
      if (opts.json) writeReport(opts.json, report);
    });
}

/**
 * A bench has nothing to save: the first SIGINT, SIGTERM or SIGHUP ends it at once, with one line and the signal's
 * exit code (a local run inside it would otherwise stop gracefully and the bench go on to its next run). Its private
 * Redis servers and worker processes are killed by their own exit hooks.
 */
function stopAtFirstSignal(area: string): void {
  for (const [signal, code] of Object.entries(SIGNAL_EXIT_CODES)) {
    process.once(signal, () => {
      process.stderr.write(`m3ae bench ${area}: stopped by ${signal}; no report written\n`);
      process.exit(code);
    });
  }
}
