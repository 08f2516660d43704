import { Command, CommanderError } from 'commander';
import { doctor, doctorOk, formatDoctor } from './commands/doctor.js';
import { registerBench } from './commands/bench.js';
import { registerCoordinator } from './commands/coordinator.js';
import { registerTrain } from './commands/train.js';
import { registerWorker } from './commands/worker.js';
import { registerPrepare } from './commands/prepare.js';
import { registerTokenizer } from './commands/tokenizer.js';
import { registerModelForward } from './commands/model-forward.js';
import { registerModelInfo } from './commands/model.js';
import { registerCheckpoint } from './commands/checkpoint.js';
import { registerData } from './commands/data.js';
import { registerFinetune } from './commands/finetune.js';
import { registerEval } from './commands/eval.js';
import { registerReconstruct } from './commands/reconstruct.js';
import { registerFill } from './commands/fill.js';
import { m3aeVersion } from './version.js';
import { BACKEND_HELP } from './flags.js';

/** Builds the `m3ae` program. Each later capability adds its subcommand here. */
export function buildProgram(): Command {
  const program = new Command('m3ae')
    .description('Distributed M3AE medical vision-and-language pre-training (TensorFlow.js, BullMQ, Redis)')
    .version(m3aeVersion(), '-V, --version')
    .showHelpAfterError();

  program
    .command('doctor')
    .description('check this machine: Node, TensorFlow.js backend, Redis (M3AE_REDIS_URL or REDIS_URL, password, CA file), redis-server, memory; exits 1 when a check fails')
    .option('--json', 'print one JSON object instead of text', false)
    .option('--backend <name>', BACKEND_HELP)
    .action(async (opts: { json: boolean; backend?: string }) => {
      const report = await doctor(process.env, opts.backend);
      process.stdout.write((opts.json ? JSON.stringify(report) : formatDoctor(report)) + '\n');
      if (!doctorOk(report)) process.exitCode = 1;
    });

  registerBench(program);
  registerCoordinator(program);
  registerWorker(program);
  registerTrain(program);
  registerPrepare(program);
  registerTokenizer(program);
  registerModelForward(program);
  registerModelInfo(program);
  registerCheckpoint(program);
  registerData(program);
  registerFinetune(program);
  registerEval(program);
  registerReconstruct(program);
  registerFill(program);
  return program;
}

export async function main(argv: readonly string[]): Promise<void> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv as string[]);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
      return;
    }
    throw e;
  }
}
