import type { Command } from 'commander';
import { oneOf, positiveInt } from '../flags.js';
import { parseTextSource, trainTokenizer, type TokenizerType } from '@m3ae/data';

/**
 * `m3ae tokenizer train`: a vocabulary from corpus text with Hugging Face tokenizers (Rust). Sources are
 * `kind:PATH` (text, roco, medpix, iu-xray, medicat) or a bare path whose kind is recognised.
 */
export function registerTokenizer(program: Command): void {
  const tok = program.command('tokenizer').description('tokenizer vocabularies');
  tok
    .command('train')
    .description('train a tokenizer.json (RoBERTa-style byte-level BPE, or BERT WordPiece) from corpus text')
    .argument('<sources...>', 'text sources: kind:PATH with kind text|roco|medpix|iu-xray|medicat, or a path (kind recognised)')
    .requiredOption('--vocab-size <n>', 'vocabulary size, special tokens included', positiveInt('--vocab-size'))
    .requiredOption('--output <file>', 'where to write tokenizer.json')
    .option('--type <t>', 'bpe (RoBERTa specials <s> <pad> </s> <unk> <mask>) or wordpiece (BERT specials)', oneOf('--type', ['bpe', 'wordpiece'] as const), 'bpe')
    .action(async (specs: string[], opts: { vocabSize: number; output: string; type: TokenizerType }) => {
      const sources = [];
      for (const s of specs) sources.push(await parseTextSource(s));
      const r = await trainTokenizer({ sources, vocabSize: opts.vocabSize, output: opts.output, type: opts.type });
      if (r.agreement.mismatches > 0) {
        process.exitCode = 1;
        process.stderr.write(`m3ae: ${r.agreement.mismatches} of ${r.agreement.checked} texts got different ids in the Rust library and the JavaScript loader\n`);
      }
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
